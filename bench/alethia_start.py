"""alethia's start with a large store, through the daemon's own path (docs/alethia-index.md).

A store of N records (turns of a few hundred bytes) and a vector file with a row for each
(random unit vectors: the build's cost does not depend on what they mean) are written in a
temporary directory; then a fresh process does what alethia does at start: opens the
store, loads the embedding model, builds the index in ``BUILD_STEP_S`` steps and answers
one search. It prints the build's time, its longest step, and the process's peak resident
memory (VmHWM, the process's own) at each phase::

    python bench/alethia_start.py --records 1000000 --model PATH_TO_MINILM_GGUF
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from runa.alethia.recall import Recall
from runa.alethia.store import Durability, Keys, Store

DAY = 86400.0
START = 1_700_000_000.0
PER_DAY = 20_000


def keys() -> Keys:
    return Keys(memory={1: bytearray(b"m" * 32)}, signing_seed=bytearray(b"s" * 32))


def fill(root: Path, records: int, dim: int, model_id: str) -> None:
    """N turns over N / PER_DAY days, and a vector for each (unmeasured)."""
    now = [START]
    store = Store.open(root, keys(), clock=lambda: now[0], durability=Durability(4096, 10**9))
    body = {"user": "u" * 200, "answer": "a" * 400, "conversation": "c", "persona": "p"}
    for number in range(records):
        now[0] = START + (number // PER_DAY) * DAY
        store.append("turn", body)
    store.flush()
    recall = Recall.open(root, keys(), model_id=model_id, dim=dim)
    recall.build(store)
    ids = list(store.live_ids())
    rng = np.random.default_rng(0)
    for first in range(0, len(ids), 65536):
        chunk = ids[first:first + 65536]
        vectors = rng.standard_normal((len(chunk), dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        recall.add(chunk, [store.record_hash(i) or b"" for i in chunk], vectors)
    recall.close()
    store.close()


def peak_mib() -> tuple[float, float]:
    """This process's VmHWM and VmRSS in MiB (its own pages, not its parent's)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024)


def start(root: Path, model: Path | None) -> dict[str, float]:
    """alethia's start in this process: the store, the model, the build in steps, a search."""
    from runa.alethia.searching import BUILD_STEP_S, Searching
    from runa.models.embedder import LlamaEmbedder

    out: dict[str, float] = {"python_mib": peak_mib()[0]}
    began = time.perf_counter()
    store = Store.open(root, keys())
    out["store_open_s"] = time.perf_counter() - began
    out["store_mib"] = peak_mib()[0]
    embedder = LlamaEmbedder(model, threads=1)
    out["model_mib"] = peak_mib()[0]
    searching = Searching(root, keys(), embedder)
    began, longest = time.perf_counter(), 0.0
    while not searching.recall.ready:
        step = time.perf_counter()
        searching.step(store, BUILD_STEP_S)
        longest = max(longest, time.perf_counter() - step)
    out["build_s"] = time.perf_counter() - began
    out["longest_step_s"] = longest
    out["indexed"] = searching.indexed
    began = time.perf_counter()
    searching.step(store)  # what has no vector (nothing here)
    out["catch_up_scan_s"] = time.perf_counter() - began
    began = time.perf_counter()
    matches = searching.search(store, "when does the lighthouse keeper light the lamp", 10)
    out["search_s"] = time.perf_counter() - began
    out["matches"] = len(matches)
    out["index_mib"] = searching.recall.index.nbytes / 2**20
    out["peak_mib"], out["rss_mib"] = peak_mib()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--root", type=Path, help="(the child: a store already filled)")
    args = parser.parse_args()
    if args.root is not None:
        print(json.dumps(start(args.root, args.model)))
        return 0
    from runa.models.embedder import LlamaEmbedder

    probe = LlamaEmbedder(args.model, threads=1)
    model_id, dim = probe.model_id, probe.dim
    probe.close()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "alethia"
        began = time.perf_counter()
        fill(root, args.records, dim, model_id)
        print(f"filled {args.records} records in {time.perf_counter() - began:.0f} s",
              file=sys.stderr)
        child = subprocess.run([sys.executable, __file__, "--records", str(args.records),
                                "--model", str(args.model), "--root", str(root)],
                               check=True, capture_output=True, text=True)
        result = {"records": args.records, **json.loads(child.stdout.splitlines()[-1])}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
