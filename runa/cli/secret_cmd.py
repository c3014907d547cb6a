"""``runa secret``: a person's way to coven's vault, through gilgul's broker like any requester.

Values and passphrases are read from standard input or from the terminal with echo off,
never from the command line (where ``ps`` and ``/proc/<pid>/cmdline`` show them to every
user), and kept in bytearrays that are wiped once sent. docs/secret.md is the manual.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import os
import sys
import termios
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

from runa import stackbus as bus_mod
from runa.cli.context import CliContext
from runa.cli.voice import print_json, say
from runa.coven import VALUE_MAX, check_name, check_value
from runa.crypto import sodium
from runa.crypto.process import undumpable
from runa.crypto.sealed import BusKey, key_path
from runa.errors import RunaError, UsageError
from runa.protocol import secret_wire as wire
from runa.protocol.secrets import CREATE_MAX, CREATE_MIN, CREATE_SIZE, size_problem
from runa.secret_client import BrokerUnavailable, SecretFault, SecretsClient

#: How long ``runa status`` waits for the vault's state (it must stay quick without coven).
STATUS_TIMEOUT_S = 1.5
TTY = "/dev/tty"
EXIT_TEXT = ("Exit status: 0 done; 64 a bad name, an empty or too large value, a value given "
             "where none is read; 65 the vault was altered or damaged; 66 no such secret; 69 "
             "Runa, gilgul's broker or coven is not running, or the vault is locked; 77 not "
             "allowed, or a wrong passphrase.")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "secret",
        help="keep secrets in coven's encrypted vault: set, get, list, rm, unlock, lock",
        description="Keep named secrets (API keys, alethia's memory key) in coven's vault, "
        "encrypted at rest, through gilgul's secrets broker: this command is a requester "
        "like any component, identified by the kernel, and as a person it may do every "
        "operation; components may only read what the registry lets them. Values and "
        "passphrases never go on the command line: they are read from standard input "
        "(when it is not a terminal, or with '-') or typed at a prompt that does not echo. "
        "Every access is recorded in the journal by coven (name, requester, decision; "
        "never a value). " + EXIT_TEXT,
        epilog="Examples: runa secret set api.key   (type it twice at the prompt); "
        "runa secret create api.token --size 48; "
        "runa secret get api.key > key.txt; runa secret list --json; "
        "runa secret rotate --passphrase; runa secret unlock. docs/secret.md says more.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    set_ = actions.add_parser(
        "set", help="store a secret, its value read from standard input or a silent prompt",
        description="Store NAME's value: standard input as it is, byte for byte (nothing "
        "stripped: use printf, not echo, unless the newline belongs to it), when it is not "
        "a terminal or with '-'; otherwise typed twice at a prompt that does not echo. "
        f"1 to {VALUE_MAX} bytes. " + EXIT_TEXT)
    set_.add_argument("name", metavar="NAME", help="a lowercase letter, then lowercase "
                      "letters, digits, '.', '_' or '-' (at most 64 characters)")
    set_.add_argument("stdin", metavar="-", nargs="?",
                      help="read the value from standard input (the default when it is "
                      "not a terminal)")
    create = actions.add_parser(
        "create", help="make a secret of random bytes, unless it exists (never printed)",
        description="Have coven make NAME of SIZE random bytes and store it, unless NAME "
        "exists (then it is kept as it is). The value is not printed: 'runa secret get' "
        "does that. " + EXIT_TEXT)
    create.add_argument("name", metavar="NAME")
    create.add_argument("--size", type=int, default=CREATE_SIZE, metavar="N",
                        help=f"how many random bytes, {CREATE_MIN} to {CREATE_MAX} "
                        f"(default {CREATE_SIZE})")
    get = actions.add_parser(
        "get", help="print a secret's value",
        description="Write NAME's value to standard output exactly as stored (no newline "
        "added, so 'runa secret get x > file' holds the value and nothing else); on a "
        "terminal a newline follows it, so the prompt does not stick to it. " + EXIT_TEXT)
    get.add_argument("name", metavar="NAME")
    listing = actions.add_parser(
        "list", help="the secrets' names, sizes and last changes (never values)",
        description="List the vault's secrets: name, size in bytes, last change. " + EXIT_TEXT)
    listing.add_argument("--json", action="store_true",
                         help='one JSON object: {"secrets": [{"name", "size", "updated_ms"}]}')
    rm = actions.add_parser("rm", help="remove a secret",
                            description="Remove NAME from the vault. " + EXIT_TEXT)
    rm.add_argument("name", metavar="NAME")
    rotate = actions.add_parser(
        "rotate", help="re-encrypt the vault under a new key (or move to a passphrase)",
        description="Re-encrypt every secret under a new data key and a new key: a new key "
        "file, or with --passphrase a new passphrase (typed twice, or read from standard "
        "input), or with --key-file back to a key file. A kill midway leaves the old vault "
        "or the new one. " + EXIT_TEXT)
    mode = rotate.add_mutually_exclusive_group()
    mode.add_argument("--passphrase", action="store_const", dest="mode", const=wire.PASSPHRASE,
                      help="protect the vault with a passphrase (it then starts locked)")
    mode.add_argument("--key-file", action="store_const", dest="mode", const=wire.KEYFILE,
                      help="protect the vault with a key file (it starts unattended)")
    actions.add_parser(
        "unlock", help="unlock a passphrase vault (the passphrase typed without echo)",
        description="Unlock the vault: a passphrase vault asks for its passphrase (typed "
        "without echo, or read from standard input); a key-file vault locked with 'runa "
        "secret lock' needs none. A wrong passphrase changes nothing (exit 77). " + EXIT_TEXT)
    actions.add_parser("lock", help="forget the vault's key until the next unlock",
                       description="Lock the vault: coven forgets its key and answers "
                       "every read 'locked' until 'runa secret unlock'. " + EXIT_TEXT)
    status = actions.add_parser(
        "status", help="locked or unlocked, the key mode, the number of secrets",
        description="Say whether there is a vault, whether it is locked, how its key is "
        "kept (key file or passphrase, with the Argon2id parameters) and, unlocked, how "
        "many secrets it holds. " + EXIT_TEXT)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_secret)


# -- talking to the broker ---------------------------------------------------------------------


@contextlib.contextmanager
def client(ctx: CliContext) -> Iterator[SecretsClient]:
    """A client of the stack's broker; the bus first, so a stopped stack gets no key file."""
    with bus_mod.connect(ctx.config, ctx.stack) as bus:
        key = BusKey.load_or_create(key_path(ctx.paths.runtime))
        try:
            with SecretsClient(bus, key) as asker:
                yield asker
        finally:
            key.close()


