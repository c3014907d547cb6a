"""Chat messages to prompt tokens: the model's template, safe tokenization, the window.

Template markers typed by a person stay text. llama-cpp-python tokenizes the
whole rendered prompt with special-token parsing on, so a user who types
``<|im_start|>system`` forges a system turn. Runa parses special tokens only in
the template's own text: when no message contains the text of a control token
(the usual case) the result is exactly llama-cpp-python's tokenization; when one
does, the prompt is split at the messages and each message's text is tokenized
with parsing off, reproducing llama.cpp's own splitting at special tokens so
that nothing else changes.

Context overflow policy (``fit_window``): the leading system messages and the
newest turn (the last user message and what follows it) are always kept; the
oldest turns are dropped whole until the prompt leaves ``reserve`` tokens for
the answer. If the system messages and the newest turn alone do not fit,
PromptTooLongError reports the token counts. A turn is a user message plus the
assistant replies after it, so the kept history never starts mid-exchange; system
messages between turns go with the user message that follows them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from runa.splinfer.errors import PromptTooLongError, TemplateError

Message = Mapping[str, str]

#: Used when a model carries no chat template (base models). ChatML is the most
#: common format; a base model will not follow it well, but it will answer.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: Answer room kept free when n_predict is -1, at most a quarter of the context.
DEFAULT_ANSWER_RESERVE = 256
_SENTINEL = re.compile("\ue000(\\d+)\ue001")


class Tokenizer(Protocol):
    @property
    def special_tokens(self) -> Mapping[str, int]: ...

    def tokenize(self, text: str, *, special: bool) -> list[int]: ...


def check_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Plain ``{"role", "content"}`` dicts, or TemplateError naming the bad message."""
    if not messages:
        raise TemplateError("no messages to answer")
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not role:
            raise TemplateError(f"message {i}: role must be a non-empty string, got {role!r}")
        if not isinstance(content, str):
            raise TemplateError(f"message {i}: content must be a string, got {type(content)}")
        out.append({"role": role, "content": content})
    return out


class PromptBuilder:
    """Renders messages with a Jinja chat template and tokenizes them safely."""

    def __init__(self, template: str, tokenizer: Tokenizer, *, bos: str, eos: str) -> None:
        try:
            self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        except Exception as e:  # jinja2.TemplateSyntaxError and friends
            raise TemplateError(f"the model's chat template does not parse: {e}") from None
        self._tokenizer = tokenizer
        specials = sorted(tokenizer.special_tokens, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, specials))) if specials else None

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text, ending with the assistant's turn opener."""
        try:
            # the template renders any role; llama_cpp annotates only OpenAI's message types
            return self._formatter(messages=list(messages)).prompt  # type: ignore[arg-type]
        except Exception as e:  # template raise_exception(), undefined variables …
            raise TemplateError(f"the chat template rejected the messages: {e}") from None

    def tokens(self, messages: Sequence[Message], *, protect: bool | None = None) -> list[int]:
        """Prompt tokens; message text never turns into special tokens.

        ``protect`` forces (True) or skips (False) the message-by-message path;
        by default it runs only when some message contains a control token's text.
        """
        messages = check_messages(messages)
        rendered = self.render(messages)
        if protect is None:
            protect = self._special_re is not None and any(
                self._special_re.search(m["content"]) for m in messages
            )
        if not protect:
            return self._tokenizer.tokenize(rendered, special=True)
        return self._protected(messages, rendered)

    def _fragments(self, messages: list[dict[str, str]], rendered: str
                   ) -> list[tuple[int, str | int]]:
        """(offset in ``rendered``, text or control token id) pieces, split at the template's
        control tokens only: message text never becomes a control token."""
        stand_ins = [{**m, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)]
        parts = _SENTINEL.split(self.render(stand_ins))
        order = [int(p) for p in parts[1::2]]
        assembled = "".join(
            p if k % 2 == 0 else messages[int(p)]["content"] for k, p in enumerate(parts)
        )
        if sorted(order) != list(range(len(messages))) or assembled != rendered:
            raise TemplateError(
                "this model's chat template rewrites message text, so Runa cannot keep "
                "template markers inside messages as plain text; remove them from the message"
            )
        fragments: list[tuple[int, str | int]] = []
        pending: list[str] = []
        start = offset = 0
        for k, part in enumerate(parts):
            if k % 2:
                content = messages[int(part)]["content"]
                pending.append(content)
                offset += len(content)
                continue
            pos = 0
            for match in self._special_re.finditer(part) if self._special_re else ():
                pending.append(part[pos : match.start()])
                fragments.append((start, "".join(pending)))
                pending = []
                fragments.append((offset + match.start(),
                                  self._tokenizer.special_tokens[match.group()]))
                pos = match.end()
                start = offset + pos
            pending.append(part[pos:])
            offset += len(part)
        fragments.append((start, "".join(pending)))
        return fragments

    def _tokenize_fragments(self, fragments: list[tuple[int, str | int]]) -> list[int]:
        tokens: list[int] = []
        for _, fragment in fragments:
            if isinstance(fragment, int):
                tokens.append(fragment)
            elif fragment:
                tokens.extend(self._tokenizer.tokenize(fragment, special=False))
        return tokens

    def _protected(self, messages: list[dict[str, str]], rendered: str) -> list[int]:
        return self._tokenize_fragments(self._fragments(messages, rendered))

    def continuation(self, messages: Sequence[Message], prefix: str) -> list[int] | None:
        """Tokens of the prompt for ``messages`` after its first ``len(prefix)`` characters.

        A conversation's next prompt is its previous prompt, the answer, and the
        template's text for the new turn. Tokenizing only that new text gives the
        same tokens as tokenizing the whole prompt when the new text starts with a
        control token (llama.cpp splits at control tokens first), so the tokens
        already in the sequence stay valid and only the new ones are evaluated; a
        re-tokenized answer would often differ from the tokens the model produced.
        None when the prompt does not start with ``prefix`` or the new text does not
        start with a control token of the template (then build the whole prompt).
        """
        messages = check_messages(messages)
        rendered = self.render(messages)
        if not prefix or not rendered.startswith(prefix) or self._special_re is None:
            return None
        fragments = self._fragments(messages, rendered)
        cut = len(prefix)
        for i, (offset, fragment) in enumerate(fragments):
            if offset == cut and isinstance(fragment, int):
                return self._tokenize_fragments(fragments[i:])
            if offset > cut:
                break
        return None


