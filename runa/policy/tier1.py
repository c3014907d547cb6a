"""Tier 1, inline: the matrix compiled for one policy set and one tokenizer.

``Tier1`` is built once per (matrix, policy set, tokenizer) and makes one ``StreamGate`` per
answer (``gate()``) and judges whole texts (``check()``). docs/policy.md, "Tier 1".

Matching. Text is case-folded and every character that is not a letter, digit or ``_`` is a
boundary; a run of them is one boundary symbol (so ``**kill**  someone`` reads as ``kill
someone``), and each symbol keeps the index of its character in the answer. A phrase motif is
matched with a character-level Aho-Corasick automaton, framed by a word boundary on each side
that is a letter or digit (``kill`` does not fire inside ``skills``); ``tokens`` motifs by a
second automaton over token ids. The gate *holds* exactly the tokens whose characters the
automaton's current partial match covers (and those of a partial token match, of a regular
expression's match that could still complete, and every token since the last complete UTF-8
character), and releases the rest at once: with no partial match nothing is held, and never
more than the longest motif needs. Text after a mask in the same token is matched from the
start state; the withdrawal waits while it partly matches a phrase.

Regular expressions (output side) run at every token over the last ``REGEX_WINDOW``
characters with the ``regex`` module's partial matching, which says whether the text could
still become a match: such a match holds its tokens. ``finish`` runs them once more with the
end of the answer as the end. A regex match is masked while the token of its first character
is still held; once streamed, a mask is recorded as a flag ("already streamed") and a block
takes back what is still held and ends the answer.

Per token the gate does a dictionary lookup per character, appends to a few lists (trimmed)
and, when the set has output regexes, one regex call over at most ``2 * REGEX_WINDOW``
characters: nothing grows with the answer.
"""

from __future__ import annotations

import codecs
import hashlib
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import regex

from runa.policy.matrix import Matrix, MatrixError, Motif
from runa.policy.sets import PolicySet
from runa.policy.stream import HOLD, RELEASE_ONE, GateStep
from runa.policy.taxonomy import CATEGORIES, Action
from runa.policy.verdict import Intervention, Verdict

REGEX_WINDOW = 64
#: The reason of a ``delay`` cell decided without the semantic tier, by the set's fail rule
#: (runa.policy.tiers decides such an intervention again when tier 2 answers).
DELAY_ALONE = {"closed": "delay without the semantic tier: fail closed",
               "open": "delay without the semantic tier: fail open"}
_STEPS = tuple(GateStep(release=k) for k in range(257))
_STOPPED = GateStep(stop=True, reason="policy")


class Tokenizer(Protocol):
    """What tier 1 needs of a model's vocabulary."""

    fingerprint: str

    def tokenize(self, text: str) -> list[int]:
        """Token ids whose pieces make exactly ``text`` (no BOS, no special parsing, no
        SentencePiece dummy-prefix space): what a mask or a refusal inserts."""
        ...

    def piece(self, token: int) -> bytes:
        """The bytes ``token`` stands for in output text."""
        ...


def exact_tokens(tokenize: Callable[[str], list[int]], piece: Callable[[int], bytes],
                 text: str) -> list[int]:
    """Ids whose pieces make exactly ``text`` (``Tokenizer.tokenize``), from a model
    tokenizer that may add SentencePiece's dummy-prefix space: the space is taken off again."""
    ids = tokenize(text)

    def spelled(candidate: list[int]) -> str:
        return b"".join(piece(i) for i in candidate).decode("utf-8", "replace")

    if spelled(ids) == text:
        return ids
    if text.startswith(" "):
        shorter = tokenize(text[1:])
        if spelled(shorter) == text:
            return shorter
    if ids and piece(ids[0]) == b" ":
        return ids[1:]
    return ids


