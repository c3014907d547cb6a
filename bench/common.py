"""What every benchmark shares: percentiles, CPU placement, targets and the result file.

A result is written to ``bench/results/<name>.json`` as DESIGN §8 says::

    {bench, commit, date, machine, params, metrics, baselines, targets, pass}

and printed as a table with each metric beside its target.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
       ">": lambda a, b: a > b}


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank on the sorted samples."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def pin(cpu: int | None) -> None:
    """Pin this process to one CPU (None: leave it to the scheduler)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(),
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=RESULTS.parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass(frozen=True)
class Target:
    metric: str
    op: str
    value: float


@dataclass
class Result:
    bench: str
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)

    def evaluated_targets(self) -> dict[str, dict[str, Any]]:
        out = {}
        for target in self.targets:
            value = self.metrics.get(target.metric, self.baselines.get(target.metric))
            met = value is not None and OPS[target.op](value, target.value)
            out[target.metric] = {"op": target.op, "value": target.value, "met": met}
        return out

    def as_json(self) -> dict[str, Any]:
        targets = self.evaluated_targets()
        return {
            "bench": self.bench,
            "commit": commit(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "params": self.params,
            "metrics": self.metrics,
            "baselines": self.baselines,
            "targets": targets,
            "pass": all(t["met"] for t in targets.values()),
        }

    def write(self, path: Path | None = None) -> Path:
        path = path or RESULTS / f"{self.bench}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")
        return path

    def table(self) -> str:
        """A Markdown table: metric, value, target, met — what the README shows."""
        targets = self.evaluated_targets()
        rows = ["| metric | value | target | met |", "|---|---|---|---|"]
        for kind, values in (("", self.metrics), ("baseline: ", self.baselines)):
            for name, value in values.items():
                target = targets.get(name)
                goal = f"{target['op']} {_fmt(target['value'])}" if target else ""
                met = ("yes" if target["met"] else "**no**") if target else ""
                rows.append(f"| {kind}{name} | {_fmt(value)} | {goal} | {met} |")
        return "\n".join(rows)


def _fmt(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def report(result: Result, out: Path | None = None, stream: Any = sys.stdout) -> int:
    """Write the JSON, print the table; exit status 0 when every target is met."""
    path = result.write(out)
    print(result.table(), file=stream)
    data = json.loads(path.read_text())
    print(f"\nwrote {path} — {'all targets met' if data['pass'] else 'TARGETS MISSED'}",
          file=stream)
    return 0


def merge_params(*parts: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return merged
