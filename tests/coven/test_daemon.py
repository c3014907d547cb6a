"""coven's daemon as ``runa daemon coven``, a real child of the test process (which plays the
supervisor, coven's parent, so it is "gilgul" here), on a private stack: sealed requests and
replies, the gilgul-only rule against a process that forges ``from: gilgul`` or names
gilgul's reply queue, a replayed request id, payloads that
are not sealed, a locked passphrase vault, an altered vault, no core dumps, and no value in
its log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import isolated_env, remove_segments, wait_for

from runa import stackbus as bus_mod
from runa.client import ServiceClient, ServiceFault
from runa.components import load_config
from runa.coven import Location, Vault
from runa.crypto.sealed import BusKey, Opened, key_path
from runa.paths import Paths
from runa.protocol import secrets
from runa.splinter import Fault
from runa.splinter import envelope as env_mod

from .vaults import FAST

REQUEST = secrets.SEALED_CONTEXTS["coven_request"]
REPLY = secrets.SEALED_CONTEXTS["coven_reply"]
VALUE = b"s3cr3t-canary-7f2a9c"  # searched for in the daemon's log
PASSPHRASE = b"correct horse battery staple"

# A process other than coven's parent: it holds its own reply queue and claims to be gilgul.
FORGER = """
import json, sys
from runa.client import ServiceClient, ServiceFault
from runa.crypto.sealed import BusKey
from runa.splinter import Bus
from pathlib import Path
bus = Bus.open(sys.argv[1])
key = BusKey.load_or_create(Path(sys.argv[2]))
client = ServiceClient(bus, "coven", "gilgul")
payload = key.seal("coven/request", {"op": "get", "name": "api.token", "for": "gilgul",
                                     "pid": 1})
try:
    client.call(payload, idle_timeout=10)
    print(json.dumps({"answered": True}))
except ServiceFault as fault:
    print(json.dumps(fault.payload))
"""

# A process other than coven's parent that names the parent's (gilgul's) reply queue in
# ``reply_to`` and claims its own request: the kernel names it as the sender.
BORROWER = """
import sys, time
from runa.crypto.sealed import BusKey
from runa.splinter import Bus
from runa.splinter import envelope as env_mod
from pathlib import Path
bus = Bus.open(sys.argv[1])
key = BusKey.load_or_create(Path(sys.argv[2]))
payload = key.seal("coven/request", {"op": "rm", "name": "api.token", "for": "person",
                                     "pid": 1})
query = env_mod.query("gilgul", "coven", payload, reply_to=sys.argv[3], ttl_ms=10000)
with bus.claim_request(query.id):
    bus.sender("coven").send(query)
    time.sleep(float(sys.argv[4]))
print(query.id)
"""


def answer_to(replies: Any, query: env_mod.Envelope, wait: float = 10) -> dict[str, Any]:
    """The final answer to ``query`` read from ``replies`` (ServiceFault for an error)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        envelope = replies.recv(0.1)
        if envelope is None or envelope.id != query.id:
            continue
        if envelope.type == "error":
            raise ServiceFault("coven", envelope.payload)
        if envelope.eof:
            return dict(envelope.payload)
    raise AssertionError(f"no answer to {query.id}")


