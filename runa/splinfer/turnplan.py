"""The prompt tokens of a conversation's next turn, built so the history is not read again.

The tokens in a conversation's sequence are its last prompt plus the answer the
model produced, token for token. Re-tokenizing the whole conversation would
often give different tokens for the answer (a model may spell a word in pieces
the tokenizer would join), and everything after the first difference would be
evaluated again. So the next prompt is those tokens *plus* the template's text
for the new turn, tokenized from its first control token
(``PromptBuilder.continuation``); the sequence then evaluates only the new turn.

That is only valid while the tokens still stand for the same text: the basis
records a digest of the text (the rendered prompt and the answer), and when the
system prompt, the persona, the template or the model changed, the digest no
longer matches and the prompt is built from the messages instead (prefix reuse
still saves what it can).

When the conversation outgrows the context, the oldest turns are dropped — down
to half the context rather than just enough, so the next turns extend the
prompt again instead of shifting it (and re-reading it) every time.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from runa.splinfer.conversations import Basis
from runa.splinfer.errors import PromptTooLongError
from runa.splinfer.prompt import Message, PromptBuilder, fit_window


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


@dataclass(frozen=True)
class TurnPlan:
    tokens: list[int]
    window: int
    """Index into the history of the first message in the prompt (older ones dropped)."""
    incremental: bool
    """True when the prompt extends the basis tokens (nothing old is evaluated again)."""


def basis_text(builder: PromptBuilder, system: Sequence[Message],
               history: Sequence[Message], window: int) -> str | None:
    """The text the basis tokens stand for: the last turn's prompt and its answer."""
    if not history or history[-1]["role"] != "assistant" or window >= len(history):
        return None
    return builder.render([*system, *history[window:-1]]) + history[-1]["content"]


def plan_turn(
    builder: PromptBuilder,
    *,
    system: Sequence[Message],
    history: Sequence[Message],
    window: int,
    user: Message,
    basis: Basis | None,
    model: str,
    n_ctx: int,
    reserve: int,
    notes: Sequence[Message] = (),
) -> TurnPlan:
    """Tokens for ``system`` + ``history[window:]`` + ``notes`` + ``user`` (see the module
    docstring); ``notes`` are this turn's system notes (a policy's whisper), not kept.

    Raises PromptTooLongError when even the system prompt and ``user`` do not fit.
    """
    messages = [*history, *notes, user]
    if basis is not None and basis.model == model:
        prev = basis_text(builder, system, history, window)
        if prev is not None and digest(prev) == basis.digest:
            new = builder.continuation([*system, *messages[window:]], prev)
            if new is not None and len(basis.tokens) + len(new) <= n_ctx - reserve:
                return TurnPlan([*basis.tokens, *new], window, True)
    full = fit_window(builder, [*system, *messages], n_ctx=n_ctx, reserve=reserve)
    if full.dropped:
        with contextlib.suppress(PromptTooLongError):  # then just enough is dropped
            full = fit_window(builder, [*system, *messages], n_ctx=n_ctx,
                              reserve=max(reserve, n_ctx // 2))
    return TurnPlan(full.tokens, full.dropped, False)


def next_basis(builder: PromptBuilder, *, system: Sequence[Message],
               history: Sequence[Message], window: int, prompt: Sequence[int],
               answer: Sequence[int], model: str) -> Basis:
    """The basis after a turn; ``history`` already ends with the new answer."""
    text = basis_text(builder, system, history, window)
    assert text is not None
    return Basis(model=model, digest=digest(text), tokens=(*prompt, *answer))
