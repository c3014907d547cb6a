"""``runa audit --json`` read back from a real journald after real faults, in both modes.

Under Runa's own supervisor here (``runa up``: a SIGKILL and a watchdog kill); the systemd
side is asserted at the end of tests/test_gilgul_systemd.py, after its fault tests. The
session's user manager fixture provides the journald both write to.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from support import runa, wait_for

from runa.testing.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.real_systemd


def status_of(env: dict[str, str], name: str) -> dict:
    components = json.loads(runa("status", "--json", env=env).stdout)["components"]
    return next(c for c in components if c["name"] == name)


def replaced(env: dict[str, str], name: str, pid: int) -> int:
    def back() -> int:
        c = status_of(env, name)
        return c["pid"] if c["pid"] != pid and c["state"] == "running" else 0

    return int(wait_for(back, 20, f"the supervisor to replace {name}"))  # type: ignore[arg-type]


def test_audit_lists_each_supervisor_incarnation_with_its_reason(
        user_manager, runa_env: dict[str, str], tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    env = {**runa_env, "RUNA_SPLINFER_MODEL": str(model), "RUNA_SPLINFER_CTX_SIZE": "512",
           "RUNA_LOG_TARGET": "journal", "RUNA_COMPONENTS_SPLINFER_WATCHDOG_SEC": "1"}
    since = time.time()
    up = runa("up", "--detach", env=env)
    assert up.returncode == 0, up.stderr
    try:
        first = status_of(env, "splinfer")["pid"]
        os.kill(first, signal.SIGKILL)
        second = replaced(env, "splinfer", first)
        os.kill(second, signal.SIGSTOP)
        third = replaced(env, "splinfer", second)
    finally:
        runa("down", env=env)

    seen: list[list[dict]] = [[]]

    def listed() -> list[dict] | None:
        out = runa("audit", "--json", "--mode", "supervisor", "--component", "splinfer",
                   "--since", f"@{since}", env=env)
        assert out.returncode == 0, out.stderr
        items = seen[0] = json.loads(out.stdout)["incarnations"]
        return items if len(items) >= 3 and items[2]["end_reason"] else None

    try:
        items = wait_for(listed, 10, "three splinfer incarnations in the journal")
    except AssertionError:
        raise AssertionError(f"runa audit listed: {json.dumps(seen[0], indent=1)}") from None
    assert [i["pid"] for i in items[:3]] == [first, second, third]  # type: ignore[index]
    assert [i["start_reason"] for i in items[:3]] == ["start", "signal", "watchdog"]  # type: ignore[index]
    assert [i["end_reason"] for i in items[:3]] == ["signal", "watchdog", "stopped"]  # type: ignore[index]
    assert [i["decision"] for i in items[:2]] == ["restart", "restart"]  # type: ignore[index]
    assert all(i["mode"] == "supervisor" for i in items)  # type: ignore[union-attr]
