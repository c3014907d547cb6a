"""``runa bus``: look into and poke at the stack's shared-memory bus."""

from __future__ import annotations

import argparse
import base64
import sys
import time

from runa import stackbus as bus_mod
from runa.cli.context import CliContext
from runa.cli.numbers import in_range
from runa.cli.voice import command_name, json_line, print_json, say
from runa.errors import UsageError
from runa.splinter import BUSES
from runa.splinter.kv import MAX_KEY_TTL_MS

EX_NOT_FOUND = 1


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bus",
        help="inspect and use the shared-memory bus (splinter)",
        description="Read and write keys on the stack's bus, watch keys and broadcast "
        "channels, and export its state. Keys are UTF-8 strings no longer than "
        "bus.max_key_bytes; values are bytes no longer than bus.max_value_bytes.",
    )
    parser.add_argument("--bus", default="main", choices=BUSES,
                        help="which of the stack's buses (default: %(default)s)")
    sub = parser.add_subparsers(dest="bus_command", metavar="ACTION", required=True)

    init = sub.add_parser("init", help="create the stack's buses if they do not exist",
                          description="Create every bus of the stack with the configured "
                          "geometry. An existing bus is validated and left as it is.")
    init.set_defaults(func=cmd_init)

    set_ = sub.add_parser("set", help="set KEY to VALUE ('-' reads standard input)")
    set_.add_argument("key")
    set_.add_argument("value")
    set_.add_argument("--ttl", type=int, metavar="MS", help="expire the key after MS ms")
    set_.add_argument("--ephemeral", action="store_true",
                      help="the key may be evicted when the store is full")
    set_.set_defaults(func=cmd_set)

    get = sub.add_parser("get", help="print the value of KEY (exit 1 if it does not exist)")
    get.add_argument("key")
    get.add_argument("--json", action="store_true",
                     help="machine-readable output: key, value (UTF-8 text, else null and "
                     "value_base64) and bytes")
    get.set_defaults(func=cmd_get)

    unset = sub.add_parser("unset", help="remove KEY (exit 1 if it did not exist)")
    unset.add_argument("key")
    unset.set_defaults(func=cmd_unset)

    list_ = sub.add_parser("list", help="list keys, optionally those starting with PREFIX")
    list_.add_argument("prefix", nargs="?", default="")
    list_.add_argument("--json", action="store_true", help="machine-readable output")
    list_.set_defaults(func=cmd_list)

    watch = sub.add_parser(
        "watch", help="print each new value of KEY, or each message on a broadcast channel",
        description="With KEY, print the value each time it changes (checked every "
        "--interval). With --channel NAME, subscribe to the broadcast channel NAME and print "
        "each envelope as one JSON line. Ctrl-C stops.")
    watch.add_argument("key", nargs="?")
    watch.add_argument("--channel", metavar="NAME", help="a broadcast channel to follow")
    watch.add_argument("--interval", type=float, default=0.1, metavar="S",
                       help="key polling interval (default: %(default)s)")
    watch.add_argument("--count", type=int, metavar="N", help="stop after N changes/messages")
    watch.set_defaults(func=cmd_watch)

    export = sub.add_parser("export", help="the bus's geometry, counters (store, decay, "
                            "keeper, per component), channels and hot keys as JSON")
    export.set_defaults(func=cmd_export)

    scope = sub.add_parser(
        "scope", help="live view: per-component rates, channel depths, hot keys, decay",
        description="A live terminal view of the bus: messages in/out per second of each "
        "component (from counter deltas), channel depths and send rates, the most read keys, "
        "and the store's expirations and evictions. q or Ctrl-C quits.")
    scope.add_argument("--interval", type=float, default=1.0, metavar="S",
                       help="seconds between frames (default: %(default)s)")
    scope.add_argument("--once", action="store_true",
                       help="print one frame (rates over one interval) and exit")
    scope.add_argument("--top", type=int, default=10, metavar="N",
                       help="how many hot keys to show (default: %(default)s)")
    scope.set_defaults(func=cmd_scope)


def _bus(ctx: CliContext, args: argparse.Namespace):
    return bus_mod.connect(ctx.config, ctx.stack, args.bus)


