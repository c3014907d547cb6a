"""alethia's daemon on a real bus (in a thread of the test process) with keys the test gives
it: sealed round trips of every op on the real store and on an in-memory one, what it refuses
and how (unsealed, sealed with another key or for another hop, too large), that nothing of a
turn is in the clear in /dev/shm or its log, waiting for a locked vault, a wrong key, and
batched appends flushed in time and on stop."""

from __future__ import annotations

import base64
import errno
import io
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import isolated_env, remove_segments, wait_for
from tieto.fakes import FakeEmbedder

from runa import stackbus as bus_mod
from runa.alethia import dayfile, files
from runa.alethia.daemon import MAX_RECORD_BYTES, AlethiaDaemon, EmbedderFactory
from runa.alethia.store import Durability, Keys, Store, StoreError, restore, snapshot
from runa.client import ServiceClient, ServiceFault
from runa.components import load_config
from runa.crypto import sodium
from runa.crypto.sealed import BusKey, key_path
from runa.memory_client import MemoryClient, Turn, TurnRecorder
from runa.paths import Paths
from runa.protocol import memory
from runa.protocol import secret_wire as wire
from runa.secret_client import SecretFault
from runa.service import ServiceRunner
from runa.splinter import Fault, segment_paths
from runa.splinter import envelope as env_mod
from runa.stackbus import HealthWriter

from .memory_store import MemoryStores

TEXT = "my-canary-recipe-for-quince-7c1e"  # searched for in /dev/shm and the log
ANSWER = "the-answer-canary-0b9d"
REQUEST = memory.SEALED_CONTEXTS["request"]
REPLY = memory.SEALED_CONTEXTS["reply"]


class Ready:
    """The runner's notifier: says when the daemon is ready."""

    def __init__(self) -> None:
        self.ready = threading.Event()

    def notify(self, state: str) -> None:
        if state == "READY=1":
            self.ready.set()


class GivenKeys:
    """What coven would hand alethia, kept by the test; ``locked`` loads fail as a locked
    vault's do."""

    def __init__(self) -> None:
        self.memory = {1: sodium.random_bytes(32)}
        self.seed = sodium.random_bytes(32)
        self.locked = 0
        self.loads = 0

    def load(self) -> Keys:
        self.loads += 1
        if self.locked:
            self.locked -= 1
            raise SecretFault({"code": Fault.INTERNAL_ERROR, "kind": wire.LOCKED_KIND,
                               "exit_code": 69, "message": "the vault is locked"})
        return Keys({v: bytearray(k) for v, k in self.memory.items()}, bytearray(self.seed))

    def create_next(self, keys: Keys) -> int:
        version = max(keys.memory) + 1
        self.memory[version] = sodium.random_bytes(32)
        keys.memory[version] = bytearray(self.memory[version])
        return version


def real_store(root: Path, keys: Keys) -> Store:
    return Store.open(root, keys, durability=Durability(records=64, ms=100))


