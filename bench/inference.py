"""Inference: splinfer through the bus against llama-cpp-python and llama-server (issues 5, 6).

Four measurements on the default model, all greedy, with the settings splinfer ships
(flash attention on, f16 cache, 4096-token context shared by 4 sequences; ``--flash-attn
off`` measures the other setting):

1. Generation speed through the bus against llama-cpp-python called directly (same
   context parameters, same prompt, so the same tokens): tokens after the first over
   the time from the first token to the last; rounds interleaved, ratio = median of the
   per-round ratios. The stack runs under the policy set ``off`` (no stream gate), so like
   is compared with like; each round also sends the same request under ``default``
   (``bus_policy_gen_ratio``: what tokenWhisper's inline tier costs through the bus).
2. One answer alone against four at once (one-shot chats, 128 tokens each, distinct
   prompts): tokens over wall time from the first send to the last final envelope.
3. A returning conversation with a ~1,000-token history: time to first token when its
   state comes back from its file (``resume``), when the file is gone and the history is
   re-processed (``reprocess``), and after ``runa down``/``runa up`` (``after restart``).
4. The splinfer process's peak RSS and the idle stack's CPU.

Without ``--quick`` it also builds llama-server from llama-cpp-python's vendored
llama.cpp (once, into ~/.cache/runa-bench; never into the repository) and measures
the same resume and four-at-once runs there as baselines. docs/bench.md says more.

    python bench/inference.py [--quick] [--flash-attn on|off]

Writes bench/results/inference.json (inference-flash-attn-off.json with that override) and
prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from cleanup import guarded, stop_stack
from common import Result, Target, median, report

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runa.client import ServiceClient  # noqa: E402
from runa.components import load_config as load  # noqa: E402
from runa.models.catalog import SMOLLM2_135M  # noqa: E402
from runa.models.embedder import embedding_model_path  # noqa: E402
from runa.models.resolve import resolve_model  # noqa: E402
from runa.paths import Paths, personal_stack  # noqa: E402
from runa.protocol import splinfer as splinfer_ops  # noqa: E402
from runa.stackbus import connect  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
STORIES = [PROMPT,
           "Write a long story about a baker who bakes bread for a whole village at night.",
           "Write a long story about a girl who builds a boat from old doors.",
           "Write a long story about a dog that waits every day at a small train station."]
HISTORY_TEXT = ("The harbour town wakes slowly. Fishermen mend their nets, the baker opens "
                "his shutters, and children run along the sea wall to watch the boats come "
                "in. Gulls circle the market square, where old women sell bread, cheese and "
                "apples from wooden carts. ")
CONTEXT = {"ctx_size": 4096, "threads": 2, "batch_size": 2048, "flash_attn": True,
           "parallel": 4}
N_PREDICT = 128
HISTORY_TOKENS = 1000
CACHE = Path(os.environ.get("RUNA_BENCH_CACHE", Path.home() / ".cache/runa-bench"))
LLAMA_CPP_PYTHON = "0.3.36"


# -- the stack -------------------------------------------------------------------------

def stack_env(root: Path, model: Path) -> dict[str, str]:
    """A stack of its own under ``root`` with ``model``; whisper (the semantic tier) loads
    the embedding model installed for this user (HOME moves to ``root``)."""
    embedding = embedding_model_path("default", Paths.for_stack(personal_stack()).models)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNA_")}
    env.update(
        RUNA_SYSCONFDIR=str(root / "etc"), HOME=str(root), XDG_RUNTIME_DIR=str(root / "run"),
        XDG_CONFIG_HOME=str(root / "config"), XDG_STATE_HOME=str(root / "state"),
        XDG_DATA_HOME=str(root / "data"), RUNA_STACK=f"bench{os.getpid()}",
        RUNA_SPLINFER_MODEL=str(model), RUNA_SPLINFER_IDLE_UNLOAD_S="0",
        RUNA_SPLINFER_PERSONA="plain", RUNA_WHISPER_EMBEDDING_MODEL=str(embedding),
        # The bus/direct ratio compares like with like: no policy. Each round also runs the
        # same request under 'default' (the request's policy field) for the figure with it.
        RUNA_POLICY_DEFAULT="off",
        **{f"RUNA_SPLINFER_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
           for k, v in CONTEXT.items()},
    )
    (root / "run").mkdir(mode=0o700)
    # No system prompt and llama.cpp's defaults: the same prompt as the direct paths.
    personas = root / "config/runa/personas"
    personas.mkdir(parents=True)
    (personas / "plain.md").write_text("---\ndescription: no system prompt (bench)\n---\n")
    return env


def runa(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runa", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def splinfer_pid(root: Path) -> int:
    state = json.loads((root / "run/runa/supervisor.json").read_text())
    return next(c["pid"] for c in state["components"] if c["name"] == "splinfer")


def stack_pids(root: Path) -> list[int]:
    state = json.loads((root / "run/runa/supervisor.json").read_text())
    return [c["pid"] for c in state["components"]]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


class Client:
    """One person at the bus."""

    def __init__(self, env: dict[str, str]) -> None:
        config = load(Paths.for_stack(env["RUNA_STACK"], env), env)
        self.bus = connect(config, env["RUNA_STACK"])
        self.client = ServiceClient(self.bus, "splinfer", "bench")

    def close(self) -> None:
        self.client.close()
        self.bus.close()

    def chat(self, text: str, n_predict: int, **extra: Any) -> dict[str, Any]:
        """One turn; the final payload plus send/first/last times and the whole text."""
        payload = splinfer_ops.chat(text, params={"temp": 0, "top_k": 1, "n_predict": n_predict},
                                    **extra)
        stamps, pieces, final = [], [], {}
        sent = time.perf_counter()
        for envelope in self.client.request(payload, idle_timeout=120):
            piece = envelope.payload.get("text", "")
            if piece or envelope.eof:  # not the "reading N tokens" notice sent before any token
                stamps.append(time.perf_counter())
            pieces.append(piece)
            if envelope.eof:
                final = envelope.payload
        return {**final, "text": "".join(pieces), "sent": sent, "first": stamps[0],
                "last": stamps[-1]}

    def forget(self, conversation: str) -> None:
        next(iter(self.client.request(splinfer_ops.request("forget",
                                                           conversation=conversation))))


# -- 1. bus against llama-cpp-python --------------------------------------------------------

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


def bus_round(client: Client, n_predict: int, policy: str | None = None
              ) -> tuple[float, str, dict]:
    """The same request through splinfer; (gen tok/s, text, final counters)."""
    turn = client.chat(PROMPT, n_predict, **({"policy": policy} if policy else {}))
    # splinfer sends the first token alone, then batches; the eof carries the last token.
    return (turn["n_gen"] - 1) / (turn["last"] - turn["first"]), turn["text"], turn


# -- 2. one alone against four at once ------------------------------------------------------

def single_tok_s(turn: dict[str, Any]) -> float:
    """A one-shot answer's tokens over the time from sending to its final envelope."""
    return turn["n_gen"] / (turn["last"] - turn["sent"])