def cmd_secret(ctx: CliContext, args: argparse.Namespace) -> int:
    undumpable()  # a value or the bus key is in this process's memory from here on
    if getattr(args, "name", None) is not None:
        check_name(args.name)  # exit 64 before anything is read or sent
    action = args.action
    if action == "set":
        return _set(ctx, args)
    if action == "get":
        return _get(ctx, args)
    if action == "create":
        return _create(ctx, args)
    if action == "unlock":
        return _unlock(ctx)
    if action == "rotate":
        return _rotate(ctx, args)
    with client(ctx) as asker:
        answer = asker.call(action, name=getattr(args, "name", None))
    try:
        if action == "list":
            return _print_list(answer.fields, args.json)
        if action == "status":
            return _print_status(answer.fields, args.json)
        print(f"removed {args.name}" if action == "rm"
              else "the vault is locked; 'runa secret unlock' opens it again")
        return 0
    finally:
        answer.wipe()


def _set(ctx: CliContext, args: argparse.Namespace) -> int:
    if args.stdin not in (None, "-"):  # never echoed: it may be the value itself
        raise SecretUsage("a value is never taken from the command line, where other "
                          "processes can read it: give it on standard input ('-') or type "
                          "it at the prompt")
    with client(ctx) as asker:  # a stopped stack is said before a value is typed
        value = _read_value(f"value of {args.name}", use_stdin=args.stdin == "-",
                            confirm=True)
        try:
            check_value(args.name, value)
            asker.call("set", name=args.name, value=value).wipe()
        finally:
            sodium.wipe(value)
    print(f"stored {args.name} ({len(value)} bytes)")
    return 0