class Alethia:
    """An alethia daemon running in a thread on the test's own stack."""

    def __init__(self, root: Path, open_store: Callable[[Path, Keys], Any],
                 keys: GivenKeys | None = None, log: io.StringIO | None = None,
                 heartbeat_s: float = 0.2, embedder: EmbedderFactory | None = None) -> None:
        self.env = isolated_env(root)
        self.stack = self.env["RUNA_STACK"]
        self.paths = Paths.for_stack(self.stack, self.env)
        self.config = load_config(self.paths, self.env)
        bus_mod.ensure_buses(self.config, self.stack)
        self.keys = keys or GivenKeys()
        self.open_store = open_store
        self.logger = logging.getLogger(f"runa.test.alethia.{root.name}")
        self.logger.setLevel(logging.DEBUG)
        self.log = log or io.StringIO()
        self.logger.addHandler(logging.StreamHandler(self.log))
        self.main = bus_mod.connect(self.config, self.stack)
        self.bus = bus_mod.connect(self.config, self.stack, memory.BUS)
        self.key = BusKey.load_or_create(key_path(self.paths.runtime))
        self.client = ServiceClient(self.bus, memory.SERVICE, "test")
        self.heartbeat_s = heartbeat_s
        self.embedder = embedder or (lambda _config, _paths: FakeEmbedder(dim=64))
        self.start()

    def start(self) -> None:
        self.heartbeat = HealthWriter(self.config, self.stack, self.logger, self.heartbeat_s)
        self.daemon = AlethiaDaemon(self.config, self.stack, self.logger, paths=self.paths,
                                    keys=self.keys, open_store=self.open_store,
                                    prctl=lambda _option, _arg: 0, retry_s=0.2,
                                    embedder=self.embedder)
        notifier = Ready()
        self.runner = ServiceRunner(self.daemon, self.logger, notifier=notifier, env={},
                                    heartbeat=self.heartbeat, heartbeat_interval=self.heartbeat_s)
        self.thread = threading.Thread(target=self.runner.run, daemon=True)
        self.thread.start()
        assert notifier.ready.wait(10), "alethia did not get ready"
        wait_for(lambda: self.main.get("alethia:health"), 10, "alethia's first heartbeat")

    def stop_daemon(self) -> None:
        self.runner.request_stop()
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.heartbeat.close()

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        payload = self.client.call(self.key.seal(REQUEST, memory.OPS[op].request(**fields)),
                                   idle_timeout=10)
        opened = self.key.open(REPLY, payload)
        try:
            return opened.fields
        finally:
            opened.wipe()

    def raw(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.client.call(payload, idle_timeout=10)

    def turn(self, conversation: str = "c1", user: str = TEXT, **extra: Any) -> str:
        return str(self.call("append", conversation=conversation, persona="default", user=user,
                             answer=ANSWER, **extra)["id"])

    def close(self) -> None:
        if self.thread.is_alive():
            self.stop_daemon()
        self.client.close()
        self.key.close()
        self.bus.close()
        self.main.close()
        remove_segments(self.env)


@pytest.fixture(params=["memory", "store"])
def open_store(request: pytest.FixtureRequest) -> Callable[[Path, Keys], Any]:
    return MemoryStores() if request.param == "memory" else real_store


@pytest.fixture
def alethia(tmp_path: Path, open_store: Callable[[Path, Keys], Any]) -> Iterator[Alethia]:
    daemon = Alethia(tmp_path, open_store)
    yield daemon
    daemon.close()


@pytest.fixture
def in_memory(tmp_path: Path) -> Iterator[Alethia]:
    daemon = Alethia(tmp_path, MemoryStores())
    yield daemon
    daemon.close()


def fault(call: Callable[[], object]) -> dict[str, Any]:
    with pytest.raises(ServiceFault) as caught:
        call()
    return dict(caught.value.payload)


def test_a_turn_is_appended_listed_shown_and_forgotten_sealed(alethia: Alethia) -> None:
    first = alethia.turn("c1", interventions=[{"rule": "r1", "action": "flag", "tier": 1}])
    second = alethia.turn("c2", user="another question")
    assert first.endswith("/1") and second.endswith("/2")
    listed = alethia.call("list")
    assert [e["id"] for e in listed["entries"]] == [first, second] and listed["next"] is None
    assert listed["entries"][0]["conversation"] == "c1"
    assert TEXT not in str(listed)  # a list names records, never their text
    record = alethia.call("show", id=first)["record"]
    assert record["id"] == first and record["kind"] == "turn"
    assert record["body"]["user"] == TEXT and record["body"]["answer"] == ANSWER
    assert record["body"]["interventions"] == [{"rule": "r1", "action": "flag", "tier": 1}]
    assert alethia.call("list", conversation="c2")["entries"][0]["id"] == second

    assert alethia.call("forget", id=first) == {"ids": [first]}
    assert [e["id"] for e in alethia.call("list")["entries"]] == [second]
    gone = fault(lambda: alethia.call("show", id=first))
    assert gone["code"] == Fault.BAD_SCHEMA and gone["kind"] == "UnknownRecord"
    assert gone["exit_code"] == 66 and TEXT not in str(gone)
    assert [r["id"] for r in alethia.call("export")["records"]] == [second]
    assert alethia.call("forget", conversation="c2") == {"ids": [second]}
    assert alethia.call("list")["entries"] == []


def test_status_says_what_the_store_holds_and_whether_turns_are_recorded(
        alethia: Alethia) -> None:
    alethia.turn()
    status = alethia.call("sign")
    assert set(status) == set(memory.STATUS_FIELDS)
    assert status["records"] == 1 and status["unsigned"] == 0 and status["key_version"] == 1
    assert status["recording"] is True and len(status["public_key"]) == 64
    assert status["durability"]["records"] == 64
    assert alethia.runner.ctx.status_text == "open"


def test_pages_follow_limit_and_next(alethia: Alethia) -> None:
    ids = [alethia.turn(f"c{i}", user=f"question {i}") for i in range(5)]
    first = alethia.call("list", limit=2)
    assert [e["id"] for e in first["entries"]] == ids[:2] and first["next"] == ids[1]
    rest = alethia.call("list", limit=2, after=first["next"])
    assert [e["id"] for e in rest["entries"]] == ids[2:4]
    last = alethia.call("export", limit=2, after=rest["next"])
    assert [r["id"] for r in last["records"]] == ids[4:] and last["next"] is None
    bad = fault(lambda: alethia.call("list", limit=0))
    assert bad["code"] == Fault.BAD_SCHEMA and "limit" in bad["message"]


def test_largest_turns_are_exported_one_an_envelope_under_the_bus_limit(
        alethia: Alethia) -> None:
    """Each page stays under the alethia bus's envelope limit: the measured envelope of a
    largest turn (docs/protocol.md, alethia)."""
    overhead = len('{"conversation":"c","persona":"default","user":"","answer":"'
                   f'{ANSWER}","interventions":null,"feedback":null}}')
    largest = "x" * (MAX_RECORD_BYTES - overhead)
    ids = [alethia.turn("c", user=largest), alethia.turn("c", user=largest)]
    query = env_mod.query("test", memory.SERVICE, alethia.key.seal(
        REQUEST, memory.OPS["export"].request()), reply_to=alethia.client.replies.name)
    alethia.bus.sender(memory.SERVICE).send(query)
    answer = wait_for(lambda: alethia.client.replies.recv(0.1), 10, "the export's answer")
    assert isinstance(answer, env_mod.Envelope) and answer.type == "response"
    size = len(env_mod.encode(answer))
    assert size <= bus_mod.ALETHIA_BUS.max_envelope, size
    print(f"largest turn's export envelope: {size} bytes")
    page = alethia.key.open(REPLY, answer.payload)
    assert [r["id"] for r in page.fields["records"]] == ids[:1] and page.fields["next"] == ids[0]
    page.wipe()
    too_large = fault(lambda: alethia.turn("c", user=largest + "y"))
    assert too_large["kind"] == "RecordTooLarge" and too_large["exit_code"] == 65
    assert alethia.call("status")["records"] == 2  # not written


def test_an_unsealed_payload_is_refused_counted_and_the_loop_goes_on(alethia: Alethia) -> None:
    refused = fault(lambda: alethia.raw({"op": "append", "conversation": "c", "user": TEXT,
                                         "answer": ANSWER}))
    assert refused["code"] == Fault.BAD_SCHEMA and refused["kind"] == "SealError"
    assert refused["exit_code"] == 65 and TEXT not in refused["message"]
    stats = alethia.bus.component_stats(memory.SERVICE)
    assert stats.get()["bad_schema"] == 1
    assert alethia.call("status")["records"] == 0
    assert alethia.turn().endswith("/1")  # still serving


@pytest.mark.parametrize("how", ["another stack's key", "coven's hop"])
def test_a_payload_sealed_with_another_key_or_for_another_hop_is_refused(
        in_memory: Alethia, how: str) -> None:
    fields = memory.OPS["append"].request(conversation="c", user=TEXT, answer=ANSWER)
    if how == "another stack's key":
        other = BusKey(bytearray(sodium.random_bytes(32)))
        payload = other.seal(REQUEST, fields)
    else:
        payload = in_memory.key.seal("coven/request", fields)
    refused = fault(lambda: in_memory.raw(payload))
    assert refused["code"] == Fault.BAD_SCHEMA and refused["kind"] == "SealError"
    assert in_memory.call("status")["records"] == 0


def test_nothing_of_a_turn_is_in_the_clear_in_dev_shm_or_the_log(alethia: Alethia) -> None:
    record_id = alethia.turn()
    assert alethia.call("show", id=record_id)["record"]["body"]["user"] == TEXT
    alethia.call("export")
    for segment in segment_paths(alethia.stack):
        raw = Path(segment).read_bytes()
        for text in (TEXT, ANSWER):
            assert text.encode() not in raw, segment
            assert base64.b64encode(text.encode())[:16] not in raw
    logged = alethia.log.getvalue()
    assert "alethia" in logged and TEXT not in logged and ANSWER not in logged


def test_a_locked_vault_is_waited_for_and_said(tmp_path: Path) -> None:
    keys = GivenKeys()
    keys.locked = 10**6
    alethia = Alethia(tmp_path, MemoryStores(), keys)
    try:
        assert "waiting for coven: the vault is locked" in alethia.runner.ctx.status_text
        waiting = fault(lambda: alethia.call("status"))
        assert waiting["kind"] == "StoreClosed" and waiting["exit_code"] == 69
        asked = keys.loads
        wait_for(lambda: keys.loads > asked, 5, "alethia to ask for its keys again")
        assert alethia.log.getvalue().count("memory keys not available yet") == 1  # said once
        keys.locked = 0  # the person unlocked the vault
        wait_for(lambda: alethia.runner.ctx.status_text == "open", 5, "the store to open")
        assert alethia.turn().endswith("/1")
    finally:
        alethia.close()


def test_a_key_that_does_not_open_the_store_is_a_clear_error_until_reload(
        tmp_path: Path) -> None:
    stores = MemoryStores()
    keys = GivenKeys()
    alethia = Alethia(tmp_path, stores, keys)
    try:
        alethia.turn()
        alethia.stop_daemon()
        good = keys.memory[1]
        keys.memory[1] = sodium.random_bytes(32)  # coven's vault was replaced
        alethia.start()
        assert alethia.runner.ctx.status_text.startswith("unusable: WrongKey")
        wrong = fault(lambda: alethia.call("list"))
        assert wrong["kind"] == "WrongKey" and wrong["exit_code"] == 77
        keys.memory[1] = good
        assert alethia.call("reload")["records"] == 1
        assert alethia.runner.ctx.status_text == "open"
    finally:
        alethia.close()


ASKER = """
import os, sys
from runa.components import load_config
from runa.memory_client import connect
from runa.paths import Paths
stack = os.environ["RUNA_STACK"]
paths = Paths.for_stack(stack, os.environ)
with connect(load_config(paths, os.environ), paths, stack) as client:
    for op in sys.argv[1:-1]:
        client.call(op, **({"id": sys.argv[-1]} if op == "forget" else {}))
print(os.getpid())
"""


def test_who_asked_to_read_out_or_change_the_whole_memory_is_logged(
        in_memory: Alethia) -> None:
    """Another process asks: its pid, as the kernel says, is logged with the op's name."""
    record_id = in_memory.turn()
    env = {**in_memory.env, "PYTHONPATH": os.pathsep.join(sys.path)}
    asked = subprocess.run([sys.executable, "-c", ASKER, "list", "export", "forget",
                            "release", "reload", record_id], env=env, capture_output=True,
                           text=True, timeout=60, check=True)
    pid = asked.stdout.strip()
    logged = [line for line in in_memory.log.getvalue().splitlines() if " asked by pid " in line]
    assert [line.split()[0] for line in logged] == ["export", "forget", "release", "reload"]
    assert all(f"asked by pid {pid} (reply queue held by pid {pid})" in line for line in logged)
    assert TEXT not in in_memory.log.getvalue()


@pytest.mark.parametrize("offset", [3600.0, None])
def test_a_turn_time_in_the_future_or_before_1970_is_refused(in_memory: Alethia,
                                                              offset: float | None) -> None:
    when = -1.0 if offset is None else time.time() + offset
    refused = fault(lambda: in_memory.turn(time=when))
    assert refused["code"] == Fault.BAD_SCHEMA and "'time'" in refused["message"]
    assert in_memory.call("status")["records"] == 0
    assert in_memory.turn(time=time.time() - 3600).endswith("/1")  # a past turn is kept


def test_rotate_wraps_the_days_under_the_next_version(in_memory: Alethia) -> None:
    in_memory.turn()
    assert in_memory.call("rotate") == {"key_version": 2}
    assert sorted(in_memory.keys.memory) == [1, 2]
    store = next(iter(in_memory.open_store.opened.values()))
    assert store.rotated == [2] and in_memory.call("status")["key_version"] == 2


def test_appends_are_flushed_within_the_bound_and_on_stop(tmp_path: Path) -> None:
    """With nothing else to do the loop would wait a whole second (no watchdog, a slow
    heartbeat); the store's 200 ms bound cuts the wait short."""
    alethia = Alethia(tmp_path, MemoryStores(), heartbeat_s=5.0)
    try:
        alethia.turn()
        appended = time.monotonic()
        store = next(iter(alethia.open_store.opened.values()))
        wait_for(lambda: store.flushes >= 1, 2, "the batch to be flushed")
        assert time.monotonic() - appended < 0.7
        alethia.turn()
        alethia.stop_daemon()
        assert store.closed and not store.pending
    finally:
        alethia.close()


def test_a_full_disk_is_a_clear_error_and_the_daemon_goes_on(in_memory: Alethia) -> None:
    store_of = in_memory.open_store
    in_memory.turn()
    store = next(iter(store_of.opened.values()))
    store.full = True
    full = fault(lambda: in_memory.turn())
    assert full["code"] == Fault.INTERNAL_ERROR and full["kind"] == "StoreFull"
    assert full["exit_code"] == 74 and TEXT not in full["message"]
    store.full = False
    assert in_memory.turn().endswith("/2")


def test_the_real_store_keeps_a_turn_across_a_restart(tmp_path: Path) -> None:
    alethia = Alethia(tmp_path, real_store)
    try:
        record_id = alethia.turn()
        alethia.stop_daemon()  # flushes and signs
        alethia.start()
        assert [e["id"] for e in alethia.call("list")["entries"]] == [record_id]
        assert alethia.call("show", id=record_id)["record"]["body"]["user"] == TEXT
        written = b"".join(p.read_bytes() for p in (alethia.paths.data / "alethia").rglob("*")
                           if p.is_file())
        assert TEXT.encode() not in written and ANSWER.encode() not in written
    finally:
        alethia.close()


def test_a_store_released_is_restored_beside_the_running_daemon_and_reloaded(
        tmp_path: Path) -> None:
    alethia = Alethia(tmp_path, real_store)
    root = alethia.paths.data / "alethia"
    try:
        kept = alethia.turn("c1")
        alethia.call("sign")
        snapshot(root, tmp_path / "memory.tar")
        alethia.turn("c2")
        with pytest.raises(StoreError):  # the daemon holds the store's lock
            restore(tmp_path / "memory.tar", root)
        assert alethia.call("release")["records"] == 2
        closed = fault(lambda: alethia.call("list"))
        assert closed["kind"] == "StoreClosed" and "reload" in closed["message"]
        assert alethia.runner.ctx.status_text.startswith("closed: ")
        time.sleep(0.5)  # it does not open the store again on its own
        assert restore(tmp_path / "memory.tar", root).ok
        assert alethia.call("reload")["records"] == 1
        assert [e["id"] for e in alethia.call("list")["entries"]] == [kept]
        assert alethia.runner.ctx.status_text == "open"
    finally:
        alethia.close()


def slow_store(root: Path, keys: Keys) -> Store:
    return Store.open(root, keys, durability=Durability(records=64, ms=400))


def day_indices(root: Path) -> set[str]:
    """The ids whose lines are in the day files on disk now."""
    written = set()
    for path in (root / "days").glob("*.log"):
        for line in dayfile.scan(path.read_bytes()).records():
            if line.fields is not None:
                written.add(f"{path.stem}/{line.fields['i']}")
    return written


def test_an_append_is_answered_only_once_its_line_is_on_disk(tmp_path: Path) -> None:
    alethia = Alethia(tmp_path, slow_store, heartbeat_s=5.0)
    root = alethia.paths.data / "alethia"
    try:
        for _ in range(3):
            sent = time.monotonic()
            record_id = alethia.turn()
            assert record_id in day_indices(root)  # written when the answer came
            assert time.monotonic() - sent >= 0.3  # held for its batch (400 ms), no longer
    finally:
        alethia.close()


def send_appends(alethia: Alethia, count: int) -> list[env_mod.Envelope]:
    """``count`` appends sent at once (one batch); their answers, in order."""
    for n in range(count):
        query = env_mod.query("test", memory.SERVICE, alethia.key.seal(
            REQUEST, memory.OPS["append"].request(conversation="c", persona="default",
                                                 user=f"{TEXT} {n}", answer=ANSWER)),
            reply_to=alethia.client.replies.name)
        alethia.bus.sender(memory.SERVICE).send(query)
    answers: list[env_mod.Envelope] = []
    while len(answers) < count:
        answer = wait_for(lambda: alethia.client.replies.recv(0.1), 10, "an append's answer")
        assert isinstance(answer, env_mod.Envelope)
        answers.append(answer)
    return answers


def test_a_full_disk_at_the_batch_write_names_each_id_and_the_daemon_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real store, ENOSPC injected at its write: each waiting client is told its turn was
    not written, by id; the daemon keeps serving and its status says what happened."""
    alethia = Alethia(tmp_path, real_store)
    try:
        kept = alethia.turn()
        day = kept.split("/")[0]

        def full(fd: int, data: bytes) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(files, "_write_all", full)
        answers = send_appends(alethia, 3)
        assert all(a.type == "error" for a in answers)
        faults = [a.payload for a in answers]
        assert {f["kind"] for f in faults} == {"StoreFull"}
        assert {f["exit_code"] for f in faults} == {74}
        named = sorted(f["message"].split()[1] for f in faults)
        assert named == [f"{day}/2", f"{day}/3", f"{day}/4"]
        assert all(TEXT not in f["message"] for f in faults)
        assert alethia.thread.is_alive()
        assert "the last write failed: StoreFull" in alethia.runner.ctx.status_text
        monkeypatch.undo()
        again = alethia.turn()
        assert again == f"{day}/2"  # never given to a client before: it names this turn now
        assert alethia.runner.ctx.status_text == "open"
        assert [e["id"] for e in alethia.call("list")["entries"]] == [kept, again]
    finally:
        alethia.close()


def test_a_store_that_cannot_be_opened_is_released_for_a_restore(tmp_path: Path) -> None:
    """Keys that do not open the store: the daemon holds no lock, so release answers at once
    and a snapshot can be put back while it runs."""
    keys = GivenKeys()
    alethia = Alethia(tmp_path, real_store, keys)
    root = alethia.paths.data / "alethia"
    try:
        kept = alethia.turn()
        alethia.call("sign")
        snapshot(root, tmp_path / "memory.tar")
        alethia.stop_daemon()
        good = keys.memory[1]
        keys.memory[1] = sodium.random_bytes(32)
        alethia.start()
        assert alethia.runner.ctx.status_text.startswith("unusable: WrongKey")
        released = alethia.call("release")
        assert released["records"] is None and released["recording"] is True
        assert restore(tmp_path / "memory.tar", root).ok
        keys.memory[1] = good
        assert alethia.call("reload")["records"] == 1
        assert [e["id"] for e in alethia.call("list")["entries"]] == [kept]
    finally:
        alethia.close()


def test_more_chats_than_eight_record_at_once(in_memory: Alethia) -> None:
    """Each chat holds a reply queue on the alethia bus for its life: twelve at once (the
    bus had 8 channels) all record their turns."""
    notices: list[str] = []
    recorders = [TurnRecorder(lambda n=n: MemoryClient(in_memory.bus, in_memory.key,
                                                       f"chat-{n}"), notices.append)
                 for n in range(12)]
    try:
        assert all(recorder.check() for recorder in recorders)  # every reply queue open
        ids = [recorder.record(Turn("c", f"{TEXT} {n}", ANSWER))
               for n, recorder in enumerate(recorders)]
        assert all(ids) and len(set(ids)) == 12 and notices == []
    finally:
        for recorder in recorders:
            recorder.close()
