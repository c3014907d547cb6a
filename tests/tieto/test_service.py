"""tieto on a real bus: the daemon answers recall, ingest, snapshot and complete, files
promoted keys, and the commands use it when it runs and the library when it does not.

The daemon runs in a thread of the test process on a real bus segment, with the fake
embedder; splinfer is a small scripted stand-in on the same bus (the real model's answers
are covered by test_complete_real.py), so the citation checks can see a model citing a
source that does not exist.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from support import isolated_env, remove_segments, runa, wait_for

from runa import config as config_mod
from runa import stackbus as bus_mod
from runa.client import ServiceClient
from runa.components import load_config
from runa.paths import Paths
from runa.service import ServiceRunner
from runa.splinter import EVENTS_CHANNEL, Envelope
from runa.splinter import envelope as env_mod
from runa.stackbus import HealthWriter
from runa.tieto.access import Local, Remote, TietoServiceError, open_tieto
from runa.tieto.daemon import TietoDaemon
from runa.tieto.snapshot import check_snapshot

from .fakes import FakeEmbedder

DOCS = {
    "car.md": "---\nyear: 2024\n---\nThe car insurance renews every March with Lähi-Vakuutus.",
    "boat.md": "---\nyear: 2021\n---\nThe sailing boat is moored at the south harbour pier.",
    "soup.md": "The soup recipe needs three carrots, one onion and a litre of stock.",
}


class Quiet:
    def notify(self, state: str) -> None:
        pass


class FakeSplinfer:
    """Answers every chat with ``script`` in pieces, on the queue ``splinfer``."""

    def __init__(self, config: config_mod.Config, stack: str, script: list[str], *,
                 silent: bool = False) -> None:
        self.bus = bus_mod.connect(config, stack)
        self.queue = self.bus.queue("splinfer")
        self.script = script
        self.silent = silent  # still reading a long prompt: nothing until cancelled
        self.prompts: list[dict[str, object]] = []
        self.held: dict[str, Envelope] = {}
        self.cancelled_at: float | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stopping.is_set():
            self.bus.set("splinfer:health", "{}", ttl_ms=3000)
            request = self.queue.recv(0.1)
            if request is None:
                continue
            if request.payload.get("op") == "cancel":
                held = self.held.pop(str(request.payload.get("target")), None)
                if held is not None:
                    self.cancelled_at = time.monotonic()
                    self.bus.sender(held.reply_to or "").send(env_mod.response(
                        held, "splinfer", {"text": "", "finish_reason": "cancelled"}, seq=0,
                        eof=True))
                continue
            if request.payload.get("op") != "chat":
                continue
            self.prompts.append(request.payload)
            if self.silent:
                self.held[request.id] = request
                continue
            sender = self.bus.sender(request.reply_to or "")
            for seq, piece in enumerate(self.script):
                sender.send(env_mod.response(request, "splinfer", {"text": piece}, seq=seq))
            sender.send(env_mod.response(request, "splinfer", {
                "text": "", "finish_reason": "stop", "n_gen": len(self.script)},
                seq=len(self.script), eof=True))

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.queue.close()
        self.bus.close()


class Stack:
    def __init__(self, root: Path) -> None:
        self.env = isolated_env(root)
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc/runa.toml").write_text("[tieto]\nsieve = 0.3\n")
        self.paths = Paths.for_stack(self.env["RUNA_STACK"], self.env)
        self.config = load_config(self.paths, self.env, {})
        self.stack = self.env["RUNA_STACK"]
        bus_mod.ensure_buses(self.config, self.stack)
        self.docs = root / "docs"
        self.docs.mkdir()
        for name, text in DOCS.items():
            (self.docs / name).write_text(text)
        self.fake = FakeEmbedder()
        self.daemon: TietoDaemon | None = None
        self.runner: ServiceRunner | None = None
        self.thread: threading.Thread | None = None

    def start_daemon(self) -> None:
        logger = logging.getLogger("runa.test.tieto")
        self.heartbeat = HealthWriter(self.config, self.stack, logger, 0.2)
        self.daemon = TietoDaemon(self.config, self.stack, logger, paths=self.paths,
                                  embedder_factory=lambda: self.fake)
        self.runner = ServiceRunner(self.daemon, logger, notifier=Quiet(), env={},
                                    heartbeat=self.heartbeat, heartbeat_interval=0.2)
        self.thread = threading.Thread(target=self.runner.run, daemon=True)
        self.thread.start()
        with bus_mod.connect(self.config, self.stack) as bus:
            wait_for(lambda: bus.get("tieto:health"), 10, "tieto's first heartbeat")

    def stop_daemon(self) -> None:
        if self.runner is not None and self.thread is not None:
            self.runner.request_stop()
            self.thread.join(10)
            self.heartbeat.close()
            with bus_mod.connect(self.config, self.stack) as bus:
                bus.unset("tieto:health")
            self.runner = None

    def access(self):
        return open_tieto(self.config, self.paths, self.stack, "test",
                          embedder_factory=lambda: self.fake)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    s.stop_daemon()
    remove_segments(s.env)


def test_without_the_daemon_the_library_answers(stack: Stack) -> None:
    with stack.access() as tieto:
        assert isinstance(tieto, Local)
        report = tieto.ingest([stack.docs], "notes")
        assert report.ingested == 3
        hits = tieto.recall("when does the car insurance renew", "notes")
        assert hits[0].source.endswith("car.md")


def test_recall_and_ingest_go_through_the_running_daemon(stack: Stack) -> None:
    stack.start_daemon()
    events = []
    with stack.access() as tieto:
        assert isinstance(tieto, Remote)
        report = tieto.ingest([stack.docs], "notes", filterable=[("year", "integer")],
                              progress=events.append)
        assert (report.ingested, report.failed) == (3, 0)
        assert {e.stage for e in events} >= {"ingested"}
        hits = tieto.recall("when does the car insurance renew", "notes")
        assert hits[0].source.endswith("car.md") and hits[0].similarity is not None
        only_old = tieto.recall("car insurance", "notes", ["year<2022"])
        assert [h.source.rsplit("/", 1)[-1] for h in only_old] == ["boat.md"]
        with pytest.raises(Exception) as refused:
            tieto.recall("car", "nothing-here")
        assert refused.value.exit_code == 66 and "nothing-here" in str(refused.value)
    assert stack.fake.embedded > 0  # the daemon's model did the work


def test_snapshot_restore_gives_identical_recall(stack: Stack, tmp_path: Path) -> None:
    stack.start_daemon()
    question = "what does the soup need"
    with stack.access() as tieto:
        tieto.ingest([stack.docs], "notes")
        before = [h.as_dict() for h in tieto.recall(question, "notes", k=3)]
        assert tieto.snapshot("notes", tmp_path / "snap.sqlite") > 0
        (stack.docs / "soup.md").write_text("Nothing about food here any more.")
        tieto.ingest([stack.docs], "notes")
        assert [h.as_dict() for h in tieto.recall(question, "notes", k=3)] != before
        tieto.restore("notes", tmp_path / "snap.sqlite")
        assert [h.as_dict() for h in tieto.recall(question, "notes", k=3)] == before
        tieto.restore("copy", tmp_path / "snap.sqlite")
        assert [h.as_dict() for h in tieto.recall(question, "copy", k=3)] == before
        # Restored under another name, the topic knows its new name (its errors say it).
        tieto.snapshot("copy", tmp_path / "copy.sqlite")
        assert check_snapshot(tmp_path / "copy.sqlite") == "copy"
        with pytest.raises(Exception, match="not a topic snapshot"):
            (tmp_path / "junk").write_text("junk")
            tieto.restore("notes", tmp_path / "junk")


def test_complete_cites_only_retrieved_sources(stack: Stack) -> None:
    stack.start_daemon()
    splinfer = FakeSplinfer(stack.config, stack.stack,
                            ["It renews in March [", "1]. See also [7] and [1, 9", "]."])
    splinfer.thread.start()
    try:
        with stack.access() as tieto:
            tieto.ingest([stack.docs], "notes")
            payloads = list(tieto.complete("when does the car insurance renew", "notes"))
    finally:
        splinfer.stop()
    head, final = payloads[0], payloads[-1]
    text = "".join(str(p.get("text", "")) for p in payloads[1:])
    assert head["known"] and head["sources"][0]["source"].endswith("car.md")
    assert text == "It renews in March [1]. See also  and [1]."
    assert final["citations"] == [1] and final["dropped_citations"] == [7, 9]
    assert final["grounded"] is True and final["withheld"] is False
    prompt = splinfer.prompts[0]
    assert "[1] (car.md)" in str(prompt["text"]) and "[1]" in str(prompt["system"])


UNCITED = ["To renew it, run ", "'sudo renew --all'", " as root."]  # cites nothing


def _complete(stack: Stack, script: list[str], question: str = "when does the car "
              "insurance renew", **overrides: str) -> tuple[list[dict[str, Any]], str]:
    """The payloads of one completion over the running daemon, and the text shown."""
    splinfer = FakeSplinfer(stack.config, stack.stack, script)
    splinfer.thread.start()
    try:
        with stack.access() as tieto:
            tieto.ingest([stack.docs], "notes")
            payloads = list(tieto.complete(question, "notes", **overrides))
    finally:
        splinfer.stop()
    return payloads, "".join(str(p.get("text", "")) for p in payloads[1:])


def test_an_answer_citing_none_of_its_sources_is_marked_ungrounded(stack: Stack) -> None:
    stack.start_daemon()
    payloads, text = _complete(stack, UNCITED)
    final = payloads[-1]
    assert text == "".join(UNCITED)  # shown as the model wrote it ("mark", the default) ...
    assert final["grounded"] is False and final["citations"] == []  # ... and marked
    assert final["withheld"] is False and final["known"] is True
    # The asker's own setting (runa recall --uncited, the chat's tieto.uncited) wins.
    payloads, text = _complete(stack, UNCITED, uncited="refuse")
    assert text.startswith("I don't know") and payloads[-1]["withheld"] is True


def test_uncited_refuse_says_it_does_not_know_and_gives_the_best_passage(stack: Stack) -> None:
    (stack.paths.sysconfdir / "runa.toml").write_text(
        '[tieto]\nsieve = 0.3\nuncited = "refuse"\n')
    stack.config = load_config(stack.paths, stack.env, {})
    stack.start_daemon()
    payloads, text = _complete(stack, UNCITED)
    final = payloads[-1]
    assert "sudo" not in text and [p for p in payloads[1:-1] if p.get("text")] == []
    assert text.startswith("I don't know: the answer the model wrote cites none of the "
                           "sources of topic notes")
    assert "The best passage, [1] car.md:" in text
    assert text.endswith("The car insurance renews every March with Lähi-Vakuutus.")
    assert (final["grounded"], final["withheld"], final["known"]) == (False, True, True)
    # An answer that cites a source is shown whole, once it is complete.
    payloads, text = _complete(stack, ["It renews in March [", "1]."])
    assert text == "It renews in March [1]." and payloads[-1]["grounded"] is True
    assert payloads[-1]["withheld"] is False
    with stack.access() as tieto:  # the chat's /rag asks for the sources and the setting
        assert tieto.ground("when does the car insurance renew", "notes").uncited == "refuse"


def test_complete_under_the_sieve_says_it_does_not_know_without_asking(stack: Stack) -> None:
    stack.start_daemon()
    with stack.access() as tieto:
        tieto.ingest([stack.docs], "notes")
        payloads = list(tieto.complete("quantum chromodynamics lattice", "notes"))
    assert payloads[0]["known"] is False and payloads[0]["sources"] == []
    assert payloads[-1]["finish_reason"] == "no_sources"
    assert payloads[-1]["text"].startswith("I don't know")
    # Nothing ran on splinfer's queue (there is none): the model was never asked.


def test_a_promoted_user_key_is_found_in_short_term_memory(stack: Stack) -> None:
    stack.start_daemon()
    key = "user:1000:note:dentist"
    with bus_mod.connect(stack.config, stack.stack) as bus:
        bus.set(key, "The dentist appointment is on Friday at nine.")
        bus.set("splinfer:conv:x", json.dumps({"path": "/x"}))
        events = bus.broadcast(EVENTS_CHANNEL)
        for hot in ("splinfer:conv:x", key):
            events.send(env_mod.event("splinter", {"op": "promote", "key": hot, "reads": 100,
                                                   "total_reads": 100, "bus": "main"}))
    topic = stack.config["tieto.short_term_topic"]
    with stack.access() as tieto:
        wait_for(lambda: topic in tieto.topics(), 10, "the short-term topic")
        hits = tieto.recall("when is the dentist appointment", topic)
    assert [h.source for h in hits] == [f"bus:{key}"]  # the machinery's key was not filed
    assert hits[0].meta["key"] == key


def test_a_key_read_often_is_promoted_by_the_keeper_and_recalled(stack: Stack) -> None:
    """End to end through the keeper's own sweep: reads -> promote event -> short-term topic."""
    from runa.keeper.decay import Decayer, DecayPolicy, EventPublisher

    stack.start_daemon()
    key = "user:1000:note:keys"
    with bus_mod.connect(stack.config, stack.stack) as bus:
        bus.set(key, "The spare house keys are in the blue tin on the bookshelf.")
        for _ in range(3):
            assert bus.get(key) is not None
        decayer = Decayer(bus, DecayPolicy(promote_reads=3),
                          events=EventPublisher(bus, "splinter"))
        assert decayer.sweep().promoted == [key]
    topic = stack.config["tieto.short_term_topic"]
    with stack.access() as tieto:
        wait_for(lambda: topic in tieto.topics(), 10, "the short-term topic")
        hits = tieto.recall("where are the spare keys", topic)
    assert hits and hits[0].source == f"bus:{key}"
    assert "blue tin" in hits[0].text


