"""llama-cpp-python called directly: the reference Runa's engine must match exactly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from runa.splinfer.engine import Engine

Messages = Sequence[dict[str, str]]


@dataclass(frozen=True)
class Direct:
    text: str
    tokens: list[int]
    prompt_tokens: int
    finish_reason: str


def direct_turns(
    engine: Engine, turns: Sequence[Messages], max_tokens: int, **sampling: object
) -> list[Direct]:
    """Answers from ``Llama`` objects built with the engine's exact arguments.

    Each turn goes to the same objects, so llama-cpp-python reuses the evaluated
    prefix exactly as Runa's sequences do. Text comes from
    ``create_chat_completion``; token ids from the steps it takes inside (render
    the GGUF template, tokenize with special tokens parsed, ``Llama.generate``),
    on a twin ``Llama``, because the public API returns only text.
    """
    sampling = {"temperature": 0.0, "top_k": 1, **sampling}
    seed = sampling.pop("seed", None)
    chat_llm = Llama(**engine.llama_kwargs())
    token_llm = Llama(**engine.llama_kwargs())
    try:
        template = token_llm.metadata["tokenizer.chat_template"]
        formatter = Jinja2ChatFormatter(
            template,
            eos_token=token_llm._model.token_get_text(token_llm.token_eos()),
            bos_token=token_llm._model.token_get_text(token_llm.token_bos()),
        )
        gen_args = {("temp" if k == "temperature" else k): v for k, v in sampling.items()}
        results = []
        for messages in turns:
            kwargs = dict(sampling, seed=seed) if seed is not None else sampling
            reply = chat_llm.create_chat_completion(list(messages), max_tokens=max_tokens, **kwargs)
            choice = reply["choices"][0]
            rendered = formatter(messages=list(messages)).prompt
            prompt = token_llm.tokenize(rendered.encode(), add_bos=False, special=True)
            if seed is not None:
                token_llm.set_seed(int(seed))  # as create_completion does
            limit = min(max_tokens, token_llm.n_ctx() - len(prompt))
            tokens: list[int] = []
            generator = token_llm.generate(prompt, **gen_args)
            for token in generator:
                if llama_cpp.llama_vocab_is_eog(token_llm._model.vocab, token):
                    break
                tokens.append(token)
                if len(tokens) >= limit:
                    break
            generator.close()
            results.append(
                Direct(
                    text=choice["message"]["content"] or "",
                    tokens=tokens,
                    prompt_tokens=reply["usage"]["prompt_tokens"],
                    finish_reason=choice["finish_reason"] or "",
                )
            )
        return results
    finally:
        chat_llm.close()
        token_llm.close()


def direct_chat(engine: Engine, messages: Messages, max_tokens: int, **sampling: object) -> Direct:
    """One answer from fresh ``Llama`` objects (see direct_turns)."""
    return direct_turns(engine, [messages], max_tokens, **sampling)[0]
