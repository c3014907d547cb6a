"""gilgul's secrets broker: who may read what, decided by what the kernel says, not ``from``.

Real buses and processes: each requester is a process of its own (the kernel names it as
the holder of its reply queue), placed in the supervisor's child table as a component or
left out (the person); coven is the fake one (tests/fake_coven.py).
"""

from __future__ import annotations

import contextlib
import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_coven import FakeVault
from secret_stack import MP, SecretStack, secret_stack

from runa.crypto.sealed import BusKey
from runa.gilgul import Running, SecretsBroker
from runa.protocol import secret_wire as wire
from runa.protocol.secrets import BROKER, COVEN, PERSON, SEALED_CONTEXTS
from runa.secret_client import SecretFault, SecretsClient
from runa.splinter import Bus, Fault
from runa.splinter import envelope as env_mod

SECRETS = {"alethia.memory_key": b"k3y\x00\xff-alethia", "api.key": b"api-VALUE-123"}


def _ask(main_path: str, key_file: str, op: str, name: str | None, value: bytes,
         sender: str, go: Any, results: Any, extra: dict[str, Any] | None = None) -> None:
    key = BusKey.load_or_create(Path(key_file))
    with Bus.open(main_path) as bus, SecretsClient(bus, key, client_name=sender) as client:
        go.wait(10)
        try:
            answer = client.call(op, name=name, value=value, extra=extra, timeout=5)
            results.put(("ok", answer.fields, bytes(answer.value)))
        except SecretFault as fault:
            results.put(("fault", fault.payload, b""))
        except Exception as error:
            results.put(("error", {"message": repr(error)}, b""))


def ask(stack: SecretStack, broker: SecretsBroker, op: str, name: str | None = None,
        value: bytes = b"", *, component: str | None = None,
        sender: str = "runa-secret", extra: dict[str, Any] | None = None
        ) -> tuple[str, dict[str, Any], bytes, int]:
    """``op`` asked by a process of its own, as ``component`` (None: the person)."""
    go, results = MP.Event(), MP.Queue()
    child = MP.Process(target=_ask, args=(stack.main_path, str(stack.key_file), op, name,
                                          value, sender, go, results, extra))
    child.start()
    assert child.pid is not None
    if component is not None:
        stack.register(child.pid, component)
    go.set()
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            broker.serve(0.05)
            try:
                kind, fields, got = results.get_nowait()
                return kind, fields, got, child.pid
            except queue.Empty:
                continue
        raise AssertionError("no answer from the broker")
    finally:
        child.join(10)
        stack.table.pop(child.pid, None)


def asked_of_coven(stack: SecretStack) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            out.append(stack.asked.get(timeout=0.2))
        except queue.Empty:
            return out


@pytest.fixture
def stack(runa_env: dict[str, str]) -> Iterator[SecretStack]:
    with secret_stack(runa_env) as made:
        yield made


@pytest.fixture
def broker(stack: SecretStack) -> Iterator[SecretsBroker]:
    made = stack.broker()
    assert made.ready()
    yield made
    made.close()


def test_a_component_reads_what_its_entry_allows_and_nothing_else(
        stack: SecretStack, broker: SecretsBroker) -> None:
    stack.start_coven(FakeVault(secrets=SECRETS))
    kind, _, value, pid = ask(stack, broker, "get", "alethia.memory_key",
                              component="alethia")
    assert (kind, value) == ("ok", SECRETS["alethia.memory_key"])
    [forwarded] = asked_of_coven(stack)
    assert (forwarded["op"], forwarded["for"], forwarded["pid"], forwarded["from"]) == \
        ("get", "alethia", pid, "gilgul")

    kind, fault, _, pid = ask(stack, broker, "get", "api.key", component="alethia")
    assert kind == "fault"
    assert (fault["code"], fault[wire.EXIT_CODE]) == (Fault.NOT_AUTHORIZED, 77)
    assert "alethia may not read the secret 'api.key'" in fault["message"]
    assert asked_of_coven(stack) == []  # coven never heard of it
    [refused] = stack.events.named("secret_refused")
    said = {key: getattr(refused, key) for key in
            ("RUNA_OP", "RUNA_SECRET", "RUNA_REQUESTER", "RUNA_REQUESTER_PID")}
    assert said == {"RUNA_OP": "get", "RUNA_SECRET": "api.key", "RUNA_REQUESTER": "alethia",
                    "RUNA_REQUESTER_PID": pid}


