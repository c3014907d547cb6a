"""``runa audit``: what gilgul did and why, read back from the journal.

gilgul under systemd (``SYSLOG_IDENTIFIER=runa-gilgul``) and its own supervisor without
systemd (``runa-supervisor``) log the same events with the same ``RUNA_*`` fields
(docs/gilgul.md, "The journal"). This module reads them with systemd-python's
``journal.Reader`` and folds them into incarnations: each one with the reason it was started,
its process, and how it ended (reason, the policy's decision, the delay). Reading the whole
journal needs root or the ``systemd-journal`` group; anyone else is told so plainly.
"""

from __future__ import annotations

import grp
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from runa.errors import RunaError

MODES = {"runa-gilgul": "systemd", "runa-supervisor": "supervisor"}
JOURNAL_GROUP = "systemd-journal"
EX_NOPERM = 77


class JournalAccessError(RunaError):
    """This user may not read the system journal, where gilgul's events are."""

    exit_code = EX_NOPERM


@dataclass(frozen=True)
class Event:
    time: float  # seconds since the epoch
    mode: str
    component: str
    event: str
    incarnation: int | None
    reason: str
    decision: str
    delay_s: float | None
    failures: int | None
    pid: int | None
    latency_ms: float | None
    message: str


@dataclass
class Incarnation:
    mode: str
    component: str
    incarnation: int
    started: float | None = None  # when the restart was issued
    start_reason: str = "start"  # why this incarnation exists
    pid: int | None = None
    running: float | None = None
    latency_ms: float | None = None
    ended: float | None = None
    end_reason: str = ""
    decision: str = ""  # the policy's answer to its end: restart, hold, ...
    delay_s: float | None = None
    escalated: bool = False
    notes: list[str] = field(default_factory=list)


def check_access(uid: int | None = None, groups: Iterable[int] | None = None,
                 journal_gid: Callable[[], int | None] | None = None) -> None:
    """Raise JournalAccessError unless root or in the systemd-journal group."""
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return
    gid = (journal_gid or _journal_gid)()
    if gid is not None and gid in set(os.getgroups() if groups is None else groups):
        return
    raise JournalAccessError(
        "runa audit reads gilgul's events from the system journal, which only root and "
        f"members of the '{JOURNAL_GROUP}' group may read; run it with sudo, or add yourself "
        f"with 'sudo usermod -aG {JOURNAL_GROUP} $USER' and log in again")


def _journal_gid() -> int | None:
    try:
        return grp.getgrnam(JOURNAL_GROUP).gr_gid
    except KeyError:
        return None


def read_journal(since: float | None = None) -> list[Mapping[str, Any]]:
    """gilgul's event records (both modes) from the journal, oldest first."""
    from systemd import journal

    reader = journal.Reader()
    for identifier in MODES:
        reader.add_match(SYSLOG_IDENTIFIER=identifier)
        reader.add_disjunction()
    if since is not None:
        reader.seek_realtime(since)
    try:
        return [record for record in reader if record.get("RUNA_EVENT")]
    finally:
        reader.close()


def events(records: Iterable[Mapping[str, Any]]) -> list[Event]:
    out = []
    for record in records:
        mode = MODES.get(str(record.get("SYSLOG_IDENTIFIER", "")))
        if mode is None or not record.get("RUNA_EVENT"):
            continue
        stamp = record.get("__REALTIME_TIMESTAMP")
        out.append(Event(
            time=stamp.timestamp() if isinstance(stamp, datetime) else float(stamp or 0),
            mode=mode,
            component=str(record.get("RUNA_COMPONENT", "")),
            event=str(record["RUNA_EVENT"]),
            incarnation=_int(record.get("RUNA_INCARNATION")),
            reason=str(record.get("RUNA_REASON", "")),
            decision=str(record.get("RUNA_DECISION", "")),
            delay_s=_float(record.get("RUNA_DELAY_S")),
            failures=_int(record.get("RUNA_FAILURES")),
            pid=_int(record.get("RUNA_MAIN_PID")),
            latency_ms=_float(record.get("RUNA_LATENCY_MS")),
            message=str(record.get("MESSAGE", "")),
        ))
    return sorted(out, key=lambda e: e.time)


_MANAGERS = ("gilgul", "supervisor")  # their own starting/ready/stopped are not incarnations
_FOLDED = ("restart", "running", "failed", "stopped", "escalated", "no_heartbeat", "watchdog",
           "timeout")


def incarnations(stream: Iterable[Event]) -> list[Incarnation]:
    """Fold the events into incarnations, in the order they began.

    The same (mode, component, number) recurs across runs of a stack (numbers restart with
    a new login session); an event that cannot belong to the incarnation seen last (a second
    start, a second end) begins a new one.
    """
    latest: dict[tuple[str, str, int], Incarnation] = {}
    items: list[Incarnation] = []

    def get(e: Event, fresh: Callable[[Incarnation], bool]) -> Incarnation:
        assert e.incarnation is not None
        key = (e.mode, e.component, e.incarnation)
        item = latest.get(key)
        if item is None or fresh(item):
            item = latest[key] = Incarnation(e.mode, e.component, e.incarnation)
            items.append(item)
        return item

    for e in stream:
        if (e.event not in _FOLDED or e.incarnation is None or not e.component
                or e.component in _MANAGERS):
            continue
        if e.event == "restart":
            item = get(e, lambda i: i.started is not None or i.running is not None)
            item.started, item.start_reason = e.time, e.reason or item.start_reason
        elif e.event == "running":
            item = get(e, lambda i: i.running is not None or i.ended is not None)
            item.running, item.pid, item.latency_ms = e.time, e.pid, e.latency_ms
            item.started = item.started or e.time
        elif e.event in ("failed", "stopped"):
            item = get(e, lambda i: i.ended is not None)
            item.ended = e.time
            if e.event == "failed":
                item.end_reason, item.decision, item.delay_s = e.reason, e.decision, e.delay_s
            else:
                item.end_reason, item.decision = "stopped", "left stopped"
            item.pid = item.pid or e.pid
        elif e.event == "escalated":
            get(e, lambda i: False).escalated = True
        else:
            get(e, lambda i: False).notes.append(f"killed: {e.reason or e.event}")
    return sorted(items, key=lambda i: i.started or i.ended or 0.0)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def as_json(items: list[Incarnation], stream: list[Event]) -> dict[str, Any]:
    return {"incarnations": [asdict(i) for i in items], "events": [asdict(e) for e in stream]}