def test_the_daemon_answers_bad_requests_and_keeps_going(stack: Stack) -> None:
    stack.start_daemon()
    from runa.client import ServiceClient, ServiceFault

    with bus_mod.connect(stack.config, stack.stack) as bus, \
            ServiceClient(bus, "tieto", "test") as client:
        with pytest.raises(ServiceFault, match="unknown op"):
            client.call({"op": "teleport"})
        with pytest.raises(ServiceFault, match="absolute"):
            client.call({"op": "ingest", "topic": "t", "paths": ["relative/dir"]})
        start = time.monotonic()
        assert client.call({"op": "status"})["topics"] == []
        assert time.monotonic() - start < 5


def test_the_daemon_refuses_numbers_out_of_range_as_usage_errors(stack: Stack) -> None:
    """Through the daemon too: a clear usage error (64), not an internal error (70)."""
    stack.start_daemon()
    with stack.access() as tieto:
        tieto.ingest([stack.docs], "notes", filterable=[("year", "integer")])
        with pytest.raises(TietoServiceError, match=f"{'9' * 30} is out of its range") as huge:
            tieto.recall("car insurance", "notes", ["year = " + "9" * 30])
        with pytest.raises(TietoServiceError, match="min_similarity must be a number from -1 "
                           "to 1, not nan") as nan:
            tieto.recall("car insurance", "notes", min_similarity=float("nan"))
        assert huge.value.exit_code == nan.value.exit_code == 64
        assert tieto.recall("car insurance", "notes")  # and it goes on answering