def fingerprint_of(pieces: Iterable[bytes]) -> str:
    """A tokenizer's fingerprint: a hash of every token's bytes, in id order."""
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(len(piece).to_bytes(4, "little"))
        digest.update(piece)
    return "sha256:" + digest.hexdigest()[:32]


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _lower(text: str) -> str:
    """Lower-cased text, one character for one (a character whose lower case is longer, as
    İ, is kept as it is), so an index in it is one in ``text``."""
    low = text.lower()
    if len(low) != len(text):
        low = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    return low


def fold(text: str) -> str:
    """Case-folded text with every non-word character a space, one character for one."""
    return "".join(c if _is_word(c) else " " for c in _lower(text))


def _symbols(text: str) -> tuple[str, list[int]]:
    """What the phrase automaton reads of ``text``: folded, each run of non-word characters
    one space; and the index in ``text`` of each symbol."""
    symbols: list[str] = []
    where: list[int] = []
    space = False
    for index, char in enumerate(fold(text)):
        if char == " ":
            if space:
                continue
            space = True
        else:
            space = False
        symbols.append(char)
        where.append(index)
    return "".join(symbols), where


@dataclass(frozen=True)
class _Entry:
    """A pattern's end in the automaton: its motif and its framing."""

    motif: Motif
    length: int  # pattern symbols, boundaries included
    lead: int  # 1 when the pattern starts with a boundary space
    trail: int  # 1 when it ends with one


class _Automaton:
    """Aho-Corasick as a full transition table (one dict lookup a symbol)."""

    def __init__(self, patterns: Sequence[tuple[Sequence[Hashable], _Entry]]) -> None:
        goto: list[dict[Hashable, int]] = [{}]
        outputs: list[list[_Entry]] = [[]]
        self.depth = [0]
        for symbols, entry in patterns:
            state = 0
            for symbol in symbols:
                nxt = goto[state].get(symbol)
                if nxt is None:
                    nxt = len(goto)
                    goto[state][symbol] = nxt
                    goto.append({})
                    outputs.append([])
                    self.depth.append(self.depth[state] + 1)
                state = nxt
            outputs[state].append(entry)
        fail = [0] * len(goto)
        self.delta: list[dict[Hashable, int]] = [dict(goto[0])]
        self.delta.extend({} for _ in range(len(goto) - 1))
        order = deque(goto[0].values())
        while order:  # breadth first: a state's fail target is complete before it
            state = order.popleft()
            row = dict(self.delta[fail[state]])
            row.update(goto[state])
            self.delta[state] = row
            outputs[state] = outputs[state] + outputs[fail[state]]
            for symbol, child in goto[state].items():
                fail[child] = self.delta[fail[state]].get(symbol, 0)
                order.append(child)
        self.out: list[tuple[_Entry, ...] | None] = [tuple(o) or None for o in outputs]
        #: The last symbol of each state's path is a boundary space that is no motif's text.
        self.lead = [0] * len(goto)
        self._mark_lead(goto)

    def _mark_lead(self, goto: list[dict[Hashable, int]]) -> None:
        stack = [(state, 1) for symbol, state in goto[0].items() if symbol == " "]
        while stack:
            state, lead = stack.pop()
            self.lead[state] = lead
            stack.extend((child, lead) for child in goto[state].values())

    def run(self, symbols: Iterable[Hashable], state: int = 0
            ) -> Iterable[tuple[int, tuple[_Entry, ...]]]:
        """(index after the symbol, entries) for every symbol that ends a pattern."""
        delta, out = self.delta, self.out
        for index, symbol in enumerate(symbols, 1):
            state = delta[state].get(symbol, 0)
            if out[state] is not None:
                yield index, out[state]  # type: ignore[misc]


@dataclass(frozen=True)
class Side:
    """The compiled matchers of one side (prompt or output): what a gate reads."""

    chars: _Automaton
    tokens: _Automaton
    regex: Any  # a compiled ``regex`` pattern (partial matching) or None
    regex_motifs: list[Motif]

    def motif_of(self, match: Any) -> Motif:
        """The regex motif a match of ``regex`` is for (its group ``r<i>``)."""
        return self.regex_motifs[int(str(match.lastgroup)[1:])]


