"""``runa config show|get|check|template``: the effective configuration and where each value
came from. Its sections are the shared ones and those the component registry declares."""

from __future__ import annotations

import argparse
import difflib
import json

from runa import preflight
from runa.cli.context import CliContext
from runa.cli.voice import command_name, print_json, say
from runa.components import packaged_schema
from runa.config import Config, config_files
from runa.errors import ConfigError, UsageError
from runa.models import configured_chat_model
from runa.paths import Paths
from runa.splinfer import PersonaLibrary, configured_persona, persona_dirs


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "config",
        help="show or check the layered configuration",
        description="Show the effective configuration with the layer that set each key, "
        "or check every layer and report the first bad value with its file, key and value. "
        "Layers, later wins: packaged defaults, /etc/runa/runa.toml, /etc/runa/conf.d/*.toml, "
        "~/.config/runa/runa.toml, ~/.config/runa/conf.d/*.toml, RUNA_* variables, flags.",
    )
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print every key, its value and its origin")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=show_config)
    get = sub.add_parser("get", help="print one key's effective value (strings as they are, "
                         "others as JSON); exit 64 for a key no section declares")
    get.add_argument("key", metavar="KEY", help="the dotted key, e.g. bus.slots")
    get.set_defaults(func=get_config)
    check = sub.add_parser("check", help="validate every layer and check the values against "
                           "this machine (bus directory and group, chat model, persona); exit 78 "
                           "on an error, warnings alone exit 0")
    check.set_defaults(func=check_config)
    template = sub.add_parser("template", help="print /etc/runa/runa.toml with every key "
                              "commented out at its packaged default")
    template.set_defaults(func=lambda ctx, args: print(packaged_schema().admin_template(), end="")
                          or 0)


def show_config(ctx: CliContext, args: argparse.Namespace) -> int:
    cfg = ctx.config
    rows = [{"key": key, "value": cfg[key], "origin": cfg.origin(key)} for key in sorted(cfg)]
    if args.json:
        print_json(rows)
    else:
        width = max(len(row["key"]) for row in rows)
        for row in rows:
            print(f"{row['key']:<{width}}  {json.dumps(row['value'])}  # {row['origin']}")
    return 0


def get_config(ctx: CliContext, args: argparse.Namespace) -> int:
    cfg = ctx.config
    if args.key not in cfg:
        close = difflib.get_close_matches(args.key, list(cfg), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(f"no configuration key {args.key!r}{hint}")
    value = cfg[args.key]
    print(value if isinstance(value, str) else json.dumps(value))
    return 0


def configured_policy(cfg: Config, paths: Paths) -> None:
    """ConfigError when ``policy.default`` is unknown or below the lock (splinfer then runs
    under the minimum set instead)."""
    from runa.policy import PolicyLibrary, PolicyLocked, PolicySetError, UnknownPolicyError

    try:
        PolicyLibrary.for_stack(paths, cfg).configured(cfg)
    except PolicyLocked as error:
        raise ConfigError(cfg.origin("policy.default"), "policy.default",
                          cfg["policy.default"], f"{error}; splinfer runs under "
                          f"{cfg['policy.minimum']!r} instead") from None
    except (UnknownPolicyError, PolicySetError) as error:
        raise ConfigError(cfg.origin("policy.default"), "policy.default",
                          cfg["policy.default"], str(error)) from None


def check_config(ctx: CliContext, args: argparse.Namespace) -> int:
    files = config_files(ctx.paths)
    cfg = ctx.config  # loading validates every layer, raising ConfigError on the first
    findings = preflight.bus_findings(cfg)
    for check in (lambda: configured_chat_model(cfg, ctx.paths),
                  lambda: configured_persona(cfg, PersonaLibrary(persona_dirs(ctx.paths)))):
        try:
            check()
        except ConfigError as error:
            findings.append(preflight.Finding(error, fatal=True))
    try:
        configured_policy(cfg, ctx.paths)
    except ConfigError as error:  # splinfer still starts, under the minimum set
        findings.append(preflight.Finding(error, fatal=False))
    for finding in findings:
        say(command_name(args), finding)
    if any(finding.fatal for finding in findings):
        return ConfigError.exit_code
    warned = f", {len(findings)} warning(s)" if findings else ""
    print(f"configuration is valid ({len(files)} file(s) read{warned})")
    return 0