def test_the_daemon_holds_k_to_the_range_recall_k_has(stack: Stack) -> None:
    """The request's k is checked as ``runa recall --k`` is (1 to 1000), before the topic."""
    stack.start_daemon()
    with stack.access() as tieto:
        for k, shown in ((0, "0"), (5000, "5000"), (10**30, str(10**30)), (True, "True")):
            for topic in ("notes", "nowhere"):
                with pytest.raises(TietoServiceError) as refused:
                    tieto.recall("car insurance", topic, k=k)
                assert (str(refused.value), refused.value.exit_code) == \
                    (f"k must be a whole number from 1 to 1000, not {shown}", 64)
            with pytest.raises(TietoServiceError, match=r"^k must be a whole number"):
                tieto.ground("car insurance", "nowhere", k=k)


@contextmanager
def answer_waiting_for_splinfer(stack: Stack) -> Iterator[tuple[FakeSplinfer, Any, Iterator]]:
    """A ``complete`` whose question splinfer holds, still reading the prompt (no token yet)."""
    stack.start_daemon()
    splinfer = FakeSplinfer(stack.config, stack.stack, [], silent=True)
    splinfer.thread.start()
    try:
        with stack.access() as tieto:
            tieto.ingest([stack.docs], "notes")
            stream = tieto.complete("when does the car insurance renew", "notes")
            assert next(stream)["known"]  # the sources; splinfer is asked now
            wait_for(lambda: splinfer.held, 10, "the question to reach splinfer")
            yield splinfer, tieto, stream
    finally:
        splinfer.stop()