def test_a_component_may_only_read_and_lists_only_its_own(stack: SecretStack,
                                                         broker: SecretsBroker) -> None:
    stack.start_coven(FakeVault(secrets=SECRETS))
    kind, fields, _, _ = ask(stack, broker, "list", component="alethia")
    assert kind == "ok"
    assert [e["name"] for e in fields[wire.SECRETS]] == ["alethia.memory_key"]
    kind, fields, _, _ = ask(stack, broker, "list")  # the person sees everything
    assert [e["name"] for e in fields[wire.SECRETS]] == ["alethia.memory_key", "api.key"]
    asked_of_coven(stack)
    for op, name in (("set", "alethia.memory_key"), ("rm", "alethia.memory_key"),
                     ("lock", None), ("rotate", None)):
        kind, fault, _, _ = ask(stack, broker, op, name, b"new-VALUE-456", component="alethia")
        assert (kind, fault["code"]) == ("fault", Fault.NOT_AUTHORIZED), op
    kind, fault, _, _ = ask(stack, broker, "get", "alethia.memory_key", component="splinfer")
    assert (kind, fault["code"]) == ("fault", Fault.NOT_AUTHORIZED)
    assert asked_of_coven(stack) == []
    assert len(stack.events.named("secret_refused")) == 5
    for record in stack.events.records:  # no value in a message or a field
        assert "VALUE" not in str(vars(record))


def test_a_component_creates_its_own_keys_and_nothing_else(stack: SecretStack,
                                                           broker: SecretsBroker) -> None:
    stack.start_coven(FakeVault(secrets=SECRETS))
    kind, made, value, pid = ask(stack, broker, "create", "alethia.signing_key",
                                 component="alethia", extra={"size": 48})
    assert (kind, made, len(value)) == ("ok", {"name": "alethia.signing_key", "created": True},
                                        48)
    [forwarded] = asked_of_coven(stack)
    assert (forwarded["op"], forwarded["name"], forwarded["size"], forwarded["for"],
            forwarded["pid"]) == ("create", "alethia.signing_key", 48, "alethia", pid)
    kind, again, same, _ = ask(stack, broker, "create", "alethia.signing_key",
                               component="alethia")
    assert (kind, again["created"], same) == ("ok", False, value)
    assert "size" not in asked_of_coven(stack)[0]  # coven's default applies

    kind, fault, _, _ = ask(stack, broker, "create", "api.key", component="alethia")
    assert kind == "fault" and fault["code"] == Fault.NOT_AUTHORIZED
    assert "alethia may not create the secret 'api.key'" in fault["message"]
    kind, fault, _, _ = ask(stack, broker, "create", "alethia.x", component="splinfer")
    assert kind == "fault" and fault["code"] == Fault.NOT_AUTHORIZED
    kind, fault, _, _ = ask(stack, broker, "create", "alethia.x", component="alethia",
                            extra={"size": 8})
    assert kind == "fault" and fault["code"] == Fault.BAD_SCHEMA
    assert "'size' must be 16 to 4096 bytes" in fault["message"]
    assert asked_of_coven(stack) == []  # coven heard of none of them

    kind, made, value, _ = ask(stack, broker, "create", "api.other")  # the person
    assert (kind, made["created"], len(value)) == ("ok", True, 32)


