"""``runa policy list | show NAME | check``: the policy sets, their tables, and both tiers on
texts."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from runa.cli.context import CliContext
from runa.cli.voice import command_name, json_line, print_json, say
from runa.client import ServiceClient, ServiceUnavailable
from runa.errors import ConfigError, RunaError
from runa.policy import (
    CATEGORIES,
    Action,
    Checker,
    PolicyLibrary,
    PolicySet,
    Tier1,
    Verdict,
    exact_tokens,
    fingerprint_of,
)
from runa.policy.taxonomy import WEIGHTS
from runa.policy.tiers import PromptCheck, combine, unavailable
from runa.protocol import splinfer as protocol

EX_DATAERR = 65
EX_UNAVAILABLE = 69


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "policy",
        help="the policy sets (tokenWhisper): list them, show one, check texts against one",
        description="A policy set says, for each hazard category and motif weight, what "
        "happens when the Token Impact Matrix matches: allow, flag, whisper, mask, delay or "
        "block (docs/policy.md). Sets and matrix files are layered: packaged < "
        "/etc/runa/policy < ~/.config/runa/policy. Exit status: 0; 64 a usage mistake; 65 a "
        "malformed policy file, or a bad input line of 'check'; 66 no such set; 69 'check' "
        "could not run the semantic tier (tier 2); 78 a configuration error.",
    )
    sub = parser.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    list_ = sub.add_parser("list", help="every policy set, and whether the lock forbids it",
                           description="Each set's name and description; 'locked' marks a set "
                           "below the administrator's minimum (policy.minimum), which nobody "
                           "may choose.")
    list_.add_argument("--json", action="store_true", help="machine-readable output")
    list_.set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="one set's table: category x weight -> action",
                          description="The action of every category (with its Llama Guard 3 "
                          "code) at each weight, the refusal, the mask text and the fail rule.")
    show.add_argument("name", help="the policy set")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_show)
    check = sub.add_parser(
        "check", help="judge texts with both tiers: JSON lines in, one verdict a line out",
        description="Read JSON lines {\"id\": ..., \"text\": ...} on standard input and write "
        "one verdict per line: id, action (the strictest match), categories, score (the "
        "strongest matched weight: light 0.34, medium 0.67, heavy 1.0; 0 when nothing "
        "matched) and rules. Through the stack's splinfer when it runs: the stack's sets "
        "and matrix and its model's tokenizer, texts sent in batches unless read from a "
        "terminal. Otherwise in this process, with this user's layers of sets and "
        "matrix (user, /etc, packaged) and the configured chat model's tokenizer when "
        "the model is installed (token-id motifs included); without an installed model "
        "it falls back to a tokenizer-free text matcher (token-id motifs with a phrase "
        "match as phrases, the others not at all). A "
        "malformed line gets an error line naming its number and the run goes on; exit "
        "status 65 at the end if any line was bad. The semantic tier (tier 2) takes part "
        "as in an answer: through the stack its whisper service, otherwise the embedding "
        "model and the classifier loaded in this process. When it cannot run (whisper not "
        "answering, no embedding model) the set's fail rule is in the verdicts (rule "
        "tier2.unavailable), a warning says why, and the exit status is 69 (65 wins); when "
        "the registry disables whisper, tier 2 is off and only tier 1 judges. The lock does "
        "not apply: checking a text under a set shows nobody anything.",
        epilog="Example: echo '{\"id\": 1, \"text\": \"I want to end my life\"}' | "
        "runa policy check --json")
    check.add_argument("--policy", metavar="NAME", default=None,
                       help="the policy set (default: policy.default)")
    check.add_argument("--side", choices=("prompt", "output"), default="prompt",
                       help="judge the texts as prompts or as answers (default: %(default)s)")
    check.add_argument("--json", action="store_true",
                       help="write JSON lines {id, action, categories, score, rules} (the "
                       "shape evaluations read) instead of one readable line each")
    check.set_defaults(func=cmd_check)


def library(ctx: CliContext) -> PolicyLibrary:
    return PolicyLibrary.for_stack(ctx.paths, ctx.config)


def _warn_problems(args: argparse.Namespace, policies: PolicyLibrary) -> None:
    for problem in [*policies.matrix().problems, *policies.problems().values()]:
        say(command_name(args), problem)


def cmd_list(ctx: CliContext, args: argparse.Namespace) -> int:
    policies = library(ctx)
    _warn_problems(args, policies)
    rows: list[dict[str, Any]] = []
    for name in policies.names():
        policy = policies.get(name)
        rows.append({"name": name, "description": policy.description,
                     "locked": policies.below_lock(name) is not None,
                     "source": str(policy.source)})
    if args.json:
        print_json({"minimum": policies.lock.minimum or None, "sets": rows})
        return 0
    width = max((len(row["name"]) for row in rows), default=4)
    for row in rows:
        mark = "locked" if row["locked"] else ""
        print(f"{row['name']:<{width}}  {mark:<6}  {row['description']}")
    if policies.lock.minimum:
        print(f"\nThe administrator's minimum is {policies.lock.minimum!r} "
              f"({policies.lock.origin}).")
    return 0


def table(policy: PolicySet) -> dict[str, Any]:
    return {
        "name": policy.name,
        "description": policy.description,
        "fail": policy.fail,
        "mask": policy.mask,
        "refusal": policy.refusal,
        "actions": {category: {weight.value: policy.action(category, weight).value
                               for weight in WEIGHTS} for category in CATEGORIES},
        "whisper": dict(policy.whispers),
        "source": str(policy.source),
    }


def cmd_show(ctx: CliContext, args: argparse.Namespace) -> int:
    policies = library(ctx)
    policy = policies.get(args.name)
    shown = table(policy)
    if args.json:
        print_json(shown)
        return 0
    print(f"{policy.name}: {policy.description}\n({policy.source}; fail {policy.fail}, "
          f"mask {policy.mask!r})\n")
    print(f"{'category':<28}{'':<5}{'light':<9}{'medium':<9}heavy")
    for category, row in shown["actions"].items():
        code = CATEGORIES[category]
        print(f"{category:<28}{code:<5}{row['light']:<9}{row['medium']:<9}{row['heavy']}")
    print(f"\nrefusal: {policy.refusal or '(none)'}")
    reason = policies.below_lock(policy.name)
    if reason:
        print(f"locked: {reason}")
    return 0


# -- check -------------------------------------------------------------------------------------

class ModelTokenizer:
    """A model's vocabulary (llama.cpp, vocab only: no weights, no context) as
    runa.policy.Tokenizer."""

    def __init__(self, path: Path) -> None:
        import llama_cpp

        # llama.cpp's loading chatter is not for this command's readers
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        self._llama = llama_cpp
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise ValueError(f"{path}: llama.cpp cannot read its vocabulary")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_tokens = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._buf = ctypes.create_string_buffer(256)
        self.fingerprint = fingerprint_of(self.piece(i) for i in range(self.n_tokens))

    def _tokenize(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 8
        buf = (self._llama.llama_token * size)()
        n = self._llama.llama_tokenize(self._vocab, data, len(data), buf, size, False, False)
        if n < 0:
            size = -n
            buf = (self._llama.llama_token * size)()
            n = self._llama.llama_tokenize(self._vocab, data, len(data), buf, size, False, False)
        return list(buf[:max(n, 0)])

    def tokenize(self, text: str) -> list[int]:
        """Ids whose pieces make exactly ``text`` (runa.policy.Tokenizer)."""
        return exact_tokens(self._tokenize, self.piece, text)

    def piece(self, token: int) -> bytes:
        n = self._llama.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0,
                                             False)
        if n < 0:
            self._buf = ctypes.create_string_buffer(-n)
            n = self._llama.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf),
                                                 0, False)
        return self._buf.raw[:n]


def local_checker(ctx: CliContext, policy: PolicySet, policies: PolicyLibrary
                  ) -> LocalChecker:
    """Both tiers in this process: tier 1 with the configured model's tokenizer when it is
    installed, tier 2 with the configured embedding model and classifier when they are
    (``RemoteChecker`` checks through a running stack)."""
    from runa.models import configured_chat_model

    tokenizer = None
    with contextlib.suppress(ConfigError, ValueError, RuntimeError, OSError):  # text matcher
        tokenizer = ModelTokenizer(configured_chat_model(ctx.config, ctx.paths).path)
    tier1 = Tier1(policies.matrix(), policy, tokenizer)
    state = Tier2State()
    semantic = None
    try:
        whisper = ctx.registry.get("whisper")
    except KeyError:
        whisper = None
    if whisper is None or not whisper.enabled:
        state.off = ("whisper is not in the component registry" if whisper is None else
                     "whisper is disabled in the component registry")
    elif not policy.passes_everything:
        from runa.whisper.tier import Tier2

        try:
            semantic = Tier2.load(ctx.config, ctx.paths, policies,
                                  logging.getLogger("runa.policy.check"))
        except RunaError as error:
            state.problem = str(error)
    return LocalChecker(tier1, policy, semantic, state)


class Tier2State:
    """What the semantic tier did in one ``check`` run, for the warning at its end."""

    def __init__(self) -> None:
        self.off = ""
        """Why tier 2 is off (the registry disables whisper), else empty."""
        self.problem = ""
        """Why tier 2 could not run (the fail rule is in the verdicts), else empty."""

    def warnings(self) -> list[str]:
        if self.problem:
            return [f"the semantic tier (tier 2) could not run ({self.problem}); the "
                    "verdicts carry the set's fail rule (tier2.unavailable)"]
        if self.off:
            return [f"the semantic tier (tier 2) is off ({self.off}): tier 1 only"]
        return []


class LocalChecker:
    """Tier 1 and tier 2 in this process, combined as splinfer combines them."""

    def __init__(self, tier1: Tier1, policy: PolicySet, semantic: Any,
                 state: Tier2State) -> None:
        self.tier1 = tier1
        self.policy = policy
        self.semantic = semantic  # runa.whisper.tier.Tier2, or None
        self.tier2 = state

    @property
    def problems(self) -> Sequence[Any]:
        return self.tier1.problems

    def check(self, text: str, side: str = "prompt") -> Verdict:
        verdict = self.tier1.check(text, side)
        if self.tier2.off or self.policy.passes_everything:
            return verdict
        if self.semantic is None:
            return combine(verdict, unavailable(self.policy, self.tier2.problem, side=side),
                           self.policy)
        from runa.policy import tier2

        judgement = self.semantic.judge(text, side)
        found = tier2.interventions(judgement, self.policy, side)
        return combine(verdict, PromptCheck(tuple(found), judgement), self.policy)


class RemoteChecker:
    """Tier 1 in the stack's running splinfer (op ``policy_check``, the model's tokenizer):
    the same answers as ``local_checker``, up to 64 texts a request."""

    #: Text per request, well inside one bus message even with every character escaped.
    BATCH_CHARS = 4096

    def __init__(self, client: ServiceClient, policy: str) -> None:
        self.client = client
        self.policy = policy
        self.tier2 = Tier2State()

    def check(self, text: str, side: str = "prompt") -> Verdict:
        return self.check_many([text], side)[0]

    def check_many(self, texts: Sequence[str], side: str = "prompt") -> list[Verdict]:
        answer = self.client.call(protocol.request(
            "policy_check", items=[{"id": i, "text": t} for i, t in enumerate(texts)],
            policy=self.policy, side=side), idle_timeout=120)
        for result in answer["results"]:
            semantic = result.get("tier2") or {}
            self.tier2.off = self.tier2.off or str(semantic.get("off") or "")
            self.tier2.problem = self.tier2.problem or str(semantic.get("unavailable") or "")
        return [Verdict(Action(r["action"]), tuple(r["categories"]), float(r["score"]),
                        tuple(r["rules"])) for r in answer["results"]]

    def batches(self, lines: Iterable[str]) -> Iterator[list[str]]:
        """``lines`` in groups one request may carry (one at a time from a terminal)."""
        batch: list[str] = []
        size = 0
        for line in lines:
            if batch and (len(batch) == protocol.MAX_CHECK_ITEMS
                          or size + len(line) > self.BATCH_CHARS):
                yield batch
                batch, size = [], 0
            batch.append(line)
            size += len(line)
        if batch:
            yield batch


@contextlib.contextmanager
def running_splinfer(ctx: CliContext) -> Iterator[ServiceClient | None]:
    """A client of the stack's splinfer when it runs, else None."""
    from runa import stackbus

    try:
        bus = stackbus.connect(ctx.config, ctx.stack)
    except stackbus.BusNotRunning:
        yield None
        return
    with bus:
        client = ServiceClient(bus, protocol.SERVICE, "runa-policy")
        try:
            client.check_running(grace=0.0)
        except ServiceUnavailable:
            client.close()
            yield None
            return
        with client:
            yield client


