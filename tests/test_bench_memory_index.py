"""The memory index bench (issue 23) on a small set: every metric the issue names, its
temporary vector file gone afterwards, and its result merged beside the other benches' keys."""

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
import memory_vectors  # noqa: E402


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def fake_embeddings() -> memory_vectors.Embedded:
    rng = np.random.default_rng(0)
    common = rng.standard_normal(384) * 2
    base = unit(common + rng.standard_normal((800, 384)))
    near = lambda rows: unit(rows + 0.05 * rng.standard_normal(rows.shape))  # noqa: E731
    return memory_vectors.Embedded(base, near(base[:40]), near(base[40:80]), "test")


def test_a_small_run_measures_what_the_issue_names_and_leaves_no_vector_file(
        tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    measured = memory_index.run(True, lambda line: None, records=20_000,
                                embedded=fake_embeddings(), cache=tmp_path / "cache",
                                workroot=tmp_path / "work")
    metrics, baselines, params = measured["metrics"], measured["baselines"], measured["params"]
    assert set(metrics) == {"index_bytes_per_record", "index_rss_mib", "search_p50_ms",
                            "recall_at_10", "start_index_build_s"}
    assert set(baselines) == {"numpy_float_search_p50_ms", "tieto_search_p50_ms"}
    assert metrics["index_bytes_per_record"] == 56
    assert metrics["recall_at_10"] >= 0.9
    assert params["scan"] in ("c", "numpy") and params["records"] == 20_000
    assert list((tmp_path / "work").iterdir()) == []
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [
        f"tieto-test-20000-{memory_vectors.NOISE}.db"]


def test_the_result_is_merged_under_index_keeping_the_files_other_keys(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    out.write_text(json.dumps({"bench": "memory", "metrics": {"append_per_s": 5}}))
    memory_index.merge_into(out, "index", {"metrics": {"recall_at_10": 0.97}})
    assert json.loads(out.read_text()) == {"bench": "memory", "metrics": {"append_per_s": 5},
                                           "index": {"metrics": {"recall_at_10": 0.97}}}


def test_the_stored_vectors_are_the_bases_then_reproducible_near_copies() -> None:
    base = unit(np.random.default_rng(1).standard_normal((100, 384)))
    whole = np.concatenate(list(memory_vectors.stored(base, 70_000)))
    assert np.allclose(whole[:100], base, atol=1e-6)
    again = memory_vectors.stored_block(base, 65_000, 1000)
    assert np.array_equal(again, whole[65_000:66_000])
    assert np.allclose(np.linalg.norm(whole, axis=1), 1, atol=1e-5)
    assert 0.9 < float(whole[1000] @ base[0]) < 0.99