@pytest.mark.parametrize("forged", ["gilgul", PERSON, "coven"])
def test_a_forged_from_changes_nothing(stack: SecretStack, broker: SecretsBroker,
                                       forged: str) -> None:
    stack.start_coven(FakeVault(secrets=SECRETS))
    kind, fault, _, _ = ask(stack, broker, "get", "api.key", component="alethia",
                            sender=forged)
    assert (kind, fault["code"]) == ("fault", Fault.NOT_AUTHORIZED)
    [refused] = stack.events.named("secret_refused")
    assert refused.__dict__["RUNA_REQUESTER"] == "alethia"
    # and the other way round: a process that is no component is the person, whatever it says
    kind, _, value, _ = ask(stack, broker, "get", "api.key", sender="alethia")
    assert (kind, value) == ("ok", SECRETS["api.key"])
    assert [a["for"] for a in asked_of_coven(stack)] == [PERSON]


def test_a_locked_vault_is_relayed_so_a_component_can_wait(stack: SecretStack,
                                                          broker: SecretsBroker) -> None:
    stack.start_coven(FakeVault(locked=True, secrets=SECRETS))
    kind, fault, _, _ = ask(stack, broker, "get", "alethia.memory_key", component="alethia")
    assert kind == "fault" and wire.is_locked(fault)
    assert fault[wire.EXIT_CODE] == 69 and "runa secret unlock" in fault["message"]
    kind, fields, _, _ = ask(stack, broker, "status", component="alethia")
    assert (kind, fields[wire.STATE]) == ("ok", wire.LOCKED)


def test_coven_not_running_is_said_at_once(stack: SecretStack, broker: SecretsBroker) -> None:
    begun = time.monotonic()
    kind, fault, _, _ = ask(stack, broker, "status")
    assert kind == "fault"
    assert (fault[wire.EXIT_CODE], fault[wire.REASON]) == (69, wire.COVEN_NOT_RUNNING)
    assert fault["message"].startswith("coven is not running")
    assert not wire.is_locked(fault)
    assert time.monotonic() - begun < 3  # a process start and one answer, no waiting


def test_a_process_with_a_dead_coven_s_pid_is_not_coven(
        stack: SecretStack, broker: SecretsBroker) -> None:
    """The child table names coven by pid and start time: another process given the pid
    (here: a start time that is not the one recorded at spawn) gets no value."""
    pid = stack.start_coven(FakeVault())
    recorded = stack.table[pid]
    stack.table[pid] = Running(COVEN, recorded.start_time - 1)
    kind, fault, _, _ = ask(stack, broker, "set", "api.key", b"stolen-VALUE")
    assert kind == "fault" and fault[wire.EXIT_CODE] == 69
    assert f"held by pid {pid}" in fault["message"] and "not by coven" in fault["message"]
    assert asked_of_coven(stack) == []


def test_a_value_is_never_handed_to_a_process_that_took_coven_s_queue(
        stack: SecretStack, broker: SecretsBroker) -> None:
    pid = stack.start_coven(FakeVault())
    del stack.table[pid]  # consumes 'coven', but it is not the supervisor's coven
    kind, fault, _, _ = ask(stack, broker, "set", "api.key", b"stolen-VALUE")
    assert kind == "fault" and fault[wire.EXIT_CODE] == 69
    assert f"held by pid {pid}" in fault["message"] and "not by coven" in fault["message"]
    assert asked_of_coven(stack) == []


def _hold_queue(main_path: str, name: str, ready: Any, done: Any) -> None:
    """A process of the person's (no component) waiting on its reply queue, as a running
    ``runa secret`` does."""
    with Bus.open(main_path) as bus:
        bus.queue(name)
        ready.set()
        done.wait(20)


