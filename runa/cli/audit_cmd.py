"""``runa audit [--json]``: incarnations, reasons and policy decisions, from the journal;
``--policy``: the token policy's interventions (runa.cli.interventions)."""

from __future__ import annotations

import argparse
import time
from datetime import datetime

from runa import log
from runa.cli import interventions
from runa.cli.context import CliContext
from runa.cli.since import parse_since
from runa.cli.voice import json_line, print_json
from runa.errors import UsageError
from runa.gilgul import audit


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "audit",
        help="what was restarted, why, and what the restart policy (gilgul) decided",
        description="Read gilgul's events back from the journal, under systemd "
        "(runa-gilgul) and under Runa's own supervisor (runa-supervisor, 'runa up'), and "
        "list every incarnation of every component: why it was started, its process, how "
        "it ended and what the policy decided (restart, after which delay, or hold). With "
        "--policy, list the token policy's interventions instead (docs/policy.md): rule, "
        "category, weight and action, never the text, and the unit or command that wrote each "
        "record (any process of the user can write one: records are only as trustworthy as "
        "the user's processes). Needs root or the systemd-journal "
        "group. Exit status: 0 listed; 64 a bad --since; 69 no journal (--policy); 77 the "
        "journal may not be read by this user.",
        epilog="Examples: runa audit --since 1h --component splinfer; "
        "runa audit --policy --since 1d",
    )
    parser.add_argument("--policy", action="store_true",
                        help="the policy's interventions (time, conversation, policy, rule, "
                        "category, weight, action, side, token index, the process that "
                        "wrote the record), newest last")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object: incarnations and the events they come from "
                        "(with --policy: one JSON object a line, one per intervention)")
    parser.add_argument("--since", metavar="WHEN",
                        help="only events since WHEN: 30s, 15m, 2h, 1d ago, an ISO date-time, "
                        "or @EPOCH-SECONDS")
    parser.add_argument("--component", metavar="NAME", help="only this component")
    parser.add_argument("--mode", choices=("systemd", "supervisor"),
                        help="only events of gilgul under systemd, or of 'runa up'")
    parser.set_defaults(func=cmd_audit)


def cmd_audit(ctx: CliContext, args: argparse.Namespace) -> int:
    since = parse_since(args.since, time.time())
    if args.policy:
        return policy_interventions(ctx, args, since)
    audit.check_access()
    stream = [e for e in audit.events(audit.read_journal(since))
              if (args.component is None or e.component == args.component)
              and (args.mode is None or e.mode == args.mode)]
    items = audit.incarnations(stream)
    if args.json:
        print_json(audit.as_json(items, stream))
        return 0
    if not items:
        print("no incarnations in the journal" + (f" since {args.since}" if args.since else ""))
        return 0
    print(f"{'started':<19}  {'mode':<10} {'component':<10} {'inc':>3}  {'because':<13} "
          f"{'pid':>7}  {'ended':<13} decision")
    for item in items:
        began = _clock(item.started)
        decision = item.decision + (f" in {item.delay_s:g} s" if item.decision == "restart"
                                    and item.delay_s else "")
        decision += " (escalated)" if item.escalated else ""
        print(f"{began:<19}  {item.mode:<10} {item.component:<10} {item.incarnation:>3}  "
              f"{item.start_reason:<13} {item.pid or '-':>7}  "
              f"{item.end_reason or ('running' if item.running else '-'):<13} "
              f"{decision or '-'}")
    return 0


def policy_interventions(ctx: CliContext, args: argparse.Namespace,
                         since: float | None) -> int:
    """``--policy``: the interventions, from splinfer (or --component) in either mode."""
    if args.mode is not None:
        raise UsageError("--mode goes with the incarnations; --policy lists the "
                         "interventions of both modes")
    interventions.check_journal(log.journal_available(), ctx.paths.runtime / "supervisor.log")
    audit.check_access()
    items = [e for e in interventions.events(interventions.read_journal(since))
             if args.component is None or e.component == args.component]
    if args.json:
        for item in items:
            print(json_line(item.to_dict()))
        return 0
    if not items:
        print("no policy interventions in the journal"
              + (f" since {args.since}" if args.since else ""))
        return 0
    print("\n".join(interventions.table(items)))
    return 0


def _clock(stamp: float | None) -> str:
    return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S") if stamp else "-"
