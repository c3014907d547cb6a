"""The OpenAI-compatible API (threadwell) against the bus and against llama-server (issue 24).

The same greedy one-shot chats (the story prompts of bench/inference.py, each with a tag of
its round, 128 tokens, end of generation left to the model) go through the API, streamed
(``/v1/chat/completions`` over loopback HTTP), and through ``runa ask``'s client
(``ServiceClient`` on the bus), interleaved in one run of one stack. For each: the time to
the first token from sending, and the generation speed (tokens after the first over the time
from the first to the last). ``api_bus_ratio`` is the median of the per-prompt ratios.

Without ``--quick`` the same prompts go to llama-server's ``/v1/chat/completions`` on the
same model and settings (built as bench/inference.py builds it, once, into
~/.cache/runa-bench): the baselines ``llama_server_api_tok_s`` and
``llama_server_api_ttft_ms``.

    python bench/api.py [--quick]

Writes bench/results/api.json and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cleanup import guarded, stop_stack
from common import Result, Target, median, report
from inference import (
    CONTEXT,
    REPO,
    STORIES,
    Client,
    LlamaServer,
    llama_server_binary,
    runa,
    stack_env,
)

from runa.models.catalog import SMOLLM2_135M
from runa.models.resolve import resolve_model
from runa.paths import Paths, personal_stack

N_PREDICT = 128


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_round(port: int, key: str, model: str, text: str) -> dict[str, Any]:
    """One streamed chat completion: ttft (ms), tok/s after the first, tokens."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}],
                       "temperature": 0, "top_k": 1, "max_tokens": N_PREDICT, "stream": True,
                       "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    sent = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, headers)
    response = conn.getresponse()
    if response.status != 200:
        raise SystemExit(f"the API answered {response.status}: {response.read()[:500]!r}")
    first = last = 0.0
    n_gen = 0
    text_out = []
    for line in response:
        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
            continue
        chunk = json.loads(line[6:])
        content = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else ""
        if content:
            last = time.perf_counter()
            first = first or last
            text_out.append(content)
        if chunk.get("usage"):
            n_gen = int(chunk["usage"]["completion_tokens"])
    conn.close()
    return {"ttft_ms": (first - sent) * 1000, "tok_s": (n_gen - 1) / (last - first),
            "n_gen": n_gen, "text": "".join(text_out)}


def bus_round(client: Client, text: str) -> dict[str, Any]:
    """The same chat through ``runa ask``'s client."""
    turn = client.chat(text, N_PREDICT)
    return {"ttft_ms": (turn["first"] - turn["sent"]) * 1000,
            "tok_s": (turn["n_gen"] - 1) / (turn["last"] - turn["first"]),
            "n_gen": turn["n_gen"], "text": turn["text"]}


def server_round(port: int, text: str) -> dict[str, Any]:
    """The same chat through llama-server's OpenAI endpoint."""
    return api_round(port, "unused", "model", text)


def main(cleanups: contextlib.ExitStack) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds of the 4 prompts, no llama-server (a few minutes)")
    parser.add_argument("--model", help="GGUF file (default: the installed default model)")
    args = parser.parse_args()
    rounds = 2 if args.quick else 5
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    model = Path(args.model) if args.model else resolve_model(
        SMOLLM2_135M.name, Paths.for_stack(personal_stack()).models).path
    port = free_port()
    api: list[dict[str, Any]] = []
    bus: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="runa-bench-api-") as tmp:
        root = Path(tmp)
        env = {**stack_env(root, model), "RUNA_THREADWELL_PORT": str(port)}
        try:
            up = runa(env, "up", "--detach")
            if up.returncode:
                raise SystemExit(f"runa up failed: {up.stderr}"
                                 + (root / "run/runa/supervisor.log").read_text()[-2000:])
            key = runa(env, "api-key", "show").stdout.strip()
            name = model.stem
            client = Client(env)
            bus_round(client, "Hello.")  # warm both paths once
            api_round(port, key, name, "Hello.")
            for r in range(rounds):
                for i, story in enumerate(STORIES):
                    text = f"{story} ({r}.{i})"
                    # Alternate which goes first, so neither always meets a warmer cache.
                    pair = [lambda t=text: bus.append(bus_round(client, t)),
                            lambda t=text: api.append(api_round(port, key, name, t))]
                    for run in pair if (r + i) % 2 == 0 else reversed(pair):
                        run()
            client.close()
        finally:
            stop_stack(env, REPO)
    # Greedy both ways, but not always the same text: the API's chat is a kept conversation
    # and the bus's a one-shot, which splinfer may decode in another sequence of its batch.
    identical = sum(a["text"] == b["text"] for a, b in zip(api, bus, strict=True))
    baselines: dict[str, float] = {}
    if not args.quick:
        with tempfile.TemporaryDirectory(prefix="runa-bench-slots-") as slots:
            server = LlamaServer(llama_server_binary(), model, Path(slots))
            cleanups.callback(server.stop)
            server_round(server.port, "Hello.")
            served = [server_round(server.port, f"{story} ({r}.{i})")
                      for r in range(rounds) for i, story in enumerate(STORIES)]
        baselines = {
            "llama_server_api_tok_s": round(median([s["tok_s"] for s in served]), 1),
            "llama_server_api_ttft_ms": round(median([s["ttft_ms"] for s in served]), 1)}
    metrics = {
        "api_tok_s": round(median([a["tok_s"] for a in api]), 1),
        "api_ttft_ms": round(median([a["ttft_ms"] for a in api]), 1),
        "bus_tok_s": round(median([b["tok_s"] for b in bus]), 1),
        "bus_ttft_ms": round(median([b["ttft_ms"] for b in bus]), 1),
        "api_bus_ratio": round(median([a["tok_s"] / b["tok_s"]
                                       for a, b in zip(api, bus, strict=True)]), 3),
        "api_ttft_over_bus_ms": round(median([a["ttft_ms"] - b["ttft_ms"]
                                              for a, b in zip(api, bus, strict=True)]), 1),
    }
    targets = [Target("api_bus_ratio", ">=", 0.95), Target("api_ttft_over_bus_ms", "<=", 20)]
    if baselines:
        metrics["api_server_ratio"] = round(
            metrics["api_tok_s"] / baselines["llama_server_api_tok_s"], 3)
        targets.append(Target("api_server_ratio", ">=", 1.0))
    result = Result(
        bench="api",
        params={"model": model.name, **CONTEXT, "n_predict": N_PREDICT, "rounds": rounds,
                "prompts": len(STORIES), "greedy": True, "quick": args.quick,
                "n_gen_api": [a["n_gen"] for a in api], "n_gen_bus": [b["n_gen"] for b in bus],
                "identical_answers": f"{identical} of {len(api)}",
                "seconds": round(time.monotonic() - started, 1),
                "loadavg_before": round(load_before, 2),
                "loadavg_after": round(os.getloadavg()[0], 2)},
        metrics=metrics, baselines=baselines, targets=targets)
    return report(result, None)


if __name__ == "__main__":
    with guarded("bench/api.py") as cleanups:
        sys.exit(main(cleanups))
