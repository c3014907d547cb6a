"""Safety, part ``stack``: generation through a running stack with the whisper service (issue 20).

The in-process ``generation`` part times the engine with tier 1's gate; what a person gets is
a stack where splinfer also sends the answer's windows to the whisper component (tier 2,
every ``splinfer.whisper_window_tokens`` tokens, without waiting) and whisper embeds them on
its own niced thread beside generation on the same two cores. This part starts such a stack
(``runa up --detach``, the supervisor, the default chat and embedding models, the packaged
classifier) and asks the same greedy prompt under ``off`` (no gate, whisper idle) and
``default`` (tier 1 and whisper's windows) in interleaved rounds, the order alternating.

``policy_gen_ratio`` (the issue's figure, with whisper running) is the median of the per-round
default / off ratios of generation tok/s (tokens after the first over the time from the first
to the last, as bench/inference.py measures the bus). whisper's ``judged`` counter before and
after the default rounds proves its windows ran; its CPU time is reported beside.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from cleanup import stop_stack
from common import Result, Target, median
from inference import N_PREDICT, PROMPT, REPO, Client, bus_round, cpu_seconds, runa, stack_env

from runa.client import ServiceClient
from runa.models.embedder import embedding_model_path
from runa.paths import Paths, personal_stack
from runa.protocol.whisper import OPS

if TYPE_CHECKING:
    from safety import Setup


def whisper_status(client: Client) -> dict:
    """whisper's ``status`` reply through the stack's bus."""
    asker = ServiceClient(client.bus, "whisper", "bench")
    try:
        return next(iter(asker.request(OPS["status"].request(), idle_timeout=30))).payload
    finally:
        asker.close()


def whisper_pid(root: Path) -> int:
    import json

    state = json.loads((root / "run/runa/supervisor.json").read_text())
    return next(c["pid"] for c in state["components"] if c["name"] == "whisper")


def stack_part(setup: Setup, result: Result) -> None:
    import tempfile

    from safety import say

    rounds = 9 if setup.quick else 15  # 5 rounds swung the median by ±0.04 here
    embedding = embedding_model_path("default", Paths.for_stack(personal_stack()).models)
    with tempfile.TemporaryDirectory(prefix="runa-bench-safety-stack-") as tmp:
        root = Path(tmp)
        env = stack_env(root, setup.model)
        try:
            say("stack: runa up --detach (splinfer, whisper, tieto)")
            up = runa(env, "up", "--detach")
            if up.returncode:
                raise SystemExit(f"runa up failed: {up.stderr}")
            client = Client(env)
            deadline = time.monotonic() + 90
            while whisper_status(client).get("available") is not True:
                if time.monotonic() > deadline:
                    raise SystemExit("whisper did not load its model within 90 s: "
                                     f"{whisper_status(client)}")
                time.sleep(0.5)
            bus_round(client, 8)  # warm both paths once
            bus_round(client, 8, "default")
            judged_before = whisper_status(client).get("judged", 0)
            cpu_before = cpu_seconds(whisper_pid(root))
            off, guarded, ratios, changed = [], [], [], 0
            seen: Counter[str] = Counter()
            for r in range(rounds):
                say(f"stack: round {r + 1}/{rounds}")
                order = ("off", "default") if r % 2 == 0 else ("default", "off")
                got = {}
                for policy in order:
                    got[policy] = bus_round(client, N_PREDICT,
                                            None if policy == "off" else "default")
                b, b_text, _ = got["off"]
                g, g_text, g_final = got["default"]
                changed += g_text != b_text or bool(g_final.get("interventions"))
                seen.update(f"{i.get('action')} {i.get('rule')} ({i.get('side')})"
                            for i in g_final.get("interventions", ()))
                off.append(b)
                guarded.append(g)
                ratios.append(g / b)
            judged = whisper_status(client).get("judged", 0) - judged_before
            whisper_cpu = cpu_seconds(whisper_pid(root)) - cpu_before
            client.close()
        finally:
            stop_stack(env, REPO)
    result.metrics.update({
        "policy_gen_ratio": round(median(ratios), 3),
        "stack_default_gen_tok_s": round(median(guarded), 1),
        "whisper_windows_judged": judged,
    })
    result.baselines["stack_off_gen_tok_s"] = round(median(off), 1)
    result.targets.append(Target("policy_gen_ratio", ">=", 0.95))
    result.params["stack"] = {
        "what": "generation tok/s through a running stack (runa up, supervisor) under "
                "'default' with the whisper service judging the answer's windows, over 'off' "
                "in the same run; the median of per-round ratios",
        "rounds": rounds, "order": "alternating", "n_predict": N_PREDICT, "prompt": PROMPT,
        "embedding_model": embedding.name, "whisper_cpu_s": round(whisper_cpu, 2),
        "answers_changed_by_policy": changed,
        "interventions": dict(sorted(seen.items())),
    }
