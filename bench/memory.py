"""Memory: what alethia's store costs to write and to check (issue 22), section by section.

The store's section writes chat-turn sized records through ``Store.append`` as shipped
(encrypt, chain, fsync and sign in batches of ``Durability``), closes the store, and times
``verify`` over them; baselines in the same run and on the same disk:

- ``fsync_per_record_records_s``: the same store with ``Durability(records=1)``: every
  record written, signed and fsynced on its own (no batching);
- ``plain_write_records_s``: lines of the same size written and fsynced in batches of the
  same size, no encryption, chain or signature: the disk's floor under the store.

The index's section (issue 23, ``bench/memory_index.py``) follows: alethia's search index
at 1M records (``--quick``), then 4M (the full run), each under its own key (``index_1m``,
``index_4m``) with its metrics, baselines and params.

    python bench/memory.py [--quick]

Writes bench/results/memory.json whole (one run, one commit and date; a 4M result a quick run
did not measure is kept only under ``earlier_runs``, with its own commit and date) and prints
one table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from cleanup import guarded  # noqa: E402
from common import RESULTS, Result, Target  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import memory_index  # noqa: E402
from memory_vectors import embed_all  # noqa: E402

from runa.alethia.store import Durability, Keys, Store, verify  # noqa: E402

#: Records per measurement: the issue's 100k for the store as shipped, fewer for the
#: fsync-per-record baseline (a rate; 100k fsyncs alone would take minutes).
FULL = {"records": 100_000, "fsync_each_records": 5_000}
QUICK = {"records": 100_000, "fsync_each_records": 1_000}
WORDS = ("the", "lamp", "keeper", "walked", "along", "cold", "shore", "every", "evening",
         "counting", "ships", "that", "never", "came", "home", "while", "kettle", "sang",
         "and", "wind", "turned", "pages", "of", "old", "logbooks")


@dataclass
class Section:
    """What one section measured."""

    metrics: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)


def text(rng: random.Random, size: int) -> str:
    out: list[str] = []
    length = 0
    while length < size:
        out.append(rng.choice(WORDS))
        length += len(out[-1]) + 1
    return " ".join(out)[:size]


def turns(count: int, seed: int = 22) -> list[dict[str, Any]]:
    """Chat turns of a typical size: a 200-character question, an 800-character answer."""
    rng = random.Random(seed)
    return [{"user": text(rng, 200), "answer": text(rng, 800),
             "conversation": f"conv-{n // 20}", "persona": "default",
             "interventions": [], "feedback": None} for n in range(count)]


def keys() -> Keys:
    return Keys(memory={1: bytearray(os.urandom(32))}, signing_seed=bytearray(os.urandom(32)))


def timed_appends(root: Path, bodies: list[dict[str, Any]], durability: Durability) -> float:
    """Records per second through Store.append, the store closed (everything durable)."""
    store = Store.open(root, keys(), durability=durability)
    start = time.perf_counter()
    for body in bodies:
        store.append("turn", body)
    store.close()
    return len(bodies) / (time.perf_counter() - start)


def plain_writes(path: Path, line_bytes: int, count: int, batch: int) -> float:
    """Records per second for lines of ``line_bytes`` written and fsynced ``batch`` at a time."""
    line = b"x" * (line_bytes - 1) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        start = time.perf_counter()
        for _ in range(0, count, batch):
            os.write(fd, line * batch)
            os.fsync(fd)
        return count / (time.perf_counter() - start)
    finally:
        os.close(fd)


def filesystem(path: Path) -> str:
    done = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def store_section(scratch: Path, rounds: dict[str, int]) -> Section:
    shipped = Durability()
    bodies = turns(rounds["records"])
    root = scratch / "store"
    appends = timed_appends(root, bodies, shipped)
    start = time.perf_counter()
    checked = verify(root)
    verify_s = time.perf_counter() - start
    if not checked.ok or checked.records != len(bodies):
        raise SystemExit(f"the bench's store does not verify: {checked.problems[:3]}")
    logs = list((root / "days").glob("*.log"))
    size = sum(path.stat().st_size for path in logs)
    each = timed_appends(scratch / "each", bodies[:rounds["fsync_each_records"]],
                         Durability(records=1, ms=0))
    plain = plain_writes(scratch / "plain", size // len(bodies), len(bodies), shipped.records)
    return Section(
        metrics={"append_records_s": round(appends), "verify_records_s":
                 round(len(bodies) / verify_s)},
        baselines={"fsync_per_record_records_s": round(each),
                   "plain_write_records_s": round(plain)},
        params={"records": len(bodies), "fsync_each_records": rounds["fsync_each_records"],
                "body_chars": {"user": 200, "answer": 800},
                "line_bytes": size // len(bodies), "days": len(logs),
                "durability": {"records": shipped.records, "ms": shipped.ms},
                "filesystem": filesystem(scratch)},
        targets=[Target("append_records_s", ">=", 2000)])


#: The store's sections, in order: (name, function); the index's follow (``index_sections``).
SECTIONS: list[tuple[str, Callable[[Path, dict[str, int]], Section]]] = [
    ("store", store_section),
]


def index_sizes(quick: bool) -> list[int]:
    """The index sizes a run measures: 1M quick, 1M and 4M in full."""
    return ([memory_index.QUICK_RECORDS] if quick
            else [memory_index.QUICK_RECORDS, memory_index.FULL_RECORDS])


def index_sections(scratch: Path, sizes: list[int], progress: Callable[[str], object],
                   **run: Any) -> dict[str, Result]:
    """The index measured at each size (the embeddings made or loaded once), by result key;
    ``run`` goes to ``memory_index.run`` (tests: ``embedded``, ``cache``, ``tieto``)."""
    embedded = run.pop("embedded", None) or embed_all(progress)
    results = {}
    for records in sizes:
        work = scratch / f"index-{records}"
        work.mkdir(parents=True)
        measured = memory_index.run(records <= memory_index.QUICK_RECORDS, progress,
                                    records=records, embedded=embedded, workroot=work, **run)
        results[memory_index.result_key(records)] = memory_index.as_result(measured)
    return results


def document(store: Result, indexes: dict[str, Result], previous: dict[str, Any]
             ) -> dict[str, Any]:
    """memory.json: the store's result, each index's under its key, ``pass`` over all; an
    index key of ``previous`` this run did not measure goes under ``earlier_runs`` as it was
    (its own commit and date), never beside this run's numbers."""
    data = store.as_json()
    for key, result in indexes.items():
        data[key] = result.as_json()
    data["pass"] = all([data["pass"], *(data[key]["pass"] for key in indexes)])
    earlier = {key: value for key, value in previous.items()
               if key.startswith("index_") and key not in indexes}
    earlier.update({key: value for key, value in previous.get("earlier_runs", {}).items()
                    if key not in indexes and key not in earlier})
    if earlier:
        data["earlier_runs"] = earlier
    return data


