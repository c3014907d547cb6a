"""``runa memory search``, ``runa memory ingest`` and the chat's ``/remember``, as a person
uses them, against a fake alethia client handed in (no bus): what is printed, what is asked,
how an ingest is cut into requests that fit the alethia bus, and what is said when search
cannot run. The real stack's end-to-end run is in tests/test_memory_cli.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support import runa
from test_chat import Run, Script

from runa import stackbus
from runa.chat.commands import help_text
from runa.chat.remember import OFF_LINE, PastTurns
from runa.chat.repl import Repl
from runa.cli import memory_ingest
from runa.cli.memory_cmd import search
from runa.cli.memory_ingest import header_budget, ingest, report
from runa.crypto import sodium
from runa.crypto.sealed import BusKey
from runa.memory_client import MemoryFault, MemoryUnavailable, NoEmbeddingModel
from runa.protocol import memory as proto
from runa.splinter import envelope as env_mod
from runa.tieto.chunk import Chunker

DAY = 86400.0
YESTERDAY = 1_765_065_600.0  # 2025-12-07 00:00 UTC


class FakeMemory:
    """alethia as ``MemoryClient.call`` answers it: scripted matches, status and faults;
    every request kept in ``asked``."""

    def __init__(self, matches: list[dict[str, Any]] | None = None, *,
                 index: str = "ready", search_fault: dict[str, Any] | None = None,
                 stored: set[str] | None = None) -> None:
        self.matches = matches or []
        self.index = index
        self.search_fault = search_fault
        self.stored = stored if stored is not None else set()  # sha256 already stored
        self.asked: list[dict[str, Any]] = []

    def running(self) -> bool:
        return True

    def call(self, op: str, *, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        request = proto.OPS[op].request(**fields)
        self.asked.append(request)
        if op == "status":
            return {"records": 3, "index": self.index}
        if op == "search":
            if self.search_fault is not None:
                raise MemoryFault(self.search_fault)
            return {proto.MATCHES: self.matches}
        if op == "ingest":
            ids, skipped = [], []
            for passage in request["passages"]:
                if passage["sha256"] in self.stored:
                    skipped.append(passage["source"])
                else:
                    ids.append(f"2026-12-08/{len(ids) + 1}")
            return {proto.IDS: ids, proto.SKIPPED: sorted(set(skipped))}
        raise AssertionError(f"unexpected op {op}")

    def requests(self, op: str) -> list[dict[str, Any]]:
        return [r for r in self.asked if r["op"] == op]


TURN = {"id": "2025-12-07/4", "score": 0.8123, "time": YESTERDAY + 3600, "kind": "turn",
        "conversation": "3f2a9c", "persona": "tutor",
        "text": "we talked about the\nferry to Bergen leaving at nine"}
DOCUMENT = {"id": "2025-12-07/9", "score": 0.5, "time": YESTERDAY, "kind": "document",
            "conversation": None, "persona": None, "source": "/home/a/notes/trip.md",
            "title": "Trip plans", "passage": 2, "text": "Pack the rain jacket."}


# -- search ------------------------------------------------------------------------------------


def test_search_prints_each_match_with_score_date_origin_and_excerpt() -> None:
    fake = FakeMemory([TURN, DOCUMENT])
    out = io.StringIO()
    assert search(fake, "when does the boat go", out=out) == 0  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    assert lines[0] == ("1. 0.81  2025-12-07 01:00:00Z  turn in conversation 3f2a9c, persona "
                        "tutor  [2025-12-07/4]")
    assert lines[1] == "   we talked about the ferry to Bergen leaving at nine"
    assert lines[2] == ('2. 0.50  2025-12-07 00:00:00Z  document "Trip plans" '
                        "(/home/a/notes/trip.md, passage 2)  [2025-12-07/9]")
    assert lines[3] == "   Pack the rain jacket."
    assert fake.requests("search") == [{"op": "search", "query": "when does the boat go",
                                        "k": 5}]


def test_search_json_carries_the_matches_and_the_filters_reach_alethia() -> None:
    fake = FakeMemory([TURN])
    out = io.StringIO()
    search(fake, "ferry", since=YESTERDAY, conversation="3f2a9c",  # type: ignore[arg-type]
           kind="turn", k=2, as_json=True, out=out)
    assert json.loads(out.getvalue()) == {"query": "ferry", "matches": [TURN]}
    assert fake.requests("search") == [{"op": "search", "query": "ferry", "k": 2,
                                        "since": YESTERDAY, "conversation": "3f2a9c",
                                        "kind": "turn"}]


def test_nothing_found_says_so_and_names_an_index_still_being_built() -> None:
    out = io.StringIO()
    search(FakeMemory(), "ferry", out=out)  # type: ignore[arg-type]
    assert out.getvalue() == "nothing found\n"
    out = io.StringIO()
    search(FakeMemory(index="building"), "ferry", kind="document", out=out)  # type: ignore[arg-type]
    assert out.getvalue().startswith("nothing found with these filters (alethia's index is "
                                     "building")


def test_without_an_embedding_model_search_says_it_is_off_with_exit_69() -> None:
    refused = FakeMemory(index="no embedding model", search_fault={
        "code": 5000, "name": "INTERNAL_ERROR", "kind": "ModelNotFound",
        "message": "search needs the embedding model", "exit_code": 69})
    for fake in (refused, FakeMemory(index="no embedding model")):
        with pytest.raises(NoEmbeddingModel) as caught:
            search(fake, "ferry", out=io.StringIO())  # type: ignore[arg-type]
        assert caught.value.exit_code == 69
        assert "no embedding model" in str(caught.value)
        assert "runa models setup" in str(caught.value)
    building = FakeMemory(search_fault={
        "code": 5000, "name": "INTERNAL_ERROR", "kind": "SearchUnavailable", "exit_code": 69,
        "message": "the search index is still being built"})
    with pytest.raises(MemoryFault, match="still being built") as refused_now:
        search(building, "ferry", out=io.StringIO())  # type: ignore[arg-type]
    assert refused_now.value.exit_code == 69


def test_without_a_running_stack_search_and_ingest_say_so(runa_env: dict[str, str],
                                                           tmp_path: Path) -> None:
    note = tmp_path / "note.md"
    note.write_text("hello\n")
    for argv in (("memory", "search", "ferry"), ("memory", "ingest", str(note))):
        result = runa(*argv, env=runa_env)
        assert result.returncode == 69, result.stderr
        assert f"runa memory {argv[1]}: " in result.stderr and "start Runa" in result.stderr
    bad = runa("memory", "search", "ferry", "--k", "0", env=runa_env)
    assert bad.returncode == 64 and "--k 0" in bad.stderr


# -- ingest ------------------------------------------------------------------------------------


def words(text: str) -> int:
    return len(text.split())


def chunker(max_tokens: int = 254) -> Chunker:
    return Chunker(words, max_tokens, 32)


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    root.mkdir()
    (root / "trip.md").write_text("---\ntitle: Trip plans\ntags: [travel, norway]\n"
                                  "date: 2026-12-01\n---\nThe ferry to Bergen leaves at nine.\n")
    (root / "soup.md").write_text("# Carrot soup\n\nThree carrots and an onion.\n")
    (root / "broken.md").write_text("---\ntitle: [unclosed\n---\nbody\n")
    (root / "lines.jsonl").write_text('{"text": "first line", "meta": {"n": 1}}\n'
                                      "not json\n"
                                      '{"text": "third line"}\n')
    (root / ".hidden.md").write_text("never read\n")
    (root / "image.png").write_bytes(b"\x89PNG\x00")
    return root


def test_front_matter_arrives_as_meta_and_a_broken_file_is_named_while_others_are_stored(
        notes: Path) -> None:
    fake = FakeMemory()
    told: list[str] = []
    summary = ingest(fake, [notes], chunker(),  # type: ignore[arg-type]
                     progress=lambda event: told.append(f"{event.stage} {event.message}"))
    passages = {(Path(p["source"]).name, p["passage"]): p
                for r in fake.requests("ingest") for p in r["passages"]}
    assert sorted(passages) == [("lines.jsonl", 0), ("lines.jsonl", 1), ("soup.md", 0),
                                ("trip.md", 0)]
    trip = passages[("trip.md", 0)]
    assert trip["meta"] == {"title": "Trip plans", "tags": ["travel", "norway"],
                            "date": "2026-12-01"}
    assert trip["title"] == "Trip plans"
    assert trip["text"] == "The ferry to Bergen leaves at nine."
    assert trip["sha256"] == hashlib.sha256((notes / "trip.md").read_bytes()).hexdigest()
    assert trip["source"] == str(notes / "trip.md")
    assert passages[("soup.md", 0)]["title"] == "Carrot soup"  # its first heading
    assert passages[("lines.jsonl", 0)]["meta"] == {"n": 1}
    assert passages[("lines.jsonl", 1)]["title"] == "lines.jsonl line 3"
    assert [p.path for p in summary.problems] == [str(notes / "broken.md"),
                                                  str(notes / "lines.jsonl")]
    assert summary.problems[1].line == 2
    assert any(t.startswith(f"failed {notes / 'broken.md'}") for t in told)
    err = io.StringIO()
    assert report(summary, err=err) == 65
    assert err.getvalue() == "4 files: 3 stored (4 passages), 0 unchanged (already stored), " \
        "2 with problems\n"


def test_an_unchanged_file_is_counted_as_such_and_json_says_everything(notes: Path) -> None:
    (notes / "broken.md").unlink()
    (notes / "lines.jsonl").unlink()
    fake = FakeMemory(stored={hashlib.sha256((notes / "soup.md").read_bytes()).hexdigest()})
    summary = ingest(fake, [notes, notes / "gone.md"], chunker())  # type: ignore[arg-type]
    out = io.StringIO()
    assert report(summary, as_json=True, out=out) == 66  # a PATH that does not exist
    assert json.loads(out.getvalue()) == {
        "files": 2, "stored": 1, "passages": 1, "unchanged": 1, "problems": [],
        "skipped": [], "missing": [str(notes / "gone.md")]}


def sealed_envelope_bytes(fields: dict[str, Any]) -> int:
    """The size of ``fields`` as a real query envelope on the alethia bus, sealed."""
    key = BusKey(bytearray(sodium.random_bytes(sodium.KEY_BYTES)))
    payload = key.seal(proto.SEALED_CONTEXTS["request"], fields)
    query = env_mod.query("runa-memory", proto.SERVICE, payload, ttl_ms=120_000,
                          reply_to=f"runa-memory.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    return len(env_mod.encode(query))


def test_no_request_exceeds_the_alethia_envelope_and_requests_are_well_filled(
        tmp_path: Path) -> None:
    limit = stackbus.ALETHIA_BUS.max_envelope
    for n in range(30):  # non-ASCII text: JSON escapes it, six bytes a character
        body = "\n\n".join(f"Fjord {n}.{p}: " + " ".join(["smørbrød æøå ☃"] * 60)
                           for p in range(6))
        (tmp_path / f"doc{n:02}.md").write_text(f"---\ntitle: Doc {n}\n---\n{body}\n")
    fake = FakeMemory()
    summary = ingest(fake, [tmp_path], chunker(max_tokens=200))  # type: ignore[arg-type]
    requests = fake.requests("ingest")
    sizes = [sealed_envelope_bytes(r) for r in requests]
    assert summary.passages == sum(len(r["passages"]) for r in requests) > 100
    assert len(requests) >= 3
    assert max(sizes) <= limit
    assert min(sizes[:-1]) > limit * 0.6  # packed, not one passage a request
    assert sorted(sizes)[-1] > limit * 0.7


def test_a_file_that_fits_one_request_is_never_split_across_two(tmp_path: Path) -> None:
    paragraph = " ".join(["word"] * 200)
    for n in range(6):  # each file about 40 KiB of passages: two never share a request
        (tmp_path / f"f{n}.md").write_text("\n\n".join([paragraph] * 40))
    fake = FakeMemory()
    ingest(fake, [tmp_path], chunker())  # type: ignore[arg-type]
    sources = [{p["source"] for p in r["passages"]} for r in fake.requests("ingest")]
    assert len(sources) == 6 and all(len(s) == 1 for s in sources)


class PerSource(FakeMemory):
    """Skips a source whose sha256 any earlier request stored, as alethia first did."""

    def call(self, op: str, *, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        answer = super().call(op, timeout=timeout, **fields)
        if op == "ingest":
            self.stored |= {p["sha256"] for p in fields["passages"]}
        return answer


def test_a_file_over_one_request_whose_later_part_alethia_skips_is_named(
        tmp_path: Path) -> None:
    paragraph = " ".join(["word"] * 200)
    (tmp_path / "big.md").write_text("\n\n".join([paragraph] * 120))
    fake = PerSource()
    summary = ingest(fake, [tmp_path], chunker())  # type: ignore[arg-type]
    assert len(fake.requests("ingest")) == 2
    assert summary.unchanged == set() and summary.stored_files == {str(tmp_path / "big.md")}
    assert len(summary.problems) == 1 and "did not keep" in summary.problems[0].problem
    assert report(summary, err=io.StringIO()) == 65
    honest = FakeMemory()  # skips only what an earlier ingest stored: nothing to say
    assert not ingest(honest, [tmp_path], chunker()).problems  # type: ignore[arg-type]


def test_a_passage_too_large_for_one_request_is_refused_and_the_others_go_on(
        tmp_path: Path) -> None:
    (tmp_path / "huge.md").write_text("---\nblob: " + "x" * 65_000 + "\n---\nshort body\n")
    (tmp_path / "fine.md").write_text("fine body\n")
    fake = FakeMemory()
    summary = ingest(fake, [tmp_path], chunker())  # type: ignore[arg-type]
    assert [Path(p["source"]).name for r in fake.requests("ingest") for p in r["passages"]] \
        == ["fine.md"]
    assert len(summary.problems) == 1
    assert summary.problems[0].path == str(tmp_path / "huge.md")
    assert "more than alethia keeps in one record (64512)" in summary.problems[0].problem
    assert "front matter" in summary.problems[0].problem


def test_the_budget_is_measured_from_a_real_sealed_envelope() -> None:
    """A header exactly at the budget fits the bus; the margin left is under 2 KiB."""
    budget = header_budget()
    shell = len(json.dumps({"op": "ingest", "passages": [{"text": ""}]},
                           separators=(",", ":")))
    fields = {"op": "ingest", "passages": [{"text": "a" * (budget - shell)}]}
    size = sealed_envelope_bytes(fields)
    assert size <= stackbus.ALETHIA_BUS.max_envelope
    assert stackbus.ALETHIA_BUS.max_envelope - size < 2048
    assert memory_ingest.ENVELOPE_FIELDS >= 4 * 210  # measured fields, four times over


# -- /remember in the chat ---------------------------------------------------------------------


@contextmanager
def opened(fake: FakeMemory) -> Iterator[FakeMemory]:
    yield fake


def remember_run(past: PastTurns, *lines: str) -> tuple[int, str]:
    run = Run()
    run.start()
    status = Repl(run.session, Script(*lines), out=run.out, notices=run.notices,
                  interactive=True, past=past).run()
    return status, run.out.getvalue()


def test_remember_shows_past_turns_with_date_conversation_and_excerpt() -> None:
    long = dict(TURN, text="the ferry " * 40)
    fake = FakeMemory([TURN, long])
    status, out = remember_run(PastTurns(lambda: opened(fake)),  # type: ignore[arg-type]
                               "/remember when was the boat", "hello")
    assert status == 0
    assert ("from your past conversations:\n"
            "  2025-12-07 01:00Z  conversation 3f2a9c (tutor)\n"
            "    we talked about the ferry to Bergen leaving at nine\n") in out
    excerpt = next(line for line in out.splitlines() if line.startswith("    the ferry"))
    assert len(excerpt) == 4 + 160 and excerpt.endswith("…")
    assert fake.requests("search") == [{"op": "search", "query": "when was the boat",
                                        "k": 3, "kind": "turn"}]
    assert "Hello!" in out  # the chat went on


def test_remember_with_alethia_down_or_search_off_says_one_line_and_the_chat_goes_on() -> None:
    @contextmanager
    def down() -> Iterator[FakeMemory]:
        raise stackbus.BusNotRunning("no alethia bus")
        yield  # pragma: no cover

    @contextmanager
    def gone() -> Iterator[Any]:
        class Stopped(FakeMemory):
            def call(self, op: str, **fields: Any) -> dict[str, Any]:
                raise MemoryUnavailable("alethia is not running")
        yield Stopped()

    off = FakeMemory(index="no embedding model")
    refused = FakeMemory(search_fault={"code": 5000, "name": "INTERNAL_ERROR",
                                       "kind": "ModelNotFound", "message": "no model"})
    no_model = "memory search is off: alethia has no embedding model"
    for opener, said in ((down, OFF_LINE), (gone, OFF_LINE), (lambda: opened(off), no_model),
                         (lambda: opened(refused), no_model)):
        status, out = remember_run(PastTurns(opener), "/remember ferry", "hello")
        assert status == 0
        notices = [line for line in out.splitlines() if "memory search" in line]
        assert len(notices) == 1 and notices[0].startswith(said), out
        assert "Hello!" in out
    status, out = remember_run(PastTurns(lambda: opened(FakeMemory())),  # type: ignore[arg-type]
                               "/remember ferry")
    assert "nothing in your past conversations comes close to that" in out


def test_remember_is_in_the_help_and_needs_words() -> None:
    assert "/remember WORDS" in help_text()
    fake = FakeMemory()
    _, out = remember_run(PastTurns(lambda: opened(fake)), "/remember")  # type: ignore[arg-type]
    assert "/remember WORDS shows" in out and not fake.asked