def cmd_check(ctx: CliContext, args: argparse.Namespace) -> int:
    policies = library(ctx)
    _warn_problems(args, policies)
    policy = policies.get(args.policy or ctx.config["policy.default"])
    with running_splinfer(ctx) as client:
        checker: LocalChecker | RemoteChecker
        if client is not None:
            checker = RemoteChecker(client, policy.name)
        else:
            checker = local = local_checker(ctx, policy, policies)
            for problem in local.problems:
                say(command_name(args), problem)
        status = run_check(checker, sys.stdin, sys.stdout, side=args.side, as_json=args.json,
                           command=command_name(args))
        state = checker.tier2
        for warning in state.warnings():
            say(command_name(args), warning)
        return status or (EX_UNAVAILABLE if state.problem else 0)


def run_check(checker: Checker, lines: TextIO, out: TextIO, *, side: str, as_json: bool,
              command: str) -> int:
    """Judge each JSON line of ``lines``; 65 when any was malformed, else 0. Through the
    stack, lines go in batches unless they come from a terminal."""
    remote = checker if isinstance(checker, RemoteChecker) and not lines.isatty() else None
    groups = remote.batches(lines) if remote else ([line] for line in lines)
    bad = number = 0
    for group in groups:
        records: dict[int, dict[str, Any]] = {}
        results: dict[int, Verdict | str] = {}  # a verdict, or the line's problem
        for line in group:
            number += 1
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise ValueError('expected an object {"id": ..., "text": "..."}')
                records[number] = record
            except ValueError as error:
                results[number] = f"line {number}: {error}"  # names the line, never its text
        try:
            if remote is not None and records:
                texts = [r["text"] for r in records.values()]
                results.update(zip(records, remote.check_many(texts, side), strict=True))
            else:
                for n, record in records.items():
                    results[n] = checker.check(record["text"], side)
        except RunaError as error:
            results.update({n: f"line {n}: {error}" for n in records if n not in results})
        for n in sorted(results):
            verdict = results[n]
            if isinstance(verdict, str):
                bad += 1
                if as_json:
                    print(json_line({"line": n, "error": verdict}), file=out, flush=True)
                else:
                    say(command, verdict)
                continue
            result = {"id": records[n].get("id"), **verdict.to_dict()}
            if as_json:
                print(json_line(result), file=out, flush=True)
            else:
                found = ", ".join(verdict.rules) or "-"
                print(f"{result['id']}: {verdict.action.value} (score {verdict.score}) {found}",
                      file=out, flush=True)
    return EX_DATAERR if bad else 0