def table(store: Result, indexes: dict[str, Result]) -> str:
    """One table: the store's rows, then each index's, its rows named ``<key>: <metric>``."""
    rows = store.table().splitlines()
    for key, result in indexes.items():
        for row in result.table().splitlines()[2:]:
            name, rest = row[2:].split(" | ", 1)
            rows.append(f"| {key}: {name} | {rest}")
    return "\n".join(rows)


def write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    partial.replace(path)


def main(cleanups: ExitStack) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['fsync_each_records']} records for the fsync-per-record "
                             f"baseline instead of {FULL['fsync_each_records']}, the index at "
                             "1M records only (else 1M and 4M)")
    parser.add_argument("--out", type=Path, default=RESULTS / "memory.json")
    args = parser.parse_args()
    rounds = QUICK if args.quick else FULL
    began = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="runa-bench-memory-", dir="/var/tmp"))
    cleanups.callback(shutil.rmtree, scratch, ignore_errors=True)
    result = Result("memory", {"quick": args.quick,
                               "loadavg_start": round(os.getloadavg()[0], 2)})
    for name, section in SECTIONS:
        part = section(scratch / name, rounds)
        result.metrics.update(part.metrics)
        result.baselines.update(part.baselines)
        result.params[name] = part.params
        result.targets += part.targets
    indexes = index_sections(scratch, index_sizes(args.quick),
                             lambda line: print(line, file=sys.stderr, flush=True))
    result.params.update({"loadavg_end": round(os.getloadavg()[0], 2),
                          "duration_s": round(time.monotonic() - began, 1)})
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    data = document(result, indexes, previous)
    write(args.out, data)
    print(table(result, indexes))
    scans = ", ".join(f"{key}: {r.params['scan']}" for key, r in indexes.items())
    print(f"\nwrote {args.out} in {result.params['duration_s']} s (Hamming scan {scans}) — "
          f"{'all targets met' if data['pass'] else 'TARGETS MISSED'}")
    return 0


if __name__ == "__main__":
    with guarded("bench/memory.py") as cleanups:
        sys.exit(main(cleanups))