def concurrent_round(env: dict[str, str], tag: int) -> tuple[float, list[int]]:
    """Four one-shot chats sent at once; (total tok/s over the wall time, n_gen each)."""
    clients = [Client(env) for _ in STORIES]
    turns: list[dict[str, Any]] = [{} for _ in STORIES]
    start = threading.Barrier(len(STORIES))

    def person(i: int) -> None:
        start.wait()
        turns[i] = clients[i].chat(f"{STORIES[i]} ({tag})", N_PREDICT)

    threads = [threading.Thread(target=person, args=(i,)) for i in range(len(STORIES))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for c in clients:
        c.close()
    wall = max(t["last"] for t in turns) - min(t["sent"] for t in turns)
    return sum(t["n_gen"] for t in turns) / wall, [t["n_gen"] for t in turns]


# -- 3. conversations: resume against reprocess -----------------------------------------------

def history_text(llm, tag: str) -> str:
    """A user message of about HISTORY_TOKENS tokens, unique to ``tag``."""
    text = f"[{tag}] " + HISTORY_TEXT * 40
    tokens = llm.tokenize(text.encode(), add_bos=False)[: HISTORY_TOKENS - 20]
    return llm.detokenize(tokens).decode("utf-8", errors="ignore")


def push_out(client: Client, tag: str) -> None:
    """Fill every sequence with other conversations, then forget them: whoever held a
    sequence before has left it (its state is in its file) and the sequences are free."""
    others = [f"push-{tag}-{i}" for i in range(CONTEXT["parallel"])]
    for other in others:
        client.chat("Hello.", 2, conversation=other)
    for other in others:
        client.forget(other)


def resume_rounds(client: Client, llm, state_dir: Path, conv: str, rounds: int
                  ) -> tuple[list[float], list[float], list[float], dict[str, Any]]:
    """(reprocess TTFTs, resume TTFTs, resume overheads, details), interleaved by round.

    One conversation: its first turn is the ~1,000-token message; each round re-reads it
    (state file deleted) and then brings it back from its file. It grows by two short turns
    a round. The overhead is the resume TTFT minus the decode of the new turn's own tokens
    (the final envelope's ``prompt_ms``): the restore, the planning and the bus."""
    first = client.chat(history_text(llm, conv), 16, conversation=conv)
    reprocess, resume, overhead, turn_ms = [], [], [], []
    details: dict[str, Any] = {"history_prompt_tokens": first["n_prompt"]}
    for r in range(rounds):
        push_out(client, f"a{r}")
        (state_dir / f"{conv}.state").unlink()  # gone: the history is read again
        again = client.chat("Please go on.", 8, conversation=conv)
        assert not again["restored"], again
        push_out(client, f"b{r}")
        back = client.chat("Please go on.", 8, conversation=conv)
        assert back["restored"] and back["n_eval"] < 40, back
        reprocess.append((again["first"] - again["sent"]) * 1000)
        resume.append((back["first"] - back["sent"]) * 1000)
        overhead.append(resume[-1] - back["prompt_ms"])
        turn_ms.append(back["prompt_ms"])
        details.update(reprocess_n_eval=again["n_eval"], resume_n_eval=back["n_eval"])
    details["resume_prompt_ms"] = round(median(turn_ms), 1)
    return reprocess, resume, overhead, details


def after_restarts(env: dict[str, str], root: Path, conv: str, rounds: int
                   ) -> tuple[list[float], float]:
    """``runa down``/``runa up`` ``rounds`` times; after each, the conversation's next turn
    comes from its state file. (TTFTs, the largest splinfer peak RSS seen)."""
    rss = peak_rss_mib(splinfer_pid(root))
    ttfts = []
    for _ in range(rounds):
        runa(env, "down")
        up = runa(env, "up", "--detach")
        if up.returncode:
            raise SystemExit(f"runa up failed: {up.stderr}")
        client = Client(env)
        try:
            client.chat("Hi.", 1)  # one-time set-up of the new process, not a restore
            turn = client.chat("Please go on.", 8, conversation=conv)
            assert turn["restored"] and turn["n_eval"] < 40, turn
            ttfts.append((turn["first"] - turn["sent"]) * 1000)
        finally:
            client.close()
        rss = max(rss, peak_rss_mib(splinfer_pid(root)))
    return ttfts, rss


# -- llama-server (the full run's baselines) ------------------------------------------------

def llama_server_binary() -> Path:
    """llama-server from llama-cpp-python's vendored llama.cpp, built once into CACHE."""
    binary = CACHE / "llama-server/bin/llama-server"
    if binary.exists():
        return binary
    src = CACHE / "src" / f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
    if not src.exists():
        (CACHE / "src").mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        ":all:", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d",
                        str(CACHE / "src")], check=True)
        with tarfile.open(CACHE / "src" / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz") as tar:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(CACHE / "src", **safe)  # our own pinned download
    build = CACHE / "llama-server"
    print(f"building llama-server into {build} (a few minutes, once)", file=sys.stderr)
    subprocess.run(["cmake", "-S", str(src / "vendor/llama.cpp"), "-B", str(build),
                    "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=OFF", "-DLLAMA_CURL=OFF",
                    "-DLLAMA_OPENSSL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
                    "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TESTS=OFF",
                    "-DLLAMA_BUILD_EXAMPLES=OFF"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j2"],
                   check=True, capture_output=True)
    return binary


def _post(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def _stream_ttft(port: int, body: dict[str, Any]) -> tuple[float, int]:
    """(seconds from sending a streaming /completion to its first token, prompt tokens the
    server evaluated for it)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/completion",
                                     data=json.dumps({**body, "stream": True}).encode(),
                                     headers={"Content-Type": "application/json"})
    sent = time.perf_counter()
    first = None
    prompt_n = -1
    with urllib.request.urlopen(request, timeout=300) as response:
        for line in response:
            if not line.startswith(b"data: "):
                continue
            if first is None:
                first = time.perf_counter() - sent
            chunk = json.loads(line[6:])
            if "timings" in chunk:
                prompt_n = int(chunk["timings"].get("prompt_n", -1))
    if first is None:
        raise RuntimeError("no token streamed")
    return first, prompt_n


class LlamaServer:
    def __init__(self, binary: Path, model: Path, slots: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen(
            [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
             "-t", str(CONTEXT["threads"]), "-c", str(CONTEXT["ctx_size"]),
             "-np", str(CONTEXT["parallel"]), "-kvu", "--slot-save-path", str(slots)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.wait_healthy(60)
        except BaseException:  # not healthy, or the bench was stopped meanwhile
            self.stop()
            raise

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("llama-server did not become healthy")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)

    def template(self, text: str) -> str:
        return _post(self.port, "/apply-template",
                     {"messages": [{"role": "user", "content": text}]})["prompt"]

    def resume_ttft(self, history: str) -> tuple[float, int]:
        """Save slot 0, erase it, use it for something else, restore, continue; (ms, prompt_n
        of the continued turn)."""
        prompt = self.template(history)
        first = _post(self.port, "/completion", {"prompt": prompt, "n_predict": 16,
                                                 "temperature": 0, "id_slot": 0,
                                                 "cache_prompt": True})
        _post(self.port, "/slots/0?action=save", {"filename": "bench.bin"})
        _post(self.port, "/slots/0?action=erase", {})
        _post(self.port, "/completion", {"prompt": self.template("Hello."), "n_predict": 2,
                                         "id_slot": 0, "temperature": 0})
        _post(self.port, "/slots/0?action=erase", {})
        follow = (prompt + first["content"] + "<|im_end|>\n"
                  + self.template("Please go on."))
        started = time.perf_counter()
        _post(self.port, "/slots/0?action=restore", {"filename": "bench.bin"})
        restored = time.perf_counter() - started
        ttft, prompt_n = _stream_ttft(self.port, {"prompt": follow, "n_predict": 8,
                                                  "temperature": 0, "id_slot": 0,
                                                  "cache_prompt": True})
        return (restored + ttft) * 1000, prompt_n

    def concurrent(self, tag: int) -> float:
        """Four completions at once, 128 tokens each (end of text ignored); total tok/s."""
        spans: list[tuple[float, float, int]] = []
        start = threading.Barrier(len(STORIES))

        def one(i: int) -> None:
            prompt = self.template(f"{STORIES[i]} ({tag})")
            start.wait()
            t0 = time.perf_counter()
            reply = _post(self.port, "/completion", {
                "prompt": prompt, "n_predict": N_PREDICT, "temperature": 0, "top_k": 1,
                "ignore_eos": True, "cache_prompt": False})
            spans.append((t0, time.perf_counter(), int(reply["tokens_predicted"])))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(STORIES))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        wall = max(s[1] for s in spans) - min(s[0] for s in spans)
        return sum(s[2] for s in spans) / wall


def llama_server_baselines(model: Path, llm, rounds: int) -> dict[str, float]:
    binary = llama_server_binary()
    with tempfile.TemporaryDirectory(prefix="runa-bench-slots-") as slots:
        server = LlamaServer(binary, model, Path(slots))
        try:
            resumes, prompt_ns, rates = [], [], []
            for r in range(rounds):
                ms, prompt_n = server.resume_ttft(history_text(llm, f"server-{r}"))
                resumes.append(ms)
                prompt_ns.append(prompt_n)
                rates.append(server.concurrent(1000 + r))
            rss = peak_rss_mib(server.process.pid)
        finally:
            server.stop()
    return {"llama_server_resume_ttft_ms": round(median(resumes), 1),
            "llama_server_concurrent4_tok_s": round(median(rates), 1),
            "llama_server_rss_peak_mib": round(rss, 1),
            "_prompt_n_after_restore": median(prompt_ns)}


# -- the run ---------------------------------------------------------------------------------

def main(cleanups: contextlib.ExitStack) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="under a minute: 3 rounds each, 3 s idle window, no llama-server")
    parser.add_argument("--model", help="GGUF file (default: the installed default model)")
    parser.add_argument("--flash-attn", choices=("on", "off"),
                        help="override splinfer.flash_attn (default: as shipped, on)")
    args = parser.parse_args()
    out = None
    if args.flash_attn and (args.flash_attn == "on") != CONTEXT["flash_attn"]:
        CONTEXT["flash_attn"] = args.flash_attn == "on"
        out = REPO / "bench/results" / f"inference-flash-attn-{args.flash_attn}.json"
    rounds = 3 if args.quick else 5
    idle_window = 3.0 if args.quick else 30.0
    started = time.monotonic()
    load_before = os.getloadavg()[0]

    paths = Paths.for_stack(personal_stack())
    model = Path(args.model) if args.model else resolve_model(SMOLLM2_135M.name,
                                                              paths.models).path
    from llama_cpp import Llama

    llm = Llama(model_path=str(model), n_ctx=CONTEXT["ctx_size"],
                n_batch=CONTEXT["batch_size"], n_threads=CONTEXT["threads"],
                n_threads_batch=CONTEXT["threads"], flash_attn=CONTEXT["flash_attn"],
                verbose=False)
    cleanups.callback(llm.close)
    with tempfile.TemporaryDirectory(prefix="runa-bench-") as tmp:
        root = Path(tmp)
        env = stack_env(root, model)
        try:
            up = runa(env, "up", "--detach")
            if up.returncode:
                raise SystemExit(f"runa up failed: {up.stderr}"
                                 + (root / "run/runa/supervisor.log").read_text()[-2000:])
            client = Client(env)
            bus_round(client, 8)  # warm both paths once
            direct_round(llm, 8)
            bus_round(client, 8, "default")
            direct, via_bus, ratios, single, together, c_ratios = [], [], [], [], [], []
            guarded_bus, policy_ratios = [], []
            for r in range(rounds):
                d, d_text = direct_round(llm, N_PREDICT)
                b, b_text, final = bus_round(client, N_PREDICT)
                g, g_text, g_final = bus_round(client, N_PREDICT, "default")
                if d_text != b_text:
                    raise SystemExit("bus and direct answers differ: settings are not equal")
                if g_text != b_text or g_final.get("interventions"):
                    raise SystemExit("the 'default' policy changed the answer: the figures "
                                     "would not compare the same work")
                direct.append(d)
                via_bus.append(b)
                ratios.append(b / d)
                guarded_bus.append(g)
                policy_ratios.append(g / b)
                c, n_gens = concurrent_round(env, r)
                single.append(single_tok_s(final))
                together.append(c)
                c_ratios.append(c / single[-1])
            state_dir = root / "state/runa/conversations"
            conv = f"history-{os.getpid()}"
            reprocess, resume, overhead, details = resume_rounds(client, llm, state_dir, conv,
                                                                 rounds)
            client.close()
            restart, rss = after_restarts(env, root, conv, 3)
            restart_ratios = [a / b for a, b in zip(restart, reprocess, strict=False)]
            pids = stack_pids(root)
            before = sum(cpu_seconds(pid) for pid in pids)
            time.sleep(idle_window)
            idle_pct = 100 * (sum(cpu_seconds(pid) for pid in pids) - before) / idle_window
        finally:
            stop_stack(env, REPO)
    baselines: dict[str, float] = {}
    if not args.quick:
        baselines = llama_server_baselines(model, llm, rounds)
        details["llama_server_prompt_n_after_restore"] = baselines.pop("_prompt_n_after_restore")

    metrics = {
        "direct_tok_s": round(median(direct), 1), "bus_tok_s": round(median(via_bus), 1),
        "bus_direct_ratio": round(median(ratios), 3),
        "bus_default_policy_tok_s": round(median(guarded_bus), 1),
        "bus_policy_gen_ratio": round(median(policy_ratios), 3),
        "single_tok_s": round(median(single), 1),
        "concurrent4_tok_s": round(median(together), 1),
        "concurrent4_single_ratio": round(median(c_ratios), 3),
        "reprocess_ttft_ms": round(median(reprocess), 1),
        "resume_ttft_ms": round(median(resume), 1),
        "resume_after_restart_ttft_ms": round(median(restart), 1),
        "resume_overhead_ms": round(median(overhead), 1),
        "resume_reprocess_ratio": round(median([a / b for a, b in
                                                zip(resume, reprocess, strict=True)]), 4),
        "resume_after_restart_reprocess_ratio": round(median(restart_ratios), 4),
        "splinfer_rss_peak_mib": round(rss, 1),
        "idle_stack_cpu_pct": round(idle_pct, 2),
    }
    targets = [Target("bus_direct_ratio", ">=", 0.97),
               Target("bus_policy_gen_ratio", ">=", 0.95),
               Target("concurrent4_single_ratio", ">=", 1.1),
               Target("resume_reprocess_ratio", "<=", 0.02),
               Target("resume_after_restart_reprocess_ratio", "<=", 0.02),
               Target("splinfer_rss_peak_mib", "<=", 400),
               Target("idle_stack_cpu_pct", "<=", 1.0)]
    if baselines:
        metrics["concurrent4_server_ratio"] = round(
            metrics["concurrent4_tok_s"] / baselines["llama_server_concurrent4_tok_s"], 3)
        targets.insert(2, Target("concurrent4_server_ratio", ">=", 0.85))
    result = Result(
        bench="inference",
        params={"model": model.name, **CONTEXT, "n_predict": N_PREDICT, "rounds": rounds,
                # bus_* and the rest run under 'off'; bus_default_policy_* under 'default'
                "policy": "off", "policy_also": "default",
                "greedy": True, "n_gen": final["n_gen"], "concurrent_n_gen": n_gens,
                "idle_window_s": idle_window, "prompt": PROMPT, "quick": args.quick,
                **details, "seconds": round(time.monotonic() - started, 1),
                "loadavg_before": round(load_before, 2),
                "loadavg_after": round(os.getloadavg()[0], 2)},
        metrics=metrics, baselines=baselines, targets=targets,
    )
    return report(result, out)


if __name__ == "__main__":
    if shutil.which("cmake") is None and "--quick" not in sys.argv:
        print("note: the full run builds llama-server and needs cmake", file=sys.stderr)
    with guarded("bench/inference.py") as cleanups:
        sys.exit(main(cleanups))