@dataclass(frozen=True)
class _Hit:
    motif: Motif
    start: int  # first character (text) or token (tokens motifs)
    end: int  # after the last


class Tier1:
    """The matrix compiled for one policy set and one tokenizer (None: text only, no gates).

    ``problems`` lists the motifs that could not be compiled (a tokens motif bound to another
    tokenizer with no phrase to rebuild it from, or a phrase that tokenizes to nothing):
    reported, not dropped silently.
    """

    def __init__(self, matrix: Matrix, policy: PolicySet, tokenizer: Tokenizer | None,
                 ) -> None:
        self.matrix = matrix
        self.policy = policy
        self.tokenizer = tokenizer
        problems: list[MatrixError] = []
        by_side: dict[str, tuple[list[Any], list[Any], list[Motif]]] = {
            "prompt": ([], [], []), "output": ([], [], [])}
        for motif in matrix.motifs:
            sides = [side for side in ("prompt", "output") if motif.on(side)]
            phrase, ids = self._compile(motif, problems)
            for side in sides:
                chars, tokens, regexes = by_side[side]
                if phrase is not None:
                    chars.append(phrase)
                if ids:
                    tokens.extend((seq, _Entry(motif, len(seq), 0, 0)) for seq in ids)
                if motif.kind == "regex":
                    regexes.append(motif)
        self.problems: tuple[MatrixError, ...] = tuple(problems)
        self._sides = {side: Side(_Automaton(parts[0]), _Automaton(parts[1]),
                                  _combined(parts[2]), parts[2])
                       for side, parts in by_side.items()}
        self.passthrough = policy.passes_everything
        self._token_cache: dict[str, tuple[int, ...]] = {}

    def side(self, side: str) -> Side:
        """The compiled matchers of ``side`` (prompt or output)."""
        return self._sides[side]

    def _compile(self, motif: Motif, problems: list[MatrixError]
                 ) -> tuple[tuple[str, _Entry] | None, list[tuple[int, ...]]]:
        """The character pattern and the token-id sequences of one motif."""
        if motif.kind == "phrase" or (motif.kind == "tokens" and self.tokenizer is None
                                      and motif.pattern):
            folded = _symbols(motif.pattern)[0]
            lead = int(_is_word(motif.pattern[0]))
            trail = int(_is_word(motif.pattern[-1]))
            text = " " * lead + folded + " " * trail
            return (text, _Entry(motif, len(text), lead, trail)), []
        if motif.kind != "tokens" or self.tokenizer is None or motif.tokens is None:
            if motif.kind == "tokens" and not motif.pattern:
                problems.append(MatrixError(motif.source, motif.line, "tokens",
                                f"motif {motif.id!r} has token ids but no phrase, and there "
                                "is no tokenizer to match them with"))
            return None, []
        binding = motif.tokens
        if binding.tokenizer == self.tokenizer.fingerprint:
            return None, [binding.ids]
        if not binding.phrase:
            problems.append(MatrixError(motif.source, motif.line, "tokens.tokenizer",
                            f"motif {motif.id!r} is bound to tokenizer {binding.tokenizer}, "
                            f"not this model's ({self.tokenizer.fingerprint}), and has no "
                            "phrase to rebuild its ids from"))
            return None, []
        variants = {tuple(self.tokenizer.tokenize(binding.phrase)),
                    tuple(self.tokenizer.tokenize(" " + binding.phrase))}
        variants.discard(())
        if not variants:
            problems.append(MatrixError(motif.source, motif.line, "tokens.phrase",
                            f"motif {motif.id!r}: {binding.phrase!r} tokenizes to nothing "
                            "with this model"))
        return None, sorted(variants)

    # -- what a match does -----------------------------------------------------------------

    def effective(self, motif: Motif) -> tuple[Action, str]:
        """The action for ``motif`` under this set, and why it differs from the cell (delay
        without the semantic tier follows the set's ``fail`` rule)."""
        action = self.policy.action(motif.category, motif.weight)
        if action is Action.DELAY:
            if self.policy.fail == "closed":
                return Action.BLOCK, DELAY_ALONE["closed"]
            return Action.FLAG, DELAY_ALONE["open"]
        return action, ""

    def tokens_of(self, text: str) -> tuple[int, ...]:
        """``text`` tokenized once (replacements, the refusal)."""
        ids = self._token_cache.get(text)
        if ids is None:
            assert self.tokenizer is not None
            ids = self._token_cache[text] = tuple(self.tokenizer.tokenize(text)) if text else ()
        return ids

    # -- streams -----------------------------------------------------------------------------

    def gate(self, conversation: str = "") -> OutputGate | PassGate:
        """The gate of one answer (a pass-through when the set allows everything)."""
        if self.passthrough:
            return PassGate()
        if self.tokenizer is None:
            raise ValueError("a stream gate needs the model's tokenizer")
        return OutputGate(self, conversation)

    # -- whole texts -------------------------------------------------------------------------

    def hits(self, text: str, side: str) -> list[_Hit]:
        """Every motif match in ``text`` on ``side``: (motif, character span)."""
        found: list[_Hit] = []
        matchers = self._sides[side]
        symbols, where = _symbols(text)
        where = [-1, *where, len(text)]  # the boundaries framing the text
        for index, entries in matchers.chars.run(" " + symbols + " "):
            for entry in entries:
                found.append(_Hit(entry.motif, where[index - entry.length + entry.lead],
                                  where[index - 1 - entry.trail] + 1))
        if matchers.regex is not None:
            for match in matchers.regex.finditer(text):
                motif = matchers.motif_of(match)
                found.append(_Hit(motif, match.start(), match.end()))
        if self.tokenizer is not None and len(matchers.tokens.depth) > 1:
            for _index, entries in matchers.tokens.run(self.tokenizer.tokenize(text)):
                for entry in entries:  # token spans: not maskable in the text
                    found.append(_Hit(entry.motif, -1, -1))
        return found

    def check(self, text: str, side: str = "prompt") -> Verdict:
        """The verdict on a whole text (see ``Verdict``); a mask gives the masked text."""
        if side not in ("prompt", "output"):
            raise ValueError(f"side must be prompt or output, not {side!r}")
        hits = self.hits(text, side)
        if not hits:
            return Verdict(Action.ALLOW)
        strictest = Action.ALLOW
        interventions: list[Intervention] = []
        masks: list[_Hit] = []
        whispers: list[str] = []
        for hit in hits:
            action, reason = self.effective(hit.motif)
            strictest = strictest.stricter(action)
            if action is Action.ALLOW:
                continue
            if action is Action.MASK:
                if hit.start < 0:
                    action, reason = Action.BLOCK, "a token motif cannot be masked in text"
                    strictest = strictest.stricter(action)
                else:
                    masks.append(hit)
            if action is Action.WHISPER:
                note = self.policy.whisper(hit.motif.category)
                if note and note not in whispers:
                    whispers.append(note)
            interventions.append(_intervention(self, hit.motif, action, side, None, "", reason))
        order = list(CATEGORIES)
        categories = sorted({hit.motif.category for hit in hits}, key=order.index)
        return Verdict(
            action=strictest,
            categories=tuple(categories),
            score=max(hit.motif.weight.score for hit in hits),
            rules=tuple(dict.fromkeys(hit.motif.id for hit in hits)),
            interventions=tuple(interventions),
            text=self._masked(text, masks) if masks else None,
            whispers=tuple(whispers),
        )

    def _masked(self, text: str, masks: list[_Hit]) -> str:
        parts, at = [], 0
        for hit in sorted(masks, key=lambda h: (h.start, -h.end)):
            if hit.start < at:
                continue  # overlaps a span already masked
            parts += [text[at:hit.start], hit.motif.replacement or self.policy.mask]
            at = hit.end
        parts.append(text[at:])
        return "".join(parts)