def test_cancel_reaches_splinfer_while_it_reads_the_prompt(stack: Stack) -> None:
    # A long prompt on an old machine: seconds before splinfer's first token. A cancel
    # must not wait for that token.
    with answer_waiting_for_splinfer(stack) as (splinfer, tieto, _stream):
        asked = time.monotonic()
        tieto.cancel()
        wait_for(lambda: splinfer.cancelled_at, 5, "splinfer to be told to cancel")
        # Well before the token that never comes (tieto polls 0.25 s, the client 0.1 s).
        assert splinfer.cancelled_at is not None and splinfer.cancelled_at - asked < 4


def test_stopping_the_daemon_mid_answer_cancels_it_cleanly(stack: Stack) -> None:
    with answer_waiting_for_splinfer(stack) as (splinfer, _tieto, stream):
        stack.stop_daemon()  # systemctl stop: the worker thread is still waiting
        assert splinfer.cancelled_at is not None  # told, before the bus was closed
        assert list(stream)[-1]["finish_reason"] == "cancelled"


class SlowEmbedder(FakeEmbedder):
    """An embedding model on an old machine: every call takes a while."""

    def embed(self, texts):
        time.sleep(0.1)
        return super().embed(texts)


def _bulk(root: Path, count: int = 40) -> Path:
    root.mkdir()
    for i in range(count):
        (root / f"b{i:02}.md").write_text(f"Bulk note {i} about harbours and ropes.\n")
    return root


