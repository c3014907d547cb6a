"""``runa audit --policy``: the policy's interventions, read back from the journal.

splinfer logs one ``RUNA_EVENT=policy_intervention`` record per intervention (the fields of
``runa.policy.Intervention.fields``: rule, category, weight, action, side, policy, token
index, conversation, reason; never text), under systemd and under ``runa up`` alike, as long
as a journald listens. Without one, the records go to the component's standard error (the
stack's log under ``runa up``), where they carry no time: this reader says so instead of
guessing.

Any process of a user may write such a record into the journal, so the records are only as
trustworthy as the user's processes: each event shows who wrote it, from the fields journald
sets itself (the systemd unit, else the command name), so a record from an unexpected
process stands out. A process can lie only in SYSLOG_IDENTIFIER, shown when nothing else is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from runa.errors import RunaError

EVENT = "policy_intervention"


class NoJournal(RunaError):
    """No journald answers here, so there is no record of the interventions to read."""

    exit_code = 69  # EX_UNAVAILABLE


@dataclass(frozen=True)
class PolicyEvent:
    """One intervention as the journal keeps it."""

    time: float  # seconds since the epoch
    component: str
    conversation: str
    policy: str
    rule: str
    category: str
    weight: str
    action: str
    side: str
    token_index: int | None
    reason: str
    writer: str = ""
    """The process that wrote the record (journald's own fields; see the module docstring)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_journal(available: bool, stack_log: Path) -> None:
    """NoJournal, saying where the records went instead, unless a journald listens."""
    if not available:
        raise NoJournal(
            "the policy's interventions are read from the journal, and no journald runs "
            f"here; under 'runa up' they are in the stack's log ({stack_log}), as lines "
            f"with RUNA_EVENT={EVENT} but without their time")


def read_journal(since: float | None = None) -> list[Mapping[str, Any]]:
    """Every intervention record in the journal (whoever logged it), oldest first."""
    from systemd import journal

    reader = journal.Reader()
    reader.add_match(RUNA_EVENT=EVENT)
    if since is not None:
        reader.seek_realtime(since)
    try:
        return list(reader)
    finally:
        reader.close()


def events(records: Iterable[Mapping[str, Any]]) -> list[PolicyEvent]:
    """The records as events, newest last."""
    out = []
    for record in records:
        if record.get("RUNA_EVENT") != EVENT:
            continue
        stamp = record.get("__REALTIME_TIMESTAMP")
        out.append(PolicyEvent(
            time=stamp.timestamp() if isinstance(stamp, datetime) else float(stamp or 0),
            component=str(record.get("RUNA_COMPONENT", "")),
            conversation=str(record.get("RUNA_CONVERSATION", "")),
            policy=str(record.get("RUNA_POLICY", "")),
            rule=str(record.get("RUNA_RULE", "")),
            category=str(record.get("RUNA_CATEGORY", "")),
            weight=str(record.get("RUNA_WEIGHT", "")),
            action=str(record.get("RUNA_ACTION", "")),
            side=str(record.get("RUNA_SIDE", "")),
            token_index=_int(record.get("RUNA_TOKEN_INDEX")),
            reason=str(record.get("RUNA_REASON", "")),
            writer=_writer(record),
        ))
    return sorted(out, key=lambda e: e.time)


def table(items: list[PolicyEvent]) -> list[str]:
    """The events as aligned lines under a heading (conversation ids shortened to 8); a
    reason, when the action differs from the set's cell, ends its line."""
    heading = ("time", "conversation", "policy", "rule", "category", "weight", "action",
               "side", "token", "writer")
    rows = [(datetime.fromtimestamp(e.time).strftime("%Y-%m-%d %H:%M:%S"),
             e.conversation[:8] or "-", e.policy, e.rule, e.category, e.weight, e.action,
             e.side, "-" if e.token_index is None else str(e.token_index), e.writer or "-")
            for e in items]
    widths = [max(len(row[i]) for row in [heading, *rows]) for i in range(len(heading))]
    reasons = ["", *(f"  ({e.reason})" if e.reason else "" for e in items)]
    lines = [heading, *rows]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            .rstrip() + why for row, why in zip(lines, reasons, strict=True)]


def _writer(record: Mapping[str, Any]) -> str:
    """Who wrote ``record``: the unit or command journald recorded (trusted), else the
    identifier the sender chose, marked with '?'."""
    for key in ("_SYSTEMD_USER_UNIT", "_SYSTEMD_UNIT", "_COMM"):
        if record.get(key):
            return str(record[key])
    claimed = record.get("SYSLOG_IDENTIFIER")
    return f"{claimed}?" if claimed else ""


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