def _create(ctx: CliContext, args: argparse.Namespace) -> int:
    problem = size_problem(args.size)
    if problem:
        raise SecretUsage(problem)
    with client(ctx) as asker:
        value, created = asker.create(args.name, args.size)
    size = len(value)
    sodium.wipe(value)
    print(f"created {args.name} ({size} random bytes)" if created
          else f"kept {args.name}: it exists ({size} bytes)")
    return 0


def _get(ctx: CliContext, args: argparse.Namespace) -> int:
    with client(ctx) as asker:
        answer = asker.call("get", name=args.name)
    try:
        out = sys.stdout.buffer
        out.write(answer.value)
        if sys.stdout.isatty():
            out.write(b"\n")
        out.flush()
    finally:
        answer.wipe()
    return 0


def _unlock(ctx: CliContext) -> int:
    with client(ctx) as asker:
        status = asker.call("status")
        status.wipe()
        state, mode = status.fields.get(wire.STATE), status.fields.get(wire.MODE)
        if state == wire.ABSENT:
            raise SecretUsage("there is no vault to unlock yet ('runa secret set NAME' "
                              "makes one)")
        if state == wire.UNLOCKED:
            print("the vault is already unlocked")
            return 0
        passphrase = (_read_value("passphrase", use_stdin=not sys.stdin.isatty(),
                                  confirm=False) if mode == wire.PASSPHRASE else bytearray())
        try:
            asker.call("unlock", value=passphrase, timeout=60.0).wipe()
        finally:
            sodium.wipe(passphrase)
    print("the vault is unlocked")
    return 0


def _rotate(ctx: CliContext, args: argparse.Namespace) -> int:
    """A new key; a passphrase vault (or ``--passphrase``) needs its new passphrase."""
    with client(ctx) as asker:
        mode = args.mode
        if mode is None:
            status = asker.call("status")
            status.wipe()
            if status.fields.get(wire.MODE) == wire.PASSPHRASE:
                mode = wire.PASSPHRASE
        passphrase = bytearray()
        try:
            if mode == wire.PASSPHRASE:
                passphrase = _read_value("new passphrase", use_stdin=not sys.stdin.isatty(),
                                         confirm=True)
                if not passphrase:
                    raise SecretUsage("a passphrase cannot be empty")
            asker.call("rotate", value=passphrase,
                       extra={wire.MODE: mode} if mode else None, timeout=60.0).wipe()
        finally:
            sodium.wipe(passphrase)
    print("the vault was re-encrypted under a new key"
          + {wire.PASSPHRASE: " (a passphrase: coven starts it locked from now on)",
             wire.KEYFILE: " (a key file)"}.get(mode or "", ""))
    return 0


class SecretUsage(UsageError):
    """What was asked of ``runa secret`` cannot be done as asked (exit 64)."""


# -- reading values without showing them ------------------------------------------------------


def _read_value(what: str, *, use_stdin: bool, confirm: bool) -> bytearray:
    """A value from standard input (as it is) or from the terminal with echo off."""
    if use_stdin or not sys.stdin.isatty():
        return _read_all(sys.stdin.fileno(), what)
    try:
        terminal = open(TTY, "r+b", buffering=0)  # noqa: SIM115 - closed below
    except OSError:
        raise SecretUsage(f"no terminal to type the {what} at: give it on standard "
                          "input") from None
    with terminal:
        first = _prompt(terminal, f"{what}: ")
        if not confirm:
            return first
        again = _prompt(terminal, f"{what} (again): ")
        try:
            if not hmac.compare_digest(first, again):
                sodium.wipe(first)
                raise SecretUsage(f"the two {what}s differ; nothing was stored")
        finally:
            sodium.wipe(again)
        return first