class Coven:
    """``runa daemon coven`` started by the test, on a stack of its own."""

    def __init__(self, root: Path) -> None:
        self.env = {**isolated_env(root), "RUNA_LOG_TARGET": "stderr", "RUNA_LOG_LEVEL": "debug"}
        self.stack = self.env["RUNA_STACK"]
        self.paths = Paths.for_stack(self.stack, self.env)
        self.config = load_config(self.paths, self.env)
        self.location = Location.for_stack(self.paths)
        self.log = root / "coven.log"
        bus_mod.ensure_buses(self.config, self.stack)
        self.main = bus_mod.connect(self.config, self.stack)
        self.bus = bus_mod.connect(self.config, self.stack, "coven")
        self.key = BusKey.load_or_create(key_path(self.paths.runtime))
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = ServiceClient(self.bus, "coven", "gilgul")

    def start(self) -> Coven:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "runa", "daemon", "coven"],
                                         env=self.env, stdout=subprocess.DEVNULL, stderr=log)
        wait_for(lambda: self.main.get("coven:health") or self.proc.poll() is not None, 20,
                 "coven's first heartbeat")
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            assert self.proc.wait(10) == 0, self.log.read_text()
        self.client.close()
        self.key.close()
        self.bus.close()
        self.main.close()
        remove_segments(self.env)

    def query(self, payload: dict[str, Any]) -> env_mod.Envelope:
        return env_mod.query("gilgul", "coven", payload, reply_to=self.client.reply_name,
                             ttl_ms=10_000)

    def raw(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Sent as gilgul does: the request's id claimed until its answer came."""
        query = self.query(payload)
        with self.bus.claim_request(query.id):
            self.bus.sender("coven").send(query)
            return answer_to(self.client.replies, query)

    def call(self, op: str, value: bytes = b"", **fields: Any) -> Opened:
        payload = self.key.seal(REQUEST, {"op": op, "for": "tieto", "pid": 4242, **fields},
                                value)
        return self.key.open(REPLY, self.raw(payload))

    def fault(self, op: str, value: bytes = b"", **fields: Any) -> ServiceFault:
        with pytest.raises(ServiceFault) as caught:
            self.call(op, value, **fields)
        return caught.value

    def logged(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def coven(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coven]:
    daemon = Coven(tmp_path_factory.mktemp("coven")).start()
    yield daemon
    daemon.stop()


def test_set_get_list_rm_through_sealed_requests(coven: Coven) -> None:
    stored = coven.call("set", VALUE, name="api.token")
    assert stored.fields == {"name": "api.token", "stored": True}
    got = coven.call("get", name="api.token")
    assert got.fields == {"name": "api.token"} and bytes(got.value) == VALUE
    coven.call("set", b"x" * 10, name="other.key")
    listed = coven.call("list").fields["secrets"]
    assert [(s["name"], s["size"]) for s in listed] == [("api.token", len(VALUE)),
                                                       ("other.key", 10)]
    assert coven.call("rm", name="other.key").fields["removed"] is True
    gone = coven.fault("get", name="other.key")
    assert (gone.code, gone.payload["kind"], gone.exit_code) == \
        (Fault.BAD_SCHEMA, "UnknownSecret", 66)
    logged = coven.logged()
    assert "secret get api.token by tieto: ok" in logged  # the audit event of a grant
    assert "RUNA_EVENT=secret_access" in logged and "RUNA_REQUESTER_PID=4242" in logged


def test_create_makes_a_value_of_the_asked_size_once_then_returns_it(coven: Coven) -> None:
    made = coven.call("create", name="made.key", size=48)
    assert made.fields == {"name": "made.key", "created": True} and len(made.value) == 48
    again = coven.call("create", name="made.key", size=16)  # the size of a made one stays
    assert again.fields == {"name": "made.key", "created": False}
    assert bytes(again.value) == bytes(made.value)
    assert bytes(coven.call("get", name="made.key").value) == bytes(made.value)
    default = coven.call("create", name="made.default")
    assert len(default.value) == 32 and bytes(default.value) != bytes(made.value)
    coven.call("set", VALUE, name="made.by_hand")  # a value a person set is handed back
    assert bytes(coven.call("create", name="made.by_hand").value) == VALUE
    logged = coven.logged()
    assert "secret create made.key by tieto: created" in logged  # audited, once made
    assert "secret create made.key by tieto: ok" in logged  # and when handed back
    assert made.value.hex() not in logged and VALUE.decode() not in logged


@pytest.mark.parametrize("size", [15, 4097, 0, -1])
def test_create_refuses_a_size_out_of_range(coven: Coven, size: int) -> None:
    refused = coven.fault("create", name="bad.size", size=size)
    assert (refused.code, refused.exit_code) == (Fault.BAD_SCHEMA, 65)
    assert "'size' must be 16 to 4096 bytes" in refused.payload["message"]
    assert coven.fault("get", name="bad.size").payload["kind"] == "UnknownSecret"


def test_status_and_rotate_keep_every_secret(coven: Coven) -> None:
    coven.call("set", VALUE, name="rotated.one")
    before = coven.call("status").fields
    assert before["state"] == "unlocked" and before["mode"] == "keyfile"
    assert before["identity"] == "supervisor" and before["secrets"] >= 1
    rotated = coven.call("rotate").fields["key_id"]
    assert rotated != before["key_id"] and coven.call("status").fields["key_id"] == rotated
    assert bytes(coven.call("get", name="rotated.one").value) == VALUE


def test_a_largest_secret_fits_one_envelope(coven: Coven) -> None:
    value = bytes(range(256)) * 256  # 64 KiB, the most a secret may hold
    coven.call("set", value, name="big.one")
    reply = coven.raw(coven.key.seal(REQUEST, {"op": "get", "name": "big.one", "for": "tieto",
                                               "pid": 1}))
    size = len(env_mod.encode(env_mod.response(
        env_mod.query("gilgul", "coven", {}, reply_to=coven.client.reply_name), "coven",
        reply, seq=0, eof=True)))
    assert size <= bus_mod.COVEN_BUS.max_envelope, size
    assert bytes(coven.key.open(REPLY, reply).value) == value


def test_lock_then_unlock_a_key_file_vault(coven: Coven) -> None:
    coven.call("set", VALUE, name="lock.test")
    assert coven.call("lock").fields["state"] == "locked"
    locked = coven.fault("get", name="lock.test")
    assert (locked.code, locked.payload["kind"], locked.exit_code) == \
        (Fault.INTERNAL_ERROR, "VaultLocked", 69)
    assert coven.call("unlock").fields["state"] == "unlocked"
    assert bytes(coven.call("get", name="lock.test").value) == VALUE


def test_a_request_from_another_process_is_refused_and_logged(coven: Coven) -> None:
    """The forger is the test's child too, so a sibling of coven: not its parent."""
    coven.call("set", VALUE, name="api.token")
    forger = subprocess.run(
        [sys.executable, "-c", FORGER, bus_mod.path(coven.config, coven.stack, "coven"),
         str(key_path(coven.paths.runtime))], env=coven.env, capture_output=True, timeout=30,
        check=True)
    answer = json.loads(forger.stdout)
    assert answer["code"] == Fault.NOT_AUTHORIZED and answer["name"] == "NOT_AUTHORIZED"
    assert "coven answers gilgul only" in answer["message"]
    assert VALUE.decode() not in forger.stdout.decode()
    refusals = [line for line in coven.logged().splitlines()
                if "RUNA_EVENT=secret_refused" in line]
    assert refusals, coven.logged()
    assert "RUNA_CLAIMED_FROM=gilgul" in refusals[-1] and "RUNA_OP=get" in refusals[-1]
    assert "RUNA_SECRET=api.token" in refusals[-1] and "RUNA_HOLDER_PID=" in refusals[-1]


def refusals(coven: Coven) -> list[str]:
    return [line for line in coven.logged().splitlines() if "RUNA_EVENT=secret_refused" in line]


def test_a_request_naming_gilgul_s_reply_queue_is_refused_and_logged(coven: Coven) -> None:
    """The borrower sends ``rm`` for "person" with ``reply_to`` = gilgul's own queue (which
    gilgul holds): coven judges the sender, not who receives the answer."""
    coven.call("set", VALUE, name="api.token")
    before = len(refusals(coven))
    borrower = subprocess.Popen(
        [sys.executable, "-c", BORROWER, bus_mod.path(coven.config, coven.stack, "coven"),
         str(key_path(coven.paths.runtime)), coven.client.reply_name, "3"],
        env=coven.env, stdout=subprocess.PIPE)
    wait_for(lambda: len(refusals(coven)) > before, 10, "the refusal's record")
    borrower.communicate(timeout=30)
    refused = refusals(coven)[-1]
    assert "RUNA_OP=rm" in refused and "RUNA_SECRET=api.token" in refused
    assert f"was sent by pid {borrower.pid}, not by pid {os.getpid()}" in refused, refused
    assert f"RUNA_HOLDER_PID={os.getpid()}" in refused
    assert "secret rm api.token by person" not in coven.logged()  # no act, no audit of one
    assert bytes(coven.call("get", name="api.token").value) == VALUE


def test_a_replayed_request_id_is_refused_and_logged(coven: Coven) -> None:
    """A copy of a request read from the ring, sent again while its sender still waits (so
    the sender still claims it): coven serves an id once and records the copy."""
    first = coven.query(coven.key.seal(REQUEST, {"op": "set", "name": "replay.me",
                                                  "for": "tieto", "pid": 1}, b"first"))
    with coven.bus.claim_request(first.id):
        coven.bus.sender("coven").send(first)
        answer_to(coven.client.replies, first)
        coven.call("set", b"second", name="replay.me")
        coven.bus.sender("coven").send(first)  # the copy
        with pytest.raises(ServiceFault) as caught:
            answer_to(coven.client.replies, first)
    assert caught.value.code == Fault.NOT_AUTHORIZED
    assert "already read: a replay" in refusals(coven)[-1]
    assert bytes(coven.call("get", name="replay.me").value) == b"second"


def test_an_unclaimed_request_is_refused(coven: Coven) -> None:
    """Nobody claims the request (sent without ``claim_request``): the kernel names no
    sender, so coven does not act."""
    query = coven.query(coven.key.seal(REQUEST, {"op": "status", "for": "tieto", "pid": 1}))
    coven.bus.sender("coven").send(query)
    with pytest.raises(ServiceFault) as caught:
        answer_to(coven.client.replies, query)
    assert (caught.value.code, caught.value.exit_code) == (Fault.NOT_AUTHORIZED, 77)
    assert caught.value.payload["kind"] == "NotGilgul"
    assert "sent by no process the kernel can name" in refusals(coven)[-1]


def test_a_reply_queue_nobody_holds_gets_no_answer_but_a_record(coven: Coven) -> None:
    payload = coven.key.seal(REQUEST, {"op": "status", "for": "tieto", "pid": 1})
    query = env_mod.query("gilgul", "coven", payload, reply_to="nobody.here")
    coven.bus.sender("coven").send(query)
    wait_for(lambda: "no live process consumes the reply queue" in coven.logged(), 10,
             "the refusal's record")


@pytest.mark.parametrize(("payload", "says"), [
    ({"op": "get", "name": "api.token"}, "has no 'sealed' string"),
    ({"sealed": "not base64!"}, "'sealed' is not base64"),
    ({"sealed": "AAAA" * 20}, "not sealed with this stack's bus key"),
])
def test_a_payload_not_sealed_for_coven_is_bad_schema(coven: Coven, payload: dict[str, Any],
                                                      says: str) -> None:
    with pytest.raises(ServiceFault) as caught:
        coven.raw(payload)
    assert caught.value.code == Fault.BAD_SCHEMA and says in str(caught.value)
    assert (caught.value.payload["kind"], caught.value.payload["exit_code"]) == ("SealError", 65)
    assert coven.call("status").fields["state"] == "unlocked"  # and it goes on


def test_a_reply_sealed_for_the_other_direction_is_bad_schema(coven: Coven) -> None:
    wrong = coven.key.seal(REPLY, {"op": "status", "for": "tieto", "pid": 1})
    with pytest.raises(ServiceFault) as caught:
        coven.raw(wrong)
    assert caught.value.code == Fault.BAD_SCHEMA
    counted = coven.bus.component_stats("coven").get()["bad_schema"]
    assert counted >= 1


@pytest.mark.parametrize(("fields", "says", "exit_code"), [
    ({"op": "fetch"}, "unknown op 'fetch'", 65),
    ({"op": "get", "name": "api.token", "pid": 1}, "get needs 'for'", 65),
    ({"op": "get", "name": "Not A Name", "for": "tieto", "pid": 1}, "secret name", 64),
])
def test_sealed_fields_it_cannot_use_are_bad_schema(coven: Coven, fields: dict[str, Any],
                                                    says: str, exit_code: int) -> None:
    with pytest.raises(ServiceFault) as caught:
        coven.raw(coven.key.seal(REQUEST, fields))
    assert caught.value.code == Fault.BAD_SCHEMA and says in str(caught.value)
    assert caught.value.payload["exit_code"] == exit_code  # sent, as docs/protocol.md says


def test_it_cannot_be_dumped_and_no_value_reaches_its_log(coven: Coven) -> None:
    coven.call("set", VALUE, name="canary.one")
    assert bytes(coven.call("get", name="canary.one").value) == VALUE
    assert coven.call("status").fields["dumpable"] == 0
    logged = coven.logged()
    assert "canary.one" in logged  # the log is there, and names the secret
    assert VALUE.decode() not in logged


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Coven]:
    """A passphrase vault (cheap Argon2id parameters, in its header) holding one secret."""
    daemon = Coven(tmp_path)
    vault = Vault(daemon.location, argon2=FAST)
    vault.create(PASSPHRASE)
    vault.set("api.token", VALUE)
    vault.lock()
    yield daemon.start()
    daemon.stop()


def test_a_passphrase_vault_starts_locked_and_says_so(locked: Coven) -> None:
    status = locked.call("status").fields
    assert (status["state"], status["mode"], status["secrets"]) == \
        ("locked", "passphrase", None)
    assert status["argon2"] == {"opslimit": FAST.opslimit, "memlimit": FAST.memlimit}
    waiting = locked.fault("get", name="api.token")
    assert (waiting.code, waiting.payload["kind"], waiting.exit_code) == \
        (Fault.INTERNAL_ERROR, "VaultLocked", 69)
    assert "locked" in str(waiting)
    health = json.loads(locked.main.get("coven:health") or b"{}")
    assert str(health.get("status", "")).startswith("locked (passphrase)")
    wrong = locked.fault("unlock", b"not it")
    assert (wrong.payload["kind"], wrong.exit_code) == ("WrongPassphrase", 77)
    assert locked.call("status").fields["state"] == "locked"
    assert locked.call("unlock", PASSPHRASE).fields["state"] == "unlocked"
    assert bytes(locked.call("get", name="api.token").value) == VALUE
    assert PASSPHRASE.decode() not in locked.logged()


def test_a_flipped_byte_is_named_and_the_file_left_alone(locked: Coven) -> None:
    locked.call("unlock", PASSPHRASE)
    vault = locked.location.vault
    data = bytearray(vault.read_bytes())
    data[len(data) // 2] ^= 0x01
    vault.write_bytes(data)
    altered = locked.fault("get", name="api.token")
    assert (altered.code, altered.payload["kind"], altered.exit_code) == \
        (Fault.INTERNAL_ERROR, "VaultAltered", 65)
    assert str(vault) in str(altered)
    set_anyway = locked.fault("set", b"new", name="api.token")
    assert set_anyway.payload["kind"] == "VaultAltered"
    time.sleep(0.1)
    assert vault.read_bytes() == bytes(data)