def cmd_init(ctx: CliContext, args: argparse.Namespace) -> int:
    for where, created in bus_mod.ensure_buses(ctx.config, ctx.stack):
        print(f"{where}: {'created' if created else 'exists, left as it is'}")
    return 0


def cmd_set(ctx: CliContext, args: argparse.Namespace) -> int:
    if args.ttl is not None:
        in_range("--ttl", args.ttl, 1, MAX_KEY_TTL_MS, "milliseconds")
    value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode()
    with _bus(ctx, args) as bus:
        bus.set(args.key, value, ttl_ms=args.ttl, ephemeral=args.ephemeral)
    return 0


def cmd_get(ctx: CliContext, args: argparse.Namespace) -> int:
    with _bus(ctx, args) as bus:
        value = bus.get(args.key)
    if value is None:
        say(command_name(args), f"no key {args.key!r}")
        return EX_NOT_FOUND
    if args.json:
        print_json(value_as_json(args.key, value))
        return 0
    sys.stdout.buffer.write(value + (b"" if value.endswith(b"\n") else b"\n"))
    return 0


def value_as_json(key: str, value: bytes) -> dict[str, object]:
    """A value for scripts: as text when it is UTF-8, else in base64 (values are bytes)."""
    try:
        return {"key": key, "value": value.decode("utf-8"), "bytes": len(value)}
    except UnicodeDecodeError:
        return {"key": key, "value": None, "value_base64": base64.b64encode(value).decode(),
                "bytes": len(value)}


def cmd_unset(ctx: CliContext, args: argparse.Namespace) -> int:
    with _bus(ctx, args) as bus:
        removed = bus.unset(args.key)
    if not removed:
        say(command_name(args), f"no key {args.key!r}")
        return EX_NOT_FOUND
    return 0


def cmd_list(ctx: CliContext, args: argparse.Namespace) -> int:
    now = time.monotonic_ns()
    with _bus(ctx, args) as bus:
        slots = sorted((s for s in bus.kv.scan() if s.key.startswith(args.prefix)
                        and not s.expired(now)), key=lambda s: s.key)
    rows = [{"key": s.key, "bytes": s.length, "reads": s.reads, "ephemeral": s.ephemeral,
             "ttl_ms": max(0, (s.expiry_ns - now) // 1_000_000) if s.expiry_ns else None}
            for s in slots]
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        ttl = f"  ttl {row['ttl_ms']} ms" if row["ttl_ms"] is not None else ""
        print(f"{row['key']}  ({row['bytes']} bytes, {row['reads']} reads){ttl}")
    return 0


def cmd_watch(ctx: CliContext, args: argparse.Namespace) -> int:
    if bool(args.key) == bool(args.channel):
        raise UsageError("give either KEY or --channel NAME")
    in_range("--interval", args.interval, 0.01, 3600, "seconds")
    if args.count is not None:
        in_range("--count", args.count, 1)
    seen = 0
    with _bus(ctx, args) as bus:
        if args.channel:
            receiver = bus.subscribe(args.channel)
            while args.count is None or seen < args.count:
                envelope = receiver.recv(timeout=1.0)
                if envelope is not None:
                    print(json_line(envelope.to_dict()), flush=True)
                    seen += 1
            return 0
        last = bus.get(args.key)
        print(_show(last), flush=True)
        while args.count is None or seen < args.count:
            time.sleep(args.interval)
            value = bus.get(args.key)
            if value != last:
                print(_show(value), flush=True)
                last = value
                seen += 1
    return 0


def _show(value: bytes | None) -> str:
    return "(no such key)" if value is None else value.decode("utf-8", "backslashreplace")


def cmd_export(ctx: CliContext, args: argparse.Namespace) -> int:
    with _bus(ctx, args) as bus:
        print_json(bus.export())
    return 0


def cmd_scope(ctx: CliContext, args: argparse.Namespace) -> int:
    in_range("--interval", args.interval, 0.05, 3600, "seconds")
    in_range("--top", args.top, 0, 1000)
    from runa.cli import scope

    with _bus(ctx, args) as bus:
        return scope.run(bus, interval=args.interval, once=args.once, top=args.top,
                         title=f"runa bus scope: {bus.path}")