def _read_all(fd: int, what: str) -> bytearray:
    """Up to ``VALUE_MAX`` bytes of ``fd`` in a buffer of its own; more is refused. Read
    from the fd itself: a buffered reader would keep an unwiped copy of the value."""
    buffer = sodium.lock_memory(bytearray(VALUE_MAX + 1))
    size = 0
    while size <= VALUE_MAX:
        got = os.readv(fd, [memoryview(buffer)[size:]])
        if not got:
            break
        size += got
    if size > VALUE_MAX:
        sodium.wipe(buffer)
        raise SecretUsage(f"the {what} on standard input is over {VALUE_MAX} bytes")
    value = sodium.lock_memory(bytearray(memoryview(buffer)[:size]))
    sodium.wipe(buffer)
    return value


def _prompt(terminal: BinaryIO, text: str) -> bytearray:
    """One line typed at ``terminal`` with echo off, without its newline."""
    fd = terminal.fileno()
    old = termios.tcgetattr(fd)
    new = termios.tcgetattr(fd)
    new[3] &= ~termios.ECHO
    buffer = sodium.lock_memory(bytearray(VALUE_MAX + 1))
    size = 0
    try:
        termios.tcsetattr(fd, termios.TCSAFLUSH, new)
        terminal.write(text.encode())  # only once nothing typed can be echoed
        while size <= VALUE_MAX:
            got = os.readv(fd, [memoryview(buffer)[size:size + 1]])
            if not got or buffer[size] == 0x0A:
                break
            size += got
        return sodium.lock_memory(bytearray(memoryview(buffer)[:size]))
    finally:
        sodium.wipe(buffer)  # also what was typed before a Ctrl-C
        termios.tcsetattr(fd, termios.TCSAFLUSH, old)
        terminal.write(b"\n")


# -- printing ----------------------------------------------------------------------------------


def _print_list(fields: dict[str, Any], as_json: bool) -> int:
    entries = list(fields.get(wire.SECRETS) or [])
    if as_json:
        print_json({"secrets": entries})
        return 0
    if not entries:
        print("no secrets")
        return 0
    width = max(len(str(e.get(wire.ENTRY_NAME, ""))) for e in entries)
    for entry in entries:
        changed = entry.get(wire.ENTRY_CHANGED)
        when = (datetime.fromtimestamp(changed / 1000, UTC).strftime(
            "%Y-%m-%d %H:%M:%SZ") if isinstance(changed, int) else "?")
        print(f"{entry.get(wire.ENTRY_NAME, '?'):<{width}}  {entry.get(wire.ENTRY_SIZE, '?'):>6}"
              f" bytes  {when}")
    return 0


def describe(fields: dict[str, Any]) -> str:
    """The vault's state in a few words, as ``runa secret status`` and ``runa status`` say."""
    state = fields.get(wire.STATE)
    if state == wire.ABSENT:
        return "no vault yet ('runa secret set NAME' makes one)"
    mode = {wire.KEYFILE: "key file", wire.PASSPHRASE: "passphrase"}.get(
        str(fields.get(wire.MODE)), str(fields.get(wire.MODE) or "?"))
    if state == wire.LOCKED:
        return f"locked ({mode}); run 'runa secret unlock'"
    count = fields.get(wire.COUNT)
    if count is None:
        return f"unlocked ({mode})"
    return f"unlocked ({mode}, {count} secret{'' if count == 1 else 's'})"


def _print_status(fields: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print_json(fields)
        return 0
    print(f"vault: {describe(fields)}")
    if fields.get(wire.KEY_ID):
        print(f"key id: {fields[wire.KEY_ID]}")
    argon2 = fields.get(wire.ARGON2)
    if isinstance(argon2, dict):
        print(f"argon2id: opslimit {argon2.get('opslimit')}, memlimit "
              f"{argon2.get('memlimit')} bytes")
    return 0


def vault_state(ctx: CliContext) -> tuple[dict[str, Any] | None, str]:
    """The vault's status fields for ``runa status``, or None and why not; quick (a short
    timeout) when gilgul or coven is not there."""
    try:
        with client(ctx) as asker:
            answer = asker.call("status", timeout=STATUS_TIMEOUT_S)
        answer.wipe()
        return answer.fields, ""
    except bus_mod.BusNotRunning:
        return None, "the stack is not running"
    except (BrokerUnavailable, SecretFault) as error:
        return None, str(error)
    except RunaError as error:
        say("runa status", f"the vault's state is unknown: {error}")
        return None, str(error)
