"""``runa audit``: gilgul's journal events folded into incarnations, and who may read them."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest
from support import runa

from runa.cli.audit_cmd import parse_since
from runa.errors import UsageError
from runa.gilgul import audit


def record(identifier: str, second: int, event: str, component: str, incarnation: int,
           **fields: str) -> dict[str, object]:
    """A journal record as journal.Reader returns it (custom fields are strings)."""
    return {"SYSLOG_IDENTIFIER": identifier, "RUNA_EVENT": event, "RUNA_COMPONENT": component,
            "RUNA_INCARNATION": str(incarnation), "MESSAGE": f"{event} {component}",
            "__REALTIME_TIMESTAMP": datetime.fromtimestamp(1_800_000_000 + second, UTC),
            **{f"RUNA_{k.upper()}": v for k, v in fields.items()}}


# The same fault, SIGKILL of splinfer, then a watchdog kill, in both modes.
RECORDS = [
    record(ident, base + 0, "running", "splinfer", 0, main_pid="100")
    for ident, base in (("runa-gilgul", 0), ("runa-supervisor", 100))
] + [
    r
    for ident, base in (("runa-gilgul", 0), ("runa-supervisor", 100))
    for r in (
        record(ident, base + 5, "failed", "splinfer", 0, reason="signal", decision="restart",
               delay_s="0", failures="1"),
        record(ident, base + 5, "restart", "splinfer", 1, reason="signal"),
        record(ident, base + 6, "running", "splinfer", 1, main_pid="101", latency_ms="480.5"),
        record(ident, base + 9, "failed", "splinfer", 1, reason="watchdog", decision="restart",
               delay_s="0.5", failures="2"),
        record(ident, base + 10, "restart", "splinfer", 2, reason="watchdog"),
        record(ident, base + 10, "running", "splinfer", 2, main_pid="102"),
        record(ident, base + 11, "reconciled", "gilgul", 0),
        record(ident, base + 12, "stopped", "gilgul", 0),
    )
]


def test_incarnations_in_both_modes_carry_their_reasons_and_decisions() -> None:
    items = audit.incarnations(audit.events(RECORDS))
    assert [(i.mode, i.incarnation, i.start_reason, i.end_reason, i.decision)
            for i in items] == [
        (mode, n, start, end, decision)
        for mode in ("systemd", "supervisor")
        for n, start, end, decision in ((0, "start", "signal", "restart"),
                                        (1, "signal", "watchdog", "restart"),
                                        (2, "watchdog", "", ""))]
    assert items[1].pid == 101 and items[1].latency_ms == 480.5 and items[1].delay_s == 0.5


def test_a_number_seen_again_in_a_later_run_is_a_new_incarnation() -> None:
    again = [*RECORDS[:1], record("runa-gilgul", 50, "running", "splinfer", 0, main_pid="200")]
    items = audit.incarnations(audit.events(again))
    assert [i.pid for i in items] == [100, 200]


def test_only_root_or_the_journal_group_may_read() -> None:
    audit.check_access(uid=0, groups=[])
    audit.check_access(uid=1000, groups=[999], journal_gid=lambda: 999)
    with pytest.raises(audit.JournalAccessError, match="systemd-journal") as error:
        audit.check_access(uid=1000, groups=[100], journal_gid=lambda: 999)
    assert error.value.exit_code == 77


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the command as nobody")
def test_runa_audit_as_another_user_says_why_and_exits_77(runa_env: dict[str, str]) -> None:
    import subprocess
    import sys

    def as_nobody() -> None:  # pragma: no cover - runs in the child
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    result = subprocess.run([sys.executable, "-m", "runa", "audit"], env=runa_env,
                            capture_output=True, text=True, preexec_fn=as_nobody, timeout=30)
    assert result.returncode == 77
    assert "systemd-journal" in result.stderr and "sudo" in result.stderr


def test_since_accepts_relative_iso_and_epoch_and_names_a_bad_value(
        runa_env: dict[str, str]) -> None:
    assert parse_since("15m", 10_000.0) == 10_000.0 - 900
    assert parse_since("@1700000000", 0) == 1_700_000_000
    assert parse_since("2026-01-02T03:04:05+00:00", 0) == 1767323045
    with pytest.raises(UsageError, match="'yesterday'"):
        parse_since("yesterday", 0)
    result = runa("audit", "--since", "yesterday", env=runa_env)
    assert result.returncode == 64 and "--since 'yesterday'" in result.stderr


def test_json_lists_incarnations_and_events(monkeypatch: pytest.MonkeyPatch) -> None:
    from runa.cli.audit_cmd import cmd_audit
    from runa.cli.context import CliContext

    # The journal reader is the one seam replaced here (journald may not run here); the
    # real reader was checked by hand against the harness's journal (see the report).
    monkeypatch.setattr(audit, "read_journal", lambda since: RECORDS)
    import argparse
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cmd_audit(CliContext(env={}), argparse.Namespace(json=True, since=None, policy=False,
                                                        component="splinfer", mode="supervisor"))
    data = json.loads(out.getvalue())
    assert [i["incarnation"] for i in data["incarnations"]] == [0, 1, 2]
    assert {i["mode"] for i in data["incarnations"]} == {"supervisor"}
    assert data["incarnations"][1]["start_reason"] == "signal"