class Ingesting:
    """``runa ingest`` of a folder through the daemon, in a thread, as another process would."""

    def __init__(self, stack: Stack, folder: Path, topic: str, *, queued: bool = False) -> None:
        """``queued``: it waits behind another ingest, so no progress comes yet."""
        self.events: list[object] = []
        self.result: object = None
        self.access = stack.access()
        self.remote = self.access.__enter__()
        self.thread = threading.Thread(target=self._run, args=(folder, topic), daemon=True)
        self.thread.start()
        if queued:
            wait_for(lambda: self.remote.client._active, 10, "the ingest to be sent")
        else:
            wait_for(lambda: self.events, 10, "the ingest to start")

    def _run(self, folder: Path, topic: str) -> None:
        try:
            self.result = self.remote.ingest([folder], topic, progress=self.events.append)
        except Exception as error:  # what the command would print
            self.result = error

    def request_id(self) -> str:
        return str(self.remote.client._active)

    def finish(self) -> object:
        self.thread.join(30)
        self.access.__exit__(None, None, None)
        return self.result


def test_questions_are_answered_while_a_long_ingest_runs(stack: Stack, tmp_path: Path) -> None:
    stack.fake = SlowEmbedder()
    stack.start_daemon()
    with stack.access() as tieto:
        tieto.ingest([stack.docs], "notes")
        ingest = Ingesting(stack, _bulk(tmp_path / "bulk"), "bulk")
        asked = time.monotonic()
        hits = tieto.recall("when does the car insurance renew", "notes")
        answered = time.monotonic() - asked
        assert hits[0].source.endswith("car.md")
        assert ingest.thread.is_alive(), "the ingest ended before the question was answered"
        assert answered < 3  # one embedding call at most, not the whole ingest (≥ 4 s)
        assert tieto.client.call({"op": "status"})["ingesting"] == "bulk"
        with pytest.raises(Exception) as busy:
            tieto.restore("bulk", tmp_path / "any.sqlite")
        assert busy.value.exit_code == 75 and "being ingested" in str(busy.value)
    report = ingest.finish()
    assert getattr(report, "ingested", None) == 40, report


def test_a_running_ingest_can_be_cancelled_and_keeps_what_it_did(stack: Stack,
                                                                  tmp_path: Path) -> None:
    stack.fake = SlowEmbedder()
    stack.start_daemon()
    bulk = _bulk(tmp_path / "bulk")
    with stack.access() as tieto:
        tieto.ingest([bulk / "b00.md"], "bulk")  # the topic exists: what is done stays
        ingest = Ingesting(stack, bulk, "bulk")
        wait_for(lambda: sum(getattr(e, "stage", "") == "ingested" for e in ingest.events) >= 2,
                 10, "two files to be ingested")
        with bus_mod.connect(stack.config, stack.stack) as bus:
            bus.sender("tieto").send(env_mod.cancel("test", "tieto", ingest.request_id()))
        outcome = ingest.finish()
        assert getattr(outcome, "exit_code", None) == 130 and "cancelled" in str(outcome)
        kept = {h.source for h in tieto.recall("bulk note harbours", "bulk", k=50)}
        assert 1 < len(kept) < 40
        assert tieto.client.call({"op": "status"})["ingesting"] is None