def answer_reserve(n_predict: int, n_ctx: int) -> int:
    """Tokens of context left free for the answer (see the module docstring)."""
    wanted = n_predict if n_predict >= 0 else DEFAULT_ANSWER_RESERVE
    return max(1, min(wanted, n_ctx // 4))


@dataclass(frozen=True)
class PromptWindow:
    tokens: list[int]
    messages: list[dict[str, str]]
    """The messages actually in the prompt."""
    dropped: int
    """How many of the oldest messages did not fit."""


def _turns(rest: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """Whole turns; system messages after the first turn (a policy's note) belong to the
    user message after them, so they are kept or dropped with it, never alone."""
    turns: list[list[dict[str, str]]] = []
    for m in rest:
        notes_only = bool(turns) and all(x["role"] == "system" for x in turns[-1])
        if not turns or (m["role"] in ("user", "system") and not notes_only):
            turns.append([m])
        else:
            turns[-1].append(m)
    return turns


def fit_window(
    builder: PromptBuilder, messages: Sequence[Message], *, n_ctx: int, reserve: int
) -> PromptWindow:
    """The longest suffix of whole turns (after the system messages) that fits."""
    messages = check_messages(messages)
    n_system = 0
    while n_system < len(messages) and messages[n_system]["role"] == "system":
        n_system += 1
    system, turns = messages[:n_system], _turns(messages[n_system:])
    budget = n_ctx - reserve
    built: dict[int, list[int]] = {}

    def build(first_turn: int) -> list[int]:
        if first_turn not in built:
            kept = system + [m for turn in turns[first_turn:] for m in turn]
            built[first_turn] = builder.tokens(kept)
        return built[first_turn]

    if len(build(0)) <= budget:
        return PromptWindow(build(0), messages, 0)
    last = len(turns) - 1
    if last <= 0 or len(build(last)) > budget:
        raise PromptTooLongError(len(build(max(last, 0))), budget, n_ctx, reserve)
    low, high = 0, last  # build(low) does not fit, build(high) does
    while high - low > 1:
        mid = (low + high) // 2
        if len(build(mid)) <= budget:
            high = mid
        else:
            low = mid
    kept = system + [m for turn in turns[high:] for m in turn]
    return PromptWindow(build(high), kept, len(messages) - len(kept))
