"""The conversations directory: histories always kept, states capped, a full disk harmless."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from runa.splinfer import statefile
from runa.splinfer.conversations import (
    Basis,
    ConversationError,
    ConversationStore,
    StateSaveError,
    UnknownConversationError,
    check_id,
)
from runa.splinfer.statefile import StateIdentity
from runa.splinfer.storage import atomic_write
from runa.testing import FakeClock

ME = StateIdentity(model="m" * 64, llama=statefile.llama_identity(), kv=statefile.kv_identity(True))
MIB = 1 << 20


def ticking_clock() -> FakeClock:
    """A wall clock a second further on at every read, so each save has its own time."""
    return FakeClock(1_000_001.0, tick=1.0)


def store_at(root: Path, **kw) -> ConversationStore:
    store = ConversationStore(root, max_state_bytes=kw.pop("cap", 64 * MIB), **kw)
    store.open()
    return store


def test_history_round_trip_with_its_basis(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    conv = store.new("chat-1", "tutor")
    conv.messages = [{"role": "user", "content": "hi ü"}, {"role": "assistant", "content": "yo"}]
    conv.window, conv.basis = 0, Basis("m" * 64, "d" * 64, (1, 2, 3))
    store.save(conv)
    again = store.load("chat-1")
    assert (again.persona, again.messages, again.basis, again.window) == (
        "tutor", conv.messages, conv.basis, 0)
    assert store.ids() == ["chat-1"]
    assert oct((tmp_path / "chat-1.json").stat().st_mode & 0o777) == "0o600"


def test_unknown_and_damaged_histories(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    with pytest.raises(UnknownConversationError, match="no conversation 'nope'"):
        store.load("nope")
    with pytest.raises(UnknownConversationError):
        store.forget("nope")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ConversationError, match=r"bad\.json: the history cannot be read"):
        store.load("bad")


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"role": 5, "content": "secret words"},
         "message 2 has role 5; a history holds only user and assistant messages"),
        ({"role": "system", "content": "secret words"},
         "message 2 has role 'system'; a history holds only user and assistant messages"),
        ({"role": "assistant", "content": ["secret words"]},
         "message 2 (assistant) has no text 'content' (list)"),
        ("secret words", "message 2 is str, not an object"),
    ],
)
def test_a_history_row_with_a_bad_role_or_content_is_refused_naming_the_row(
    tmp_path: Path, row: object, problem: str
) -> None:
    """{"role": 5} was read as the role "5" and went into the prompt without a word."""
    import json

    store = store_at(tmp_path)
    conv = store.new("chat-1", "tutor")
    conv.messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    store.save(conv)
    path = tmp_path / "chat-1.json"
    data = json.loads(path.read_text())
    data["messages"][1] = row
    path.write_text(json.dumps(data))

    with pytest.raises(ConversationError) as caught:
        store.load("chat-1")
    assert str(caught.value) == f"{path}: the history is damaged ({problem})"
    assert "secret" not in str(caught.value)  # the error reaches the journal: no message text


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "x" * 65, "spa ce", 7, None, "é"])
def test_conversation_ids_are_checked(bad: object) -> None:
    with pytest.raises(ValueError, match="1 to 64"):
        check_id(bad)


def test_states_are_capped_oldest_first_and_published(tmp_path: Path) -> None:
    published: dict[str, dict | None] = {}
    store = store_at(tmp_path, cap=5 * MIB, clock=ticking_clock(),
                     publish=lambda conv, meta: published.__setitem__(conv, meta))
    blob = memoryview(b"\x07" * (2 * MIB))
    for i, name in enumerate(["old", "mid", "new"]):
        store.save_state(name, ME, [1, 2, 3], blob)
        os.utime(store.state_path(name), (1000 + i, 1000 + i))  # saved in this order
    store.save_state("newest", ME, [1], blob)
    left = sorted(f.conversation for f in store.state_files())
    assert left == ["new", "newest"]  # 2 x 2 MiB fit in 5 MiB: the two oldest went
    assert published["old"] is None and published["mid"] is None
    assert published["newest"]["n_tokens"] == 1
    assert published["newest"]["path"] == str(store.state_path("newest"))


def test_forget_deletes_history_and_state(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    conv = store.new("gone", "default")
    store.save(conv)
    store.save_state("gone", ME, [1], memoryview(b"x" * 100))
    store.forget("gone")
    assert list(tmp_path.iterdir()) == []


def full_disk_writer(path: Path, chunks, *, size=None) -> None:
    """Like a disk that fills up half-way through the file."""
    tmp = path.with_name(f".{path.name}.test.tmp")
    with open(tmp, "wb") as handle:
        handle.write(b"partial")
    tmp.unlink()
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_keeps_the_previous_state(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.save_state("c1", ME, [1, 2], memoryview(b"first" * 100))
    before = store.state_path("c1").read_bytes()
    store.writer = full_disk_writer
    with pytest.raises(StateSaveError, match=r"No space left on device.*previous one is kept"):
        store.save_state("c1", ME, [1, 2, 3], memoryview(b"second" * 100))
    assert store.state_path("c1").read_bytes() == before
    assert store.load_state("c1", ME).tokens == [1, 2]


def test_a_really_full_filesystem_keeps_the_previous_state(tiny_tmpfs: Path) -> None:
    store = store_at(tiny_tmpfs / "conversations")
    store.save_state("c1", ME, [1, 2], memoryview(b"a" * (600 << 10)))
    with pytest.raises(StateSaveError, match="No space left"):
        store.save_state("c1", ME, [1, 2, 3], memoryview(b"b" * (600 << 10)))
    assert store.load_state("c1", ME).tokens == [1, 2]
    assert [p.name for p in (tiny_tmpfs / "conversations").iterdir()] == ["c1.state"]
    store.save(store.new("c1", "default"))  # small files still fit: the history is kept


def test_atomic_write_leaves_the_old_file_when_a_chunk_fails(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def chunks():
        yield b"new "
        raise OSError(errno.EIO, "disk went away")

    with pytest.raises(OSError, match="disk went away"):
        atomic_write(target, chunks())
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["f"]


def test_leftover_temporaries_are_cleared_on_open(tmp_path: Path) -> None:
    (tmp_path / ".c1.state.123.tmp").write_bytes(b"half")
    store_at(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_states_not_used_for_the_age_limit_are_dropped(tmp_path: Path) -> None:
    clock = ticking_clock()
    store = store_at(tmp_path, clock=clock, max_state_age_s=7 * 86400)
    blob = memoryview(b"\x07" * 1000)
    for name in ("stale", "recent"):
        store.save_state(name, ME, [1], blob)
    for name, days_ago in (("stale", 8), ("recent", 6)):
        when = clock.now() - days_ago * 86400
        os.utime(store.state_path(name), (when, when))
    assert store.enforce_cap() == ["stale"]
    assert [f.conversation for f in store.state_files()] == ["recent"]


def test_summaries_list_the_latest_used_first_with_their_state(tmp_path: Path) -> None:
    store = store_at(tmp_path, clock=ticking_clock())
    for name, text in (("a1", "first question\nsecond line"), ("b2", "x" * 200)):
        conv = store.new(name, "tutor")
        conv.messages = [{"role": "user", "content": text},
                         {"role": "assistant", "content": "ok"}]
        store.save(conv)
    store.save_state("a1", ME, [1], memoryview(b"x" * 100))
    listed = store.summaries()
    assert [s.id for s in listed] == ["b2", "a1"]
    assert (listed[1].first, listed[1].messages, listed[1].persona) == (
        "first question", 2, "tutor")
    assert listed[1].state_bytes == store.state_path("a1").stat().st_size
    assert listed[0].state_bytes == 0 and len(listed[0].first) == 80
    assert [s.id for s in store.summaries(prefix="a")] == ["a1"]


class CountingReader:
    """Reads files for real and remembers which, to show what a listing had to re-read."""

    def __init__(self) -> None:
        self.read: list[str] = []

    def __call__(self, path: Path) -> bytes:
        self.read.append(path.name)
        return path.read_bytes()


def test_a_second_listing_reads_only_the_histories_that_changed(tmp_path: Path) -> None:
    reader = CountingReader()
    store = store_at(tmp_path, clock=ticking_clock(), reader=reader)
    for name in ("a1", "b2", "c3"):
        conv = store.new(name, "tutor")
        conv.messages = [{"role": "user", "content": f"about {name}"}]
        store.save(conv)
    first = store.summaries()
    assert sorted(reader.read) == ["a1.json", "b2.json", "c3.json"]
    reader.read.clear()
    assert store.summaries() == first and reader.read == []  # nothing changed: nothing read

    conv = store.load("b2")
    conv.messages.append({"role": "assistant", "content": "sure"})
    store.save(conv)
    store.save_state("a1", ME, [1], memoryview(b"x" * 100))
    store.forget("c3")
    reader.read.clear()
    listed = {s.id: s for s in store.summaries()}
    assert reader.read == ["b2.json"]  # only the history that was written again
    assert sorted(listed) == ["a1", "b2"] and listed["b2"].messages == 2
    assert listed["a1"].state_bytes == store.state_path("a1").stat().st_size


def test_each_models_states_wait_for_it_and_go_with_a_forgotten_conversation(
        tmp_path: Path) -> None:
    other = StateIdentity(model="o" * 64, llama=ME.llama, kv=ME.kv)
    store = store_at(tmp_path)
    for name in ("kept", "dropped"):
        store.save(store.new(name, "calm"))
        store.save_state(name, ME, [1, 2], memoryview(b"m" * 64))
    assert store.switch_states(ME.model, other.model) == 0  # nothing the other model made
    assert store.state_files() == []
    with pytest.raises(statefile.StateError):
        store.load_state("kept", other)
    store.save_state("kept", other, [7], memoryview(b"o" * 64))
    store.forget("dropped")
    assert store.switch_states(other.model, ME.model) == 1  # only 'kept': 'dropped' is gone
    assert store.load_state("kept", ME).tokens == [1, 2]
    assert store.switch_states(ME.model, other.model) == 1
    assert store.load_state("kept", other).tokens == [7]
    assert not list(tmp_path.glob("models/*/dropped.state"))


def test_states_kept_for_another_model_count_against_the_limits_and_go_first(
        tmp_path: Path) -> None:
    """A person's `splinfer.state_max_mib` and age limit hold for every saved state,
    whichever model made it."""
    other = StateIdentity(model="o" * 64, llama=ME.llama, kv=ME.kv)
    clock = ticking_clock()
    store = store_at(tmp_path, cap=5 * MIB, clock=clock, max_state_age_s=7 * 86400)
    blob = memoryview(b"\x07" * (2 * MIB))
    for name in ("aside-old", "aside-new"):
        store.save(store.new(name, "calm"))
        store.save_state(name, ME, [1], blob)
    store.switch_states(ME.model, other.model)  # both now wait for ME's model
    stale = clock.now() - 8 * 86400
    aside_old = next(tmp_path.glob("models/*/aside-old.state"))
    os.utime(aside_old, (stale, stale))
    store.save(store.new("current", "calm"))
    store.save_state("current", other, [1], blob)
    store.enforce_cap()
    assert not aside_old.exists()  # past the age limit
    assert [f.conversation for f in store.set_aside_files()] == ["aside-new"]
    store.save(store.new("current2", "calm"))
    store.save_state("current2", other, [1], blob)  # 3 x 2 MiB > 5 MiB: the one aside goes
    store.enforce_cap()
    assert store.set_aside_files() == []
    assert sorted(f.conversation for f in store.state_files()) == ["current", "current2"]


def test_at_start_each_models_states_are_settled(tmp_path: Path) -> None:
    """`models use B`, then a restart on `splinfer.model` A: B's states in use go aside for
    B, A's come back."""
    b = StateIdentity(model="b" * 64, llama=ME.llama, kv=ME.kv)
    store = store_at(tmp_path)
    store.save(store.new("talk", "calm"))
    store.save_state("talk", ME, [1, 2], memoryview(b"a" * 64))
    store.switch_states(ME.model, b.model)  # `runa models use B`
    store.save_state("talk", b, [9], memoryview(b"b" * 64))
    restarted = store_at(tmp_path)
    assert restarted.settle_states(ME.model) == 1
    assert restarted.load_state("talk", ME).tokens == [1, 2]
    assert restarted.settle_states(b.model) == 1  # and the other way round
    assert restarted.load_state("talk", b).tokens == [9]
