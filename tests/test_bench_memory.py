"""The memory bench's store section runs on a small count and reports what docs/bench.md
says it does."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # its common and cleanup modules
_spec = importlib.util.spec_from_file_location("bench_memory", BENCH / "memory.py")
assert _spec is not None and _spec.loader is not None
bench_memory = importlib.util.module_from_spec(_spec)
sys.modules["bench_memory"] = bench_memory  # its dataclasses look their module up
_spec.loader.exec_module(bench_memory)


def test_the_store_section_measures_appends_and_verify_beside_its_baselines(
        tmp_path: Path) -> None:
    part = bench_memory.store_section(tmp_path, {"records": 300, "fsync_each_records": 10})
    assert set(part.metrics) == {"append_records_s", "verify_records_s"}
    assert set(part.baselines) == {"fsync_per_record_records_s", "plain_write_records_s"}
    assert all(value > 0 for value in {**part.metrics, **part.baselines}.values())
    assert part.params["records"] == 300 and part.params["line_bytes"] > 1000
    assert [t.metric for t in part.targets] == ["append_records_s"]
    assert bench_memory.SECTIONS[0][0] == "store"