def _send_raw(main_path: str, key_file: str, fields: dict[str, Any], reply_to: str | None,
              copies: int, claim: bool, go: Any, results: Any) -> None:
    """Claims (unless not ``claim``) and sends one sealed request (``copies`` times, the
    same envelope: a replay) with ``reply_to`` (None: a queue of its own), and reports what
    came back to it."""
    key = BusKey.load_or_create(Path(key_file))
    with Bus.open(main_path) as bus:
        own = bus.queue(f"raw.{os.getpid()}")
        payload = key.seal(SEALED_CONTEXTS["broker_request"], fields)
        query = env_mod.query("runa-secret", BROKER, payload,
                              reply_to=reply_to or own.name, ttl_ms=10_000)
        go.wait(10)
        answers: list[str] = []
        with bus.claim_request(query.id) if claim else contextlib.nullcontext():
            for _ in range(copies):
                bus.sender(BROKER).send(query)
                deadline = time.monotonic() + (5 if reply_to is None else 1)
                while time.monotonic() < deadline:
                    envelope = own.recv(0.05)
                    if envelope is not None and envelope.id == query.id:
                        answers.append(envelope.type)
                        break
        results.put(answers)


def raw(stack: SecretStack, broker: SecretsBroker, fields: dict[str, Any], *,
        reply_to: str | None = None, copies: int = 1, claim: bool = True,
        component: str | None = None) -> tuple[list[str], int]:
    """A raw request sent by a process of its own; what it got back, and its pid."""
    go, results = MP.Event(), MP.Queue()
    child = MP.Process(target=_send_raw, args=(stack.main_path, str(stack.key_file), fields,
                                               reply_to, copies, claim, go, results))
    child.start()
    assert child.pid is not None
    if component is not None:
        stack.table[child.pid] = component
    go.set()
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            broker.serve(0.05)
            try:
                return results.get_nowait(), child.pid
            except queue.Empty:
                continue
        raise AssertionError("the raw sender did not finish")
    finally:
        child.join(10)
        stack.table.pop(child.pid, None)


def test_a_component_naming_the_person_s_reply_queue_is_refused(
        stack: SecretStack, broker: SecretsBroker) -> None:
    """alethia sends ``rm api.key`` with ``reply_to`` = a queue the person holds: the broker
    judges the sender (the kernel's claimant of the id), not who would receive the answer."""
    stack.start_coven(FakeVault(secrets=SECRETS))
    ready, done = MP.Event(), MP.Event()
    person = MP.Process(target=_hold_queue, args=(stack.main_path, "runa-secret.person",
                                                  ready, done))
    person.start()
    try:
        assert ready.wait(10)
        _, pid = raw(stack, broker, {"op": "rm", "name": "api.key"},
                     reply_to="runa-secret.person", component="alethia")
    finally:
        done.set()
        person.join(10)
    assert asked_of_coven(stack) == []  # coven never heard of it: nothing removed
    [refused] = stack.events.named("secret_refused")
    assert f"the request was sent by {pid}, not by pid {person.pid}" in refused.getMessage()


def test_an_unclaimed_request_is_refused(stack: SecretStack, broker: SecretsBroker) -> None:
    """Sent without a claim (the kernel names no sender): refused, even with its own queue."""
    stack.start_coven(FakeVault(secrets=SECRETS))
    answers, _ = raw(stack, broker, {"op": "get", "name": "api.key"}, claim=False)
    assert answers == ["error"]
    assert asked_of_coven(stack) == []
    [refused] = stack.events.named("secret_refused")
    assert "sent by no process the kernel can name" in refused.getMessage()


def test_a_replayed_request_id_is_refused_and_logged(stack: SecretStack,
                                                     broker: SecretsBroker) -> None:
    """The same envelope twice while its sender still claims it (a copy read from the
    ring): served once, the copy refused NOT_AUTHORIZED and recorded."""
    stack.start_coven(FakeVault(secrets=SECRETS))
    answers, _ = raw(stack, broker, {"op": "rm", "name": "api.key"}, copies=2)
    assert answers == ["response", "error"]
    assert [a["op"] for a in asked_of_coven(stack)] == ["rm"]  # once
    [refused] = stack.events.named("secret_refused")
    assert "already read: a replay" in refused.getMessage()
