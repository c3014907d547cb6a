"""The wire contract (runa/protocol/): declared once, built by clients, read by services,
and what docs/protocol.md says about it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from runa.client import ServiceClient, ServiceFault
from runa.protocol import doc, faults, splinfer, tieto
from runa.protocol.params import SamplingParams
from runa.protocol.payloads import PayloadError
from runa.splinter import Fault
from runa.splinter import envelope as env_mod
from runa.splinter.errors import Backpressure
from runa.tieto.ingests import IngestInfo, cancel_ingest

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_MD = ROOT / "docs" / "protocol.md"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n### ", start + len(heading))
    return text[start:end if end > 0 else len(text)]


def test_the_request_tables_in_the_doc_are_rendered_from_the_declarations() -> None:
    """Change an op without running 'python -m runa.protocol.doc docs/protocol.md' and
    this fails."""
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    assert text.count("<!-- requests: ") == len(doc.SERVICES)
    assert doc.render(text) == text


@pytest.mark.parametrize("service", sorted(doc.SERVICES))
def test_the_docs_answer_table_has_a_row_for_every_declared_op(service: str) -> None:
    section = _section(PROTOCOL_MD.read_text(encoding="utf-8"), f"### {service} (queue")
    rows = [line for line in section.splitlines() if line.startswith("| query ")]
    documented = [op for row in rows for op in re.findall(r"`(\w+)`", row.split("|")[1])]
    assert sorted(documented) == sorted(doc.SERVICES[service])


def test_the_docs_list_of_sampling_parameters_is_the_declared_one() -> None:
    section = _section(PROTOCOL_MD.read_text(encoding="utf-8"), "### splinfer (queue")
    listed = section[section.index("Inference options in `params`"):]
    listed = listed[:listed.index("); the")]
    names = re.findall(r"`(\w+)`", listed.split("(", 1)[1])
    assert names == [f.name for f in dataclasses.fields(SamplingParams)]


def test_the_docs_fault_table_gives_the_exit_status_every_client_uses() -> None:
    section = _section(PROTOCOL_MD.read_text(encoding="utf-8"), "### Faults")
    documented = {int(cells[1]): int(cells[4]) for cells in
                  (line.split("|") for line in section.splitlines())
                  if len(cells) > 5 and cells[1].strip().isdigit()}
    assert documented == {int(code): status for code, status in faults.EXIT_STATUS.items()}
    assert set(faults.EXIT_STATUS) == set(Fault)


def test_a_request_is_built_from_its_declaration() -> None:
    assert splinfer.chat("hi", system=None, params={"temp": 0}) == \
        {"op": "chat", "text": "hi", "params": {"temp": 0}}
    assert tieto.request("ingest", topic="t", paths=["/a"], filterable=None, rebuild=False) == \
        {"op": "ingest", "topic": "t", "paths": ["/a"], "rebuild": False}
    with pytest.raises(TypeError, match="no field sieve"):
        tieto.request("recall", question="q", topic="t", sieve=0.5)  # sources has it, not recall


def test_the_bus_librarys_cancel_is_the_declared_cancel() -> None:
    """The splinter library (below the protocol) builds cancel envelopes itself; they are
    the ``cancel`` both services declare."""
    sent = env_mod.cancel("me", "splinfer", "the-id").payload
    assert sent == splinfer.request("cancel", target="the-id") == \
        tieto.request("cancel", target="the-id")


@pytest.mark.parametrize(("op", "payload", "field", "message"), [
    (splinfer.OPS["history"], {}, "conversation", "history needs 'conversation': a string"),
    (splinfer.OPS["history"], {"conversation": ".."}, "conversation",
     "conversation must be 1 to 64 of A-Z a-z 0-9 _ . -, not '..'"),
    (splinfer.OPS["history"], {"start": -1}, "start",
     "'start' must be a message index (an integer from 0)"),
    (splinfer.OPS["history"], {"start": True}, "start", "'start' must be an integer"),
    (splinfer.OPS["chat"], {"text": "  "}, "text", "chat needs a non-empty string 'text'"),
    (tieto.OPS["ingest"], {"paths": ["/a", 3]}, "paths", "'paths' must be a list of strings"),
    (tieto.OPS["complete"], {"params": []}, "params", "'params' must be an object"),
])
def test_a_service_reads_a_field_by_its_declaration(op: Any, payload: dict[str, Any],
                                                    field: str, message: str) -> None:
    with pytest.raises(PayloadError) as refused:
        op.read(payload, field)
    assert (str(refused.value), refused.value.field) == (message, field)


def test_no_request_payload_is_built_by_hand_outside_the_protocol() -> None:
    """Every ``{"op": ...}`` a component, client, command or benchmark sends comes from
    runa/protocol (the bus library's own cancel envelope, below the protocol, is checked
    above); a dict opened on one line with its "op" on the next counts too."""
    sources = [path for tree in ("runa", "bench") for path in sorted((ROOT / tree).rglob("*.py"))
               if not path.is_relative_to(ROOT / "runa" / "protocol")
               and not path.is_relative_to(ROOT / "runa" / "splinter")
               and path != ROOT / "bench" / "common.py"]  # there "op" is a target's comparison
    by_hand = [f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, found.start()) + 1}"
               for path in sources
               for text in [path.read_text(encoding="utf-8")]
               for found in re.finditer(r"\{\s*[\"']op[\"']\s*:", text)]
    assert by_hand == []


# -- exit statuses: one table, every client ----------------------------------------------------


@pytest.mark.parametrize(("payload", "status"), [
    ({"code": Fault.BAD_SCHEMA}, 65), ({"code": Fault.BACKPRESSURE}, 75),
    ({"code": Fault.INTERNAL_ERROR}, 70), ({"code": Fault.NOT_AUTHORIZED}, 77),
    ({"code": Fault.TTL_EXPIRED}, 75), ({"code": 4242}, 1), ({}, 70),
    ({"code": Fault.BAD_SCHEMA, "exit_code": 66}, 66),  # the service knew better
    ({"code": Fault.BAD_SCHEMA, "exit_code": True}, 65),  # not a status
])
def test_a_fault_ends_a_command_with_the_tables_status(payload: dict[str, Any],
                                                       status: int) -> None:
    assert faults.exit_status(payload) == status
    assert ServiceFault("splinfer", payload).exit_code == status


class _FullQueue:
    def send(self, _envelope: object) -> None:
        raise Backpressure("splinfer", 100, 0)


class _Bus:
    def __init__(self) -> None:
        self.sent: list[object] = []

    def queue(self, _name: str) -> object:
        return self

    def sender(self, _name: str) -> _FullQueue:
        return _FullQueue()


def test_a_full_queue_here_ends_as_a_backpressure_answer_from_the_service() -> None:
    """Before: a cancel (Ctrl-C in ``runa ask``/``chat``, ``runa ingest --cancel``) let the
    bus library's Backpressure through (exit 70), while a full queue on a query's send and a
    BACKPRESSURE answer exited 75."""
    client = ServiceClient(_Bus(), "splinfer", "test")  # type: ignore[arg-type]
    answered = ServiceFault("splinfer", {"code": Fault.BACKPRESSURE, "message": "busy"})
    with pytest.raises(ServiceFault) as on_send:
        client._send(client._sender(), env_mod.query("test", "splinfer", {}))
    client._active = "a-request"
    with pytest.raises(ServiceFault) as on_cancel:
        client.cancel(wait=0)
    ingest = IngestInfo.from_status({"id": "an-ingest", "topic": "t", "state": "running"})
    with pytest.raises(ServiceFault) as on_cancel_ingest:
        cancel_ingest(client, ingest, 1.0)
    assert on_send.value.exit_code == on_cancel.value.exit_code == \
        on_cancel_ingest.value.exit_code == answered.exit_code == 75


def test_policy_check_texts_and_policy_names_are_bounded_before_splinfer_sees_them() -> None:
    op = splinfer.OPS["policy_check"]
    huge = {"items": [{"id": "short", "text": "hello"},
                      {"id": "huge", "text": "a" * (splinfer.MAX_CHECK_TEXT + 1)}]}
    with pytest.raises(PayloadError, match="item 'huge'"):
        op.read(huge, "items")
    assert op.read({"items": [{"id": 1, "text": "a" * splinfer.MAX_CHECK_TEXT}]}, "items")
    for name in ("", "no such\nset", "-x", "a" * 65):
        with pytest.raises(PayloadError) as bad:
            op.read({"policy": name}, "policy")
        assert "such" not in str(bad.value)
    assert splinfer.OPS["chat"].read({"policy": "child-safe"}, "policy") == "child-safe"