def test_ctrl_c_on_runa_ingest_stops_the_daemons_ingest(stack: Stack, tmp_path: Path) -> None:
    stack.fake = SlowEmbedder()
    stack.start_daemon()
    bulk = _bulk(tmp_path / "bulk")
    command = subprocess.Popen(
        [sys.executable, "-m", "runa", "ingest", str(bulk), "--topic", "bulk"],
        env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with bus_mod.connect(stack.config, stack.stack) as bus, \
            ServiceClient(bus, "tieto", "test") as client:
        wait_for(lambda: client.call({"op": "status"})["ingesting"] == "bulk", 20,
                 "the daemon to start the command's ingest")
        wait_for(lambda: _sources(stack, "bulk") >= 2, 20, "two files to be ingested")
        command.send_signal(signal.SIGINT)
        _, err = command.communicate(timeout=20)
        assert command.returncode == 130 and "ingest stopped" in err, err
        assert "ingested until then are kept" in err, err
        wait_for(lambda: client.call({"op": "status"})["ingesting"] is None, 10,
                 "the daemon's ingest to stop")
        # Cancelled, not finished (40 files take ≥ 4 s): the topic it was creating is kept
        # with the files done, as the manual says.
        assert "bulk" in client.call({"op": "topics"})["topics"]
        assert 2 <= _sources(stack, "bulk") < 40


def _sources(stack: Stack, topic: str) -> int:
    """Files in ``topic``'s index now, read beside the daemon (WAL lets both read)."""
    index = stack.paths.data / "tieto" / topic / "index.sqlite"
    if not index.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{index}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT count(*) FROM sources").fetchone()[0])
    except sqlite3.OperationalError:  # being created right now
        return 0


def test_an_ingest_whose_client_was_killed_stops_and_keeps_what_it_did(
        stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="runa.test.tieto")
    stack.fake = SlowEmbedder()
    stack.start_daemon()
    bulk = _bulk(tmp_path / "bulk", 150)  # ≥ 15 s of embedding
    command = subprocess.Popen(
        [sys.executable, "-m", "runa", "ingest", str(bulk), "--topic", "bulk"],
        env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with bus_mod.connect(stack.config, stack.stack) as bus, \
            ServiceClient(bus, "tieto", "test") as client:
        wait_for(lambda: _sources(stack, "bulk") >= 2, 30, "two files to be ingested")
        command.kill()
        command.wait(10)
        killed = time.monotonic()
        wait_for(lambda: client.call({"op": "status"})["ingesting"] is None, 10,
                 "the daemon to stop the ingest nobody waits for")
        assert time.monotonic() - killed < 8
        kept = _sources(stack, "bulk")
        assert 2 <= kept < 150
        orphaned = [r for r in caplog.records if getattr(r, "RUNA_EVENT", "") == "ingest_orphaned"]
        assert orphaned and "bulk" in orphaned[0].getMessage()
        assert f"{kept} of 150 files" in orphaned[0].getMessage()
        assert not any("no such channel" in r.getMessage() for r in caplog.records)
    # The next ingest runs at once instead of waiting behind it.
    with stack.access() as tieto:
        started = time.monotonic()
        assert tieto.ingest([stack.docs], "notes").ingested == 3
        assert time.monotonic() - started < 5


def _ingests(stack: Stack) -> list[str]:
    return runa("ingest", "--status", env=stack.env).stdout.splitlines()


def test_runa_ingest_status_shows_ingests_and_cancel_stops_one_by_id(
        stack: Stack, tmp_path: Path) -> None:
    stack.fake = SlowEmbedder()
    stack.start_daemon()
    first = Ingesting(stack, _bulk(tmp_path / "bulk", 400), "bulk")  # ≥ 40 s
    second = Ingesting(stack, stack.docs, "notes", queued=True)
    wait_for(lambda: _sources(stack, "bulk") >= 2, 20, "two files to be ingested")

    shown = wait_for(lambda: [ln for ln in _ingests(stack) if "notes" in ln], 10,
                     "the waiting ingest in the status")
    status = _ingests(stack)
    assert status[0].split() == ["ID", "STATE", "TOPIC", "PROGRESS", "PATHS"]
    running = next(ln for ln in status if " bulk " in ln)
    assert running.split()[1] == "running" and "/400 files" in running
    assert running.split()[0] == first.request_id()[-8:]
    assert str(shown[0]).split()[1] == "waiting"
    listed = json.loads(runa("ingest", "--status", "--json", env=stack.env).stdout)
    assert [(i["id"], i["topic"], i["state"]) for i in listed] == [
        (first.request_id(), "bulk", "running"), (second.request_id(), "notes", "waiting")]
    assert listed[0]["total"] == 400 and listed[0]["done"] >= 2

    done = runa("ingest", "--cancel", second.request_id()[-8:], env=stack.env)
    assert done.returncode == 0, done.stderr
    assert "cancelled the waiting ingest into notes" in done.stderr
    assert getattr(second.finish(), "exit_code", None) == 130

    unknown = runa("ingest", "--cancel", "00000000", env=stack.env)
    assert unknown.returncode == 66 and "no ingest 00000000" in unknown.stderr

    done = runa("ingest", "--cancel", env=stack.env)  # no id: the running one
    assert done.returncode == 0, done.stderr
    assert "cancelled the ingest into bulk" in done.stderr and "kept" in done.stderr
    assert getattr(first.finish(), "exit_code", None) == 130
    assert 2 <= _sources(stack, "bulk") < 400
    assert _ingests(stack) == ["no ingests running or waiting"]


def test_a_fifo_in_the_folder_does_not_hold_up_the_daemons_ingests(
        stack: Stack, tmp_path: Path) -> None:
    stack.start_daemon()
    os.mkfifo(stack.docs / "pipe.md")
    try:
        done = runa("ingest", str(stack.docs), "--topic", "notes", env=stack.env, timeout=30)
    finally:
        with suppress(OSError):  # a reader blocked on it (unfixed) gets its end of file
            os.close(os.open(stack.docs / "pipe.md", os.O_WRONLY | os.O_NONBLOCK))
    assert done.returncode == 0, done.stderr
    assert f"{stack.docs / 'pipe.md'}: not a regular file (a FIFO); skipped" in done.stderr
    assert "3 ingested" in done.stderr and "1 skipped" in done.stderr
    with stack.access() as tieto:
        assert tieto.ingest([stack.docs / "car.md"], "cars").ingested == 1


def test_ingest_status_and_cancel_without_the_daemon_say_so(stack: Stack) -> None:
    status = runa("ingest", "--status", env=stack.env)
    assert status.returncode == 0 and "tieto is not running" in status.stdout
    cancel = runa("ingest", "--cancel", env=stack.env)
    assert cancel.returncode == 69 and "tieto is not running" in cancel.stderr
    mixed = runa("ingest", str(stack.docs), "--status", env=stack.env)
    assert mixed.returncode == 64 and "take no PATH" in mixed.stderr
    bare = runa("ingest", str(stack.docs), env=stack.env)
    assert bare.returncode == 64 and "--topic T" in bare.stderr


def test_the_daemon_embeds_texts_for_a_client_and_refuses_what_the_model_cannot_take(
        stack: Stack) -> None:
    """``embed``: the model's rows, float32 little-endian in base64, in the order asked."""
    import base64

    import numpy as np

    from runa.client import ServiceFault
    from runa.protocol import tieto as protocol

    stack.start_daemon()
    texts = ["the sailing boat", "three carrots"]
    with bus_mod.connect(stack.config, stack.stack) as bus, \
            ServiceClient(bus, "tieto", "test") as client:
        answer = client.call(protocol.request("embed", texts=texts))
        assert (answer["model"], answer["dim"]) == ("fake", 32)
        assert answer["n_tokens"] == 5
        rows = [np.frombuffer(base64.b64decode(row), dtype="<f4") for row in answer["vectors"]]
        assert all(np.array_equal(row, stack.fake.vector(text))
                   for row, text in zip(rows, texts, strict=True))
        with pytest.raises(ServiceFault, match=r"texts\[1\] has 300 word-pieces") as refused:
            client.call(protocol.request("embed", texts=["fine", "word " * 300]))
        assert refused.value.exit_code == 65
        with pytest.raises(ServiceFault, match="1 to 8 texts"):
            client.call(protocol.request("embed", texts=["a"] * 9))