def _combined(motifs: list[Motif]) -> Any:
    """One alternation of every regex motif, group ``r<i>`` for motif ``i`` (the ``regex``
    module: it tells a match that could still complete, ``partial=True``)."""
    if not motifs:
        return None
    return regex.compile("|".join(f"(?P<r{i}>{m.pattern})" for i, m in enumerate(motifs)),
                         regex.IGNORECASE | regex.VERSION0)


def _intervention(tier: Tier1, motif: Motif, action: Action, side: str, token: int | None,
                  conversation: str, reason: str) -> Intervention:
    return Intervention(rule=motif.id, category=motif.category, weight=motif.weight.value,
                        action=action.value, side=side, policy=tier.policy.name,
                        token_index=token, conversation=conversation, reason=reason)


class PassGate:
    """The gate of a set that allows everything: every token streams at once."""

    interventions: tuple[Intervention, ...] = ()
    whispers: tuple[str, ...] = ()

    def feed(self, token: int, piece: bytes) -> GateStep:
        return RELEASE_ONE

    def finish(self) -> GateStep:
        return HOLD


class OutputGate:
    """One answer's watch (runa.policy.stream.StreamGate): holds tokens while a motif could
    still complete, and masks, blocks, flags or whispers when one does."""

    def __init__(self, tier: Tier1, conversation: str) -> None:
        self.tier = tier
        self.conversation = conversation
        self.interventions: list[Intervention] = []
        #: Notes for the next turn (whisper actions), each once.
        self.whispers: list[str] = []
        side = tier.side("output")
        self._chars = side.chars
        self._tokens = side.tokens
        self._side = side
        self._regex = side.regex
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._start_state = self._chars.delta[0].get(" ", 0)
        self._state = self._start_state
        self._space = True  # the last symbol fed to the automaton was a boundary
        self._syms: list[int] = []  # the character index of each symbol fed to the automaton
        self._keep = max(self._chars.depth) + 1
        self._tstate = 0
        self._pos = 0  # characters seen
        self._n = 0  # tokens fed
        self._released = 0  # tokens streamed or withdrawn
        self._open = 0  # the token where the character being decoded began
        self._starts: list[int] = []  # first character of each token
        self._texts: list[str] = []  # each token's characters (a character goes to the token
        # holding its first byte)
        self._recent = ""  # the latest text, for the regexes
        self._regex_done = 0  # regex matches ending here or before were judged
        self._regex_pending = -1  # where a regex match that may still complete starts
        self._has_tokens = len(self._tokens.depth) > 1
        #: Masks and a block found, withdrawn once no phrase is partly matched.
        self._marks: list[tuple[_Hit, Action]] = []
        self._stopped = False

    # -- the contract ------------------------------------------------------------------------

    def feed(self, token: int, piece: bytes) -> GateStep:
        if self._stopped:
            return _STOPPED
        index = self._n
        self._n += 1
        if not self._decoder.getstate()[0]:
            self._open = index  # no character is half decoded: the next one begins here
        chunk = self._decoder.decode(piece)
        start = self._pos
        if chunk and self._open < index:  # its first character began in an earlier token
            self._texts[self._open] += chunk[0]
            self._starts.append(start + 1)
            self._texts.append(chunk[1:])
        else:
            self._starts.append(start)
            self._texts.append(chunk)
        if self._has_tokens:
            tokens = self._tokens
            self._tstate = tokens.delta[self._tstate].get(token, 0)
            entries = tokens.out[self._tstate]
            if entries is not None:
                hits = [_Hit(e.motif, index + 1 - e.length, index + 1) for e in entries]
                chosen = self._judge(hits, tokens=True)
                if chosen is not None:  # as a character span: the whole of its tokens
                    self._pos = start + len(chunk)
                    hit, action = chosen
                    first = max(hit.start, 0)
                    self._marks.append((_Hit(hit.motif, self._starts[first], self._pos), action))
                    self._state, self._space = self._start_state, True
                    return self._withdraw()
        if chunk:
            step = self._match(chunk, start)
            if step is not None:
                return step
        if self._regex is not None:
            step = self._regexes(chunk, final=False)
            if step is not None:
                return step
        return self._release()

    def finish(self) -> GateStep:
        if self._stopped:
            return _STOPPED
        # the end of the answer is a word boundary (for phrases and for the regexes)
        if not self._space:
            self._space = True
            self._state = self._chars.delta[self._state].get(" ", 0)
            self._syms.append(self._pos)
            entries = self._chars.out[self._state]
            if entries is not None:
                chosen = self._judge([self._char_hit(e) for e in entries], tokens=False)
                if chosen is not None:
                    self._marks.append(chosen)
        if self._regex is not None:
            step = self._regexes("", final=True)
            if step is not None:
                return step
        if self._marks:
            return self._withdraw()
        held = self._n - self._released
        self._released = self._n
        return _STEPS[held] if held < len(_STEPS) else GateStep(release=held)

    # -- matching ----------------------------------------------------------------------------

    def _match(self, chunk: str, start: int) -> GateStep | None:
        """Run ``chunk`` through the phrase automaton (a run of non-word characters is one
        boundary symbol). A mask found is kept and the text after it checked from the start
        state; the tokens are withdrawn once no phrase is partly matched (so text after a mask
        is held and masked as usual), a block withdraws at once."""
        delta, out = self._chars.delta, self._chars.out
        state, space, syms = self._state, self._space, self._syms
        pos = start
        marks = self._marks
        blocked = False
        for char in _lower(chunk):
            pos += 1
            if char.isalnum() or char == "_":  # _is_word, inlined: per character
                space = False
                state = delta[state].get(char, 0)
            elif space:
                continue
            else:
                space = True
                state = delta[state].get(" ", 0)
            syms.append(pos - 1)
            entries = out[state]
            if entries is not None:
                self._pos = pos
                chosen = self._judge([self._char_hit(e) for e in entries], tokens=False)
                if chosen is not None:
                    marks.append(chosen)
                    if chosen[1] is Action.BLOCK:
                        blocked = True
                        break
                    state, space = self._start_state, True  # what follows: from the start
        if len(syms) > 4 * self._keep + 256:
            del syms[:-self._keep]
        self._state, self._space, self._pos = state, space, start + len(chunk)
        if marks and (blocked or self._chars.depth[state] <= self._chars.lead[state]):
            return self._withdraw()
        return None

    def _char_hit(self, entry: _Entry) -> _Hit:
        """The character span of a phrase that ends with the last symbol fed."""
        syms = self._syms
        return _Hit(entry.motif, syms[-(entry.length - entry.lead)],
                    syms[-1 - entry.trail] + 1)

    def _regexes(self, chunk: str, *, final: bool) -> GateStep | None:
        """Run the regexes over the last ``REGEX_WINDOW`` characters; each match end is judged
        once. A match that could still grow or complete (a partial match, or one reaching the
        end of the text inside a word) holds its tokens; ``final``: the end of the answer is
        the end, and what matches then is judged."""
        self._recent += chunk
        if len(self._recent) > 2 * REGEX_WINDOW:
            self._recent = self._recent[-REGEX_WINDOW:]
        recent = self._recent
        self._regex_pending = -1
        if not recent:
            return None
        base = self._pos - len(recent)
        open_word = not final and _is_word(recent[-1])
        assert self._regex is not None
        hits = []
        for match in self._regex.finditer(recent, max(0, len(recent) - REGEX_WINDOW),
                                          partial=not final):
            if match.partial or (open_word and match.end() == len(recent)):
                if match.end() > match.start():
                    self._regex_pending = base + match.start()
                break
            if base + match.end() <= self._regex_done:
                continue
            hits.append(_Hit(self._side.motif_of(match), base + match.start(), base + match.end()))
        if not hits:
            return None
        self._regex_done = max(hit.end for hit in hits)
        marks = [chosen for hit in hits
                 if (chosen := self._judge([hit], tokens=False)) is not None]
        if not marks:
            return None
        self._marks.extend(marks)
        self._state, self._space = self._start_state, True
        return self._withdraw()

    # -- holding -----------------------------------------------------------------------------

    def _release(self) -> GateStep:
        """Stream every held token no partial match covers."""
        chars = self._chars
        partial = chars.depth[self._state] - chars.lead[self._state]
        hold_from = self._syms[-partial] if partial > 0 else self._pos
        if self._regex_pending >= 0:
            hold_from = min(hold_from, self._regex_pending)
        if self._marks:
            hold_from = min(hold_from, self._marks[0][0].start)
        first = self._n
        starts, texts = self._starts, self._texts
        while first > self._released and (starts[first - 1] + len(texts[first - 1]) > hold_from
                                          or (not texts[first - 1] and first < self._n)):
            first -= 1
        partial_tokens = self._tokens.depth[self._tstate]
        if partial_tokens:
            first = min(first, self._n - partial_tokens)
        if self._decoder.getstate()[0]:
            first = min(first, self._open)  # a character is half decoded: hold all its tokens
        count = first - self._released
        if count <= 0:
            return HOLD
        self._released = first
        return _STEPS[count] if count < len(_STEPS) else GateStep(release=count)

    # -- matches -----------------------------------------------------------------------------

    def _token_at(self, char: int) -> int:
        """The index of the token holding (the first byte of) character ``char``."""
        index = self._n - 1
        starts, texts = self._starts, self._texts
        while index > 0 and not (starts[index] <= char < starts[index] + len(texts[index])):
            index -= 1
        return index

    def _judge(self, hits: list[_Hit], *, tokens: bool) -> tuple[_Hit, Action] | None:
        """Record the matches; the one to act on (mask or block, the strictest, then the
        earliest), or None."""
        tier = self.tier
        strictest = Action.ALLOW
        chosen: _Hit | None = None
        for hit in hits:
            action, reason = tier.effective(hit.motif)
            first_token = hit.start if tokens else self._token_at(hit.start)
            if action is Action.MASK and first_token < self._released:
                action, reason = Action.FLAG, "already streamed"
            if action is Action.ALLOW:
                continue
            if action is Action.WHISPER:
                note = tier.policy.whisper(hit.motif.category)
                if note and note not in self.whispers:
                    self.whispers.append(note)
            self.interventions.append(_intervention(
                tier, hit.motif, action, "output", first_token, self.conversation, reason))
            if action in (Action.MASK, Action.BLOCK) and (
                    action.rank > strictest.rank
                    or (action is strictest and chosen is not None and hit.start < chosen.start)):
                strictest, chosen = action, hit
        return None if chosen is None else (chosen, strictest)

    def _withdraw(self) -> GateStep:
        """Take back the held tokens from the first kept match on and insert their text with
        each mask's replacement (in order; a block ends it: the text before it and the
        refusal)."""
        tier = self.tier
        marks = sorted(self._marks, key=lambda mark: mark[0].start)
        self._marks = []
        first = max(self._token_at(marks[0][0].start), self._released)
        release = first - self._released
        take_back = self._n - first
        self._released = self._n
        self._tstate = 0
        self._recent, self._regex_pending = "", -1
        self._decoder.reset()  # bytes of a withdrawn half character
        held = "".join(self._texts[first:self._n])
        offset = self._starts[first]
        parts: list[str] = []
        at = offset
        block: _Hit | None = None
        for hit, action in marks:
            if hit.start < at and action is not Action.BLOCK:
                continue  # overlaps a span already masked
            parts.append(held[at - offset:max(at, hit.start) - offset])
            if action is Action.BLOCK:
                block = hit
                break
            parts.append(hit.motif.replacement or tier.policy.mask)
            at = max(at, hit.end)
        if block is not None:
            self._stopped = True
            return GateStep(release=release, take_back=take_back,
                            insert=tier.tokens_of("".join(parts))
                            + tier.tokens_of(tier.policy.refusal),
                            stop=True, reason=f"policy {tier.policy.name}: {block.motif.category}")
        assert tier.tokenizer is not None
        insert = tuple(tier.tokenizer.tokenize("".join(parts) + held[at - offset:]))
        return GateStep(release=release, take_back=take_back, insert=insert)
