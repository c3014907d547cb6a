"""Contention: splinfer's engine beside programs that keep CPUs busy, adaptive vs fixed threads.

On an ordinary machine Runa shares the CPUs with a browser or a build. llama.cpp's threads
meet at a barrier after every graph node, so a thread that loses its CPU holds the others
up. With ``splinfer.threads = -1`` the engine measures what other programs use
(runa/splinfer/cpushare.py) and decodes with the CPUs they leave free. This bench runs the
default model in splinfer's engine, greedy, in three conditions: a quiet machine, one busy
process (``while True: pass``), and as many busy processes as CPUs. In each it compares,
round by round interleaved, the adaptive engine with the baseline it must beat: a fixed
thread per usable CPU (what splinfer did before, and llama.cpp's usual advice). Both
engines give the same tokens (checked every round).

    python bench/contention.py [--quick]

Writes bench/results/contention.json and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from cleanup import guarded, stop_processes
from common import Result, Target, median, report

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runa.models.catalog import SMOLLM2_135M  # noqa: E402
from runa.models.resolve import resolve_model  # noqa: E402
from runa.paths import Paths, personal_stack  # noqa: E402
from runa.protocol.params import ContextParams, SamplingParams  # noqa: E402
from runa.splinfer.engine import Engine  # noqa: E402

GEN = SamplingParams(temp=0.0, top_k=1, n_predict=64)
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
LONG_PROMPT = "The harbour wakes before the sun: gulls, ropes, nets and bells. " * 20


class Hogs:
    """``n`` busy processes, unpinned, for the duration of a ``with``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Hogs:
        try:
            for _ in range(self.n):
                self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        except BaseException:  # a signal while starting them: stop those already running
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        stop_processes(self.procs, grace_s=0)
        self.procs = []


def measure(engine: Engine, prompt: list[int]) -> tuple[float, float, tuple[int, ...]]:
    """(generation tok/s, ms to read ``prompt``, the generated tokens) from fresh sequences."""
    seq = engine.new_sequence()
    answer = engine.chat(seq, STORY, GEN)
    engine.release(seq)
    seq = engine.new_sequence()
    read = engine.generate(seq, prompt, SamplingParams(temp=0.0, top_k=1, n_predict=1))
    engine.release(seq)
    return answer.n_gen / answer.gen_seconds, read.prompt_seconds * 1000, answer.tokens


def condition(engines: dict[str, Engine], prompt: list[int], busy: int, rounds: int
              ) -> dict[str, dict[str, float]]:
    """Median tok/s and prompt ms of each engine with ``busy`` busy processes running."""
    with Hogs(busy):
        time.sleep(1.0)  # let the adaptive engine's window see them
        for engine in engines.values():
            measure(engine, prompt)  # warm-up, not counted
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
        threads: list[int] = []
        for _ in range(rounds):
            tokens = set()
            for name, engine in engines.items():
                tok_s, prompt_ms, answer = measure(engine, prompt)
                runs[name].append((tok_s, prompt_ms))
                tokens.add(answer)
                if name == "adaptive":
                    threads.append(engine.threads_now)
            if len(tokens) != 1:
                raise SystemExit("the adaptive and fixed engines answered differently")
    out = {name: {"gen_tok_s": median([r[0] for r in rs]), "prompt_ms": median([r[1] for r in rs])}
           for name, rs in runs.items()}
    out["adaptive"]["threads"] = median(threads)
    return out


def main(cleanups: contextlib.ExitStack) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute: 3 rounds each")
    parser.add_argument("--model", help="GGUF file (default: the installed default model)")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    cpus = len(os.sched_getaffinity(0))
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    model = Path(args.model) if args.model else resolve_model(
        SMOLLM2_135M.name, Paths.for_stack(personal_stack()).models).path
    context = dict(ctx_size=2048, batch_size=512, ubatch_size=512, flash_attn=True)
    engines = {"adaptive": Engine(model, ContextParams(threads=-1, **context)),
               "fixed": Engine(model, ContextParams(threads=cpus, **context))}
    for engine in engines.values():
        cleanups.callback(engine.unload)
        engine.load()
    prompt = engines["fixed"].tokenize(LONG_PROMPT)[:128]
    names = {0: "quiet", 1: "busy1", cpus: "busy_all"}  # one CPU: busy1 is busy_all
    results = {busy: condition(engines, prompt, busy, rounds) for busy in names}

    result = Result("contention", {
        "model": model.name, "cpus": cpus, "rounds": rounds, "n_predict": GEN.n_predict,
        "policy": "off",  # the engines run with no stream gate
        "prompt_tokens": len(prompt), "busy_processes": sorted(names),
        "load_before": round(load_before, 2), "seconds": round(time.monotonic() - started, 1)})
    for busy, name in names.items():
        adaptive, fixed = results[busy]["adaptive"], results[busy]["fixed"]
        result.metrics[f"{name}_gen_tok_s"] = round(adaptive["gen_tok_s"], 1)
        result.metrics[f"{name}_prompt_ms"] = round(adaptive["prompt_ms"], 1)
        result.metrics[f"{name}_threads"] = adaptive["threads"]
        result.metrics[f"{name}_gen_ratio"] = round(adaptive["gen_tok_s"] / fixed["gen_tok_s"], 3)
        result.baselines[f"{name}_fixed_gen_tok_s"] = round(fixed["gen_tok_s"], 1)
        result.baselines[f"{name}_fixed_prompt_ms"] = round(fixed["prompt_ms"], 1)
    result.targets = [Target("quiet_gen_ratio", ">=", 0.95)]  # adapting costs nothing alone
    result.targets += [Target(f"{name}_gen_ratio", ">=", 1.3) for busy, name in names.items()
                       if busy]
    return report(result)


if __name__ == "__main__":
    with guarded("bench/contention.py") as cleanups:
        raise SystemExit(main(cleanups))
