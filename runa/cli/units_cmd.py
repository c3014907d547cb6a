"""``runa units render``: the systemd user units, from the component registry and templates."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runa import registry
from runa.cli.context import CliContext
from runa.cli.voice import command_name, say
from runa.gilgul import units


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "units",
        help="render the systemd user units from the component registry",
        description="Render runa.target and one runa-<component>.service per component from "
        "the component registry (packaged, overridden by /etc/runa/components.d/*.toml) and "
        "the packaged Jinja2 templates. Run-time limits are not rendered: gilgul applies them "
        "from the configuration as drop-ins. Exit status: 0 done (or, with --check, up to "
        "date); 1 --check found differences; 78 a bad registry (the message names file and "
        "key).",
    )
    sub = parser.add_subparsers(dest="units_command", metavar="ACTION", required=True)
    render = sub.add_parser("render", help="write (or --check) the rendered units")
    render.add_argument("--output", "-o", type=Path, default=Path("systemd"), metavar="DIR",
                        help="where the units go (default: ./%(default)s, the source tree's)")
    render.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 listing the files in DIR that differ")
    render.add_argument("--packaged", action="store_true",
                        help="ignore /etc/runa/components.d: render what the source tree "
                        "commits and the packages install")
    render.add_argument("--executable", default=units.EXECUTABLE, metavar="PATH",
                        help="the runa the units execute (default: %(default)s)")
    render.set_defaults(func=cmd_render)


def cmd_render(ctx: CliContext, args: argparse.Namespace) -> int:
    reg = registry.load() if args.packaged else ctx.registry
    rendered = units.render(reg, executable=args.executable)
    if args.check:
        problems = units.differences(rendered, args.output)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            say(command_name(args), "the units are out of date; run: runa units render "
                "--packaged")
            return 1
        print(f"{len(rendered)} units in {args.output} are up to date")
        return 0
    for path in units.write(rendered, args.output):
        print(path)
    return 0
