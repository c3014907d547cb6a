"""The conversations splinfer keeps, as a person finds them: listed, by id prefix, exported.

splinfer owns the histories and saved states (on the shared stack they are the service's
files, not the person's), so everything here asks it over the bus (docs/protocol.md,
``conversations``, ``history`` with ``start``, ``forget``) through a ``call`` function.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runa.errors import RunaError, UsageError
from runa.protocol.splinfer import request

Call = Callable[[dict[str, Any]], dict[str, Any]]


class ConversationNotFound(RunaError):
    """No conversation has that id or starts with it."""

    exit_code = 66  # EX_NOINPUT, as UnknownConversation


class AmbiguousConversation(UsageError):
    """More than one conversation starts with the prefix; the message lists them."""


@dataclass(frozen=True)
class Listing:
    """splinfer's answer to ``conversations``."""

    conversations: list[dict[str, Any]]
    state_bytes: int
    state_max_bytes: int
    state_max_age_s: float
    omitted: int = 0

    @property
    def total(self) -> int:
        """How many conversations are kept: those listed and those left out."""
        return len(self.conversations) + self.omitted


def listing(call: Call, prefix: str = "") -> Listing:
    answer = call(request("conversations", prefix=prefix))
    return Listing(list(answer.get("conversations", [])), int(answer.get("state_bytes", 0)),
                   int(answer.get("state_max_bytes", 0)),
                   float(answer.get("state_max_age_s", 0)), int(answer.get("omitted", 0)))


def resolve(call: Call, prefix: str) -> str:
    """The full id of the one conversation that is ``prefix`` or starts with it."""
    found = [c["id"] for c in listing(call, prefix).conversations]
    if prefix in found:
        return prefix
    if len(found) == 1:
        return str(found[0])
    if not found:
        raise ConversationNotFound(f"no conversation starts with {prefix!r}; "
                                   "'runa chat --list' shows them")
    shown = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
    raise AmbiguousConversation(f"{prefix!r} starts {len(found)} conversations ({shown}); "
                                "type more of the id")


def full_history(call: Call, conversation: str) -> dict[str, Any]:
    """Every message of ``conversation``, fetched a page (one envelope) at a time."""
    answer = call(request("history", conversation=conversation, start=0))
    messages: list[dict[str, Any]] = []
    while True:
        for message in answer.get("messages", []):
            if messages and messages[-1].pop("more", False):
                messages[-1]["content"] += message.get("content", "")  # a long one goes on
                messages[-1]["more"] = message.get("more", False)
            else:
                messages.append(dict(message))
        if "next" not in answer:
            break
        answer = call(request("history", conversation=conversation, start=answer["next"],
                              offset=answer.get("next_offset", 0)))
    for message in messages:
        message.pop("more", None)
    return {"conversation": answer.get("conversation", conversation),
            "persona": answer.get("persona"), "created": answer.get("created"),
            "updated": answer.get("updated"),
            "messages": [m for m in messages if m.get("role") != "system"]}


def when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def size_text(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" and value < 10 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("not reached")


def as_markdown(history: dict[str, Any]) -> str:
    """A conversation as a person would keep it: both sides, in order."""
    persona = history.get("persona") or "runa"
    lines = [f"# Conversation {history['conversation']}", "",
             f"Persona: {persona}; started {when(history.get('created'))}, last used "
             f"{when(history.get('updated'))}.", ""]
    for message in history["messages"]:
        who = "You" if message.get("role") == "user" else f"Runa ({persona})"
        lines += [f"**{who}:**", "", str(message.get("content", "")).rstrip(), ""]
    return "\n".join(lines)


def render(history: dict[str, Any], form: str) -> str:
    if form == "json":
        return json.dumps(history, ensure_ascii=False, indent=2) + "\n"
    return as_markdown(history)


def table(found: Listing, width: int = 100) -> list[str]:
    """The lines of ``runa chat --list`` / ``/conversations``."""
    if not found.conversations:
        return ["no conversations yet; 'runa chat' starts one"]
    rows = [(c["id"][:8], str(c.get("persona", "")), str(c.get("messages", 0) // 2),
             when(c.get("updated")), size_text(int(c.get("state_bytes", 0))),
             str(c.get("first", ""))) for c in found.conversations]
    head = ("ID", "PERSONA", "TURNS", "LAST USED", "STATE", "FIRST LINE")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    lines = []
    for row in [head, *rows]:
        cells = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5]))
        room = max(20, width - len(cells) - 2)
        first = row[5] if len(row[5]) <= room else row[5][: room - 1] + "…"
        lines.append(f"{cells}  {first}".rstrip())
    if found.omitted:
        lines.append(f"({found.omitted} older ones not shown)")
    lines.append(state_line(found))
    return lines


def state_line(found: Listing) -> str:
    age = (f", and none unused for more than {found.state_max_age_s / 86400:g} days"
           if found.state_max_age_s else "")
    return (f"saved model state: {size_text(found.state_bytes)} (kept up to "
            f"{size_text(found.state_max_bytes)}{age}); histories are always kept")


def kept_line(found: Listing) -> str:
    """What ``runa status`` says splinfer keeps."""
    days = found.state_max_age_s / 86400
    return (f"kept: {found.total} conversations, saved model state "
            f"{size_text(found.state_bytes)} (up to {found.state_max_bytes / 2**20:g} MiB"
            + (f", each dropped after {days:g} days unused)" if days else ")"))

