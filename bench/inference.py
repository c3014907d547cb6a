"""Inference through the bus against llama-cpp-python called directly (issue 5).

Both paths run the default model with the same context parameters (flash attention on,
same threads, same context size), greedy, on the same prompt, so they generate the same
tokens. Generation speed is the tokens after the first divided by the time from the first token
to the last, which leaves prompt processing out: llama-cpp-python streams one chunk per
token; splinfer sends the first token alone and the last with ``eof`` (n_gen counts them). The rounds are interleaved
(direct, bus, direct, bus, ...) and the ratio is the median of the per-round ratios.

    python bench/inference.py [--quick]

Writes bench/results/inference.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Result, Target, median, report

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runa.bus import connect  # noqa: E402
from runa.client import ServiceClient  # noqa: E402
from runa.config import load  # noqa: E402
from runa.models.catalog import SMOLLM2_135M  # noqa: E402
from runa.models.resolve import resolve_model  # noqa: E402
from runa.paths import Paths, personal_stack  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
CONTEXT = {"ctx_size": 2048, "threads": 2, "batch_size": 512, "flash_attn": True}


def stack_env(root: Path, model: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNA_")}
    env.update(
        RUNA_SYSCONFDIR=str(root / "etc"), HOME=str(root), XDG_RUNTIME_DIR=str(root / "run"),
        XDG_CONFIG_HOME=str(root / "config"), XDG_STATE_HOME=str(root / "state"),
        XDG_DATA_HOME=str(root / "data"), RUNA_STACK=f"bench{os.getpid()}",
        RUNA_SPLINFER_MODEL=str(model), RUNA_SPLINFER_IDLE_UNLOAD_S="0",
        **{f"RUNA_SPLINFER_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
           for k, v in CONTEXT.items()},
    )
    (root / "run").mkdir(mode=0o700)
    return env


def runa(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runa", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def direct_round(llm, n_predict: int) -> tuple[float, str]:
    """Stream a greedy chat completion from llama-cpp-python; (gen tok/s, text)."""
    llm.reset()
    stamps, pieces = [], []
    for chunk in llm.create_chat_completion(
            [{"role": "user", "content": PROMPT}], temperature=0.0, top_k=1,
            max_tokens=n_predict, stream=True):
        piece = chunk["choices"][0]["delta"].get("content")
        if piece:
            stamps.append(time.perf_counter())
            pieces.append(piece)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]), "".join(pieces)


def bus_round(client: ServiceClient, n_predict: int) -> tuple[float, str, dict]:
    """The same request through splinfer; (gen tok/s, text, final counters)."""
    stamps, pieces, final = [], [], {}
    payload = {"op": "chat", "text": PROMPT,
               "params": {"temp": 0, "top_k": 1, "n_predict": n_predict}}
    for envelope in client.request(payload):
        stamps.append(time.perf_counter())
        pieces.append(envelope.payload.get("text", ""))
        if envelope.eof:
            final = envelope.payload
    # splinfer sends the first token alone, then batches; the eof carries the last token.
    return (final["n_gen"] - 1) / (stamps[-1] - stamps[0]), "".join(pieces), final


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 60 s: 3 rounds, 10 s idle")
    parser.add_argument("--model", help="GGUF file (default: the installed default model)")
    args = parser.parse_args()
    rounds = 3 if args.quick else 5
    n_predict = 128
    idle_window = 10.0 if args.quick else 30.0

    paths = Paths.for_stack(personal_stack())
    model = Path(args.model) if args.model else resolve_model(SMOLLM2_135M.name,
                                                              paths.models).path
    from llama_cpp import Llama

    llm = Llama(model_path=str(model), n_ctx=CONTEXT["ctx_size"], n_batch=CONTEXT["batch_size"],
                n_threads=CONTEXT["threads"], n_threads_batch=CONTEXT["threads"],
                flash_attn=True, verbose=False)
    with tempfile.TemporaryDirectory(prefix="runa-bench-") as tmp:
        env = stack_env(Path(tmp), model)
        up = runa(env, "up", "--detach")
        if up.returncode:
            raise SystemExit(f"runa up failed: {up.stderr}")
        try:
            state = json.loads((Path(tmp) / "run/runa/supervisor.json").read_text())
            pids = {c["name"]: c["pid"] for c in state["components"]}
            config = load(Paths.for_stack(env["RUNA_STACK"], env), env)
            direct, via_bus, ratios = [], [], []
            with connect(config, env["RUNA_STACK"]) as bus, \
                    ServiceClient(bus, "splinfer", "bench") as client:
                bus_round(client, 8)  # warm both paths once
                direct_round(llm, 8)
                for _ in range(rounds):
                    d, d_text = direct_round(llm, n_predict)
                    b, b_text, final = bus_round(client, n_predict)
                    if d_text != b_text:
                        raise SystemExit("bus and direct answers differ: settings are not equal")
                    direct.append(d)
                    via_bus.append(b)
                    ratios.append(b / d)
            llm.close()
            stack = list(pids.values())
            before = sum(cpu_seconds(pid) for pid in stack)
            time.sleep(idle_window)
            idle_pct = 100 * (sum(cpu_seconds(pid) for pid in stack) - before) / idle_window
            rss = peak_rss_mib(pids["splinfer"])
        finally:
            runa(env, "down")
            for segment in Path("/dev/shm").glob(f"runa-{env['RUNA_STACK']}-*"):
                segment.unlink()

    result = Result(
        bench="inference",
        params={"model": model.name, **CONTEXT, "n_predict": n_predict, "rounds": rounds,
                "greedy": True, "n_gen": final["n_gen"], "idle_window_s": idle_window,
                "prompt": PROMPT, "quick": args.quick},
        metrics={"direct_tok_s": round(median(direct), 1), "bus_tok_s": round(median(via_bus), 1),
                 "bus_direct_ratio": round(median(ratios), 3),
                 "splinfer_rss_peak_mib": round(rss, 1),
                 "idle_stack_cpu_pct": round(idle_pct, 2)},
        targets=[Target("bus_direct_ratio", ">=", 0.97), Target("splinfer_rss_peak_mib", "<=", 400),
                 Target("idle_stack_cpu_pct", "<=", 1.0)],
    )
    return report(result)


if __name__ == "__main__":
    sys.exit(main())
