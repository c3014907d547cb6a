"""The secrets bench's stack (issue 21): only what a secret's path needs is started, so the
bench times the broker and coven, not a model loading beside them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from runa import registry

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # its common and cleanup modules
_spec = importlib.util.spec_from_file_location("bench_secrets", BENCH / "secrets_bench.py")
assert _spec is not None and _spec.loader is not None
bench_secrets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_secrets)
KEEP, stack_env = bench_secrets.KEEP, bench_secrets.stack_env


def test_the_bench_stack_runs_the_keeper_and_coven_under_the_broker_and_nothing_else(
        tmp_path: Path) -> None:
    env = stack_env(tmp_path)
    loaded = registry.load(Path(env["RUNA_SYSCONFDIR"]))
    assert [c.name for c in loaded.watched] == ["splinter", "coven"]
    assert loaded.manager is not None and loaded.manager.name in KEEP
    assert set(registry.load().names) - {c.name for c in loaded.enabled} >= {
        "splinfer", "tieto", "whisper"}


def test_the_bench_stack_is_private_to_its_root(tmp_path: Path) -> None:
    env = stack_env(tmp_path)
    assert all(env[key].startswith(str(tmp_path)) for key in (
        "RUNA_SYSCONFDIR", "HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR",
        "XDG_CONFIG_HOME"))
    assert env["RUNA_STACK"] not in {"runa", ""}
