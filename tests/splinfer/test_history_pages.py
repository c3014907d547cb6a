"""Reading a history back page by page, when a message is longer than one envelope."""

from __future__ import annotations

import json

from runa.splinfer.uploads import history_page


def read_all(messages: list[dict[str, str]], room: int) -> list[dict[str, str]]:
    """What a client rebuilds from the pages (as runa.chat.conversations does)."""
    out: list[dict[str, str]] = []
    more = False
    where: tuple[int, int] | None = (0, 0)
    while where is not None:
        page, where_next = history_page(messages, where[0], where[1], room)
        assert len(json.dumps(page).encode()) <= room and page
        for piece in page:
            if more:
                out[-1]["content"] += piece["content"]
            else:
                out.append({"role": piece["role"], "content": piece["content"]})
            more = piece.get("more", False)
        where = where_next
    return out


def test_long_and_short_messages_come_back_whole() -> None:
    messages = [{"role": "user", "content": "é\"" * 700},
                {"role": "assistant", "content": "short"},
                {"role": "user", "content": "x" * 3000},
                {"role": "assistant", "content": "ok"}]
    assert read_all(messages, 500) == messages
    page, after = history_page(messages, 1, 0, 10_000)
    assert [m["content"] for m in page] == ["short", "x" * 3000, "ok"] and after is None
