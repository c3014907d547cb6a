"""The memory index bench (issue 23) on a small set: every metric the issue names, its
temporary vector file gone afterwards, and bench/memory.py's one results file holding the
store's and the index's numbers from the same run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # its common, cleanup and memory_vectors modules
_spec = importlib.util.spec_from_file_location("bench_memory_index", BENCH / "memory_index.py")
assert _spec is not None and _spec.loader is not None
memory_index = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(memory_index)
sys.modules["memory_index"] = memory_index  # what bench/memory.py imports
_spec = importlib.util.spec_from_file_location("bench_memory", BENCH / "memory.py")
assert _spec is not None and _spec.loader is not None
memory = importlib.util.module_from_spec(_spec)
sys.modules["bench_memory"] = memory  # its dataclasses look their module up
_spec.loader.exec_module(memory)
import memory_vectors  # noqa: E402

INDEX_METRICS = {"index_bytes_per_record", "index_rss_mib", "search_p50_ms", "recall_at_10",
                 "start_index_build_s"}


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def fake_embeddings() -> memory_vectors.Embedded:
    rng = np.random.default_rng(0)
    common = rng.standard_normal(384) * 2
    base = unit(common + rng.standard_normal((800, 384)))
    near = lambda rows: unit(rows + 0.05 * rng.standard_normal(rows.shape))  # noqa: E731
    return memory_vectors.Embedded(base, near(base[:40]), near(base[40:80]), "test")


def test_one_run_writes_the_store_and_the_index_in_one_file_and_sets_aside_older_numbers(
        tmp_path: Path) -> None:
    """A small index (20k records) measured as bench/memory.py measures 1M and 4M."""
    store = memory.Result("memory", {"quick": True}, {"append_records_s": 9000.0,
                                                      "verify_records_s": 20000.0},
                          targets=[memory.Target("append_records_s", ">=", 2000)])
    indexes = memory.index_sections(tmp_path / "scratch", [20_000], lambda line: None,
                                    embedded=fake_embeddings(), cache=tmp_path / "cache")
    older = {"commit": "0000000", "date": "2026-01-01T00:00:00+00:00", "metrics": {}}
    data = memory.document(store, indexes, {"metrics": {"stale": 1}, "index_4m": older,
                                            "index_20000": {"metrics": {"stale": 1}}})
    out = tmp_path / "memory.json"
    memory.write(out, data)
    data = json.loads(out.read_text())

    index = data["index_20000"]
    assert set(index["metrics"]) == INDEX_METRICS | {"faster_than_tieto"}
    assert set(index["baselines"]) == {"numpy_float_search_p50_ms", "tieto_search_p50_ms"}
    assert index["metrics"]["index_bytes_per_record"] == 56
    assert index["metrics"]["recall_at_10"] >= 0.9
    assert index["params"]["scan"] in ("c", "numpy") and index["params"]["records"] == 20_000
    assert index["params"]["generator"] == "bench/memory_vectors.py"
    assert index["commit"] == data["commit"] and index["date"][:13] == data["date"][:13]
    assert data["metrics"] == {"append_records_s": 9000.0, "verify_records_s": 20000.0}
    assert data["pass"] == (index["pass"] and data["targets"]["append_records_s"]["met"])
    assert "index_4m" not in data and data["earlier_runs"] == {"index_4m": older}
    assert list((tmp_path / "scratch" / "index-20000").iterdir()) == []  # no vector file
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [
        f"tieto-test-20000-{memory_vectors.NOISE}.db"]
    rows = memory.table(store, indexes).splitlines()
    assert rows[2].startswith("| append_records_s | 9000 | >= 2000 | yes |")
    assert any(row.startswith("| index_20000: search_p50_ms | ") for row in rows)
    assert any(row.startswith("| index_20000: baseline: tieto_search_p50_ms | ")
               for row in rows)


def test_a_quick_run_measures_the_index_at_1m_and_a_full_run_at_4m_too() -> None:
    assert memory.index_sizes(True) == [1_000_000]
    assert memory.index_sizes(False) == [1_000_000, 4_000_000]
    assert memory_index.result_key(4_000_000) == "index_4m"


def test_the_stored_vectors_are_the_bases_then_reproducible_near_copies() -> None:
    base = unit(np.random.default_rng(1).standard_normal((100, 384)))
    whole = np.concatenate(list(memory_vectors.stored(base, 70_000)))
    assert np.allclose(whole[:100], base, atol=1e-6)
    again = memory_vectors.stored_block(base, 65_000, 1000)
    assert np.array_equal(again, whole[65_000:66_000])
    assert np.allclose(np.linalg.norm(whole, axis=1), 1, atol=1e-5)
    assert 0.9 < float(whole[1000] @ base[0]) < 0.99
