"""A llama.cpp sampler chain built exactly as llama-cpp-python 0.3.36 builds it.

Runa promises that greedy output matches llama-cpp-python token for token, and
with a fixed seed sampled output should match too; so the chain order and the
argument mapping mirror ``Llama._init_sampler``:

    penalties -> greedy                                 (temp == 0)
    penalties -> mirostat(n_vocab, seed, ent, lr, 100)   (mirostat 1)
    penalties -> mirostat_v2(seed, ent, lr)              (mirostat 2)
    penalties -> top_k -> typical -> top_p -> min_p -> temp -> dist(seed)

Two consequences of following it rather than llama.cpp's CLI: mirostat runs
without a temperature step, and the penalty window starts empty each request
(prompt tokens are not fed into it).
"""

from __future__ import annotations

import llama_cpp

from runa.protocol.params import SamplingParams

#: llama.cpp's "pick a random seed" value.
RANDOM_SEED = 0xFFFFFFFF


class Sampler:
    """Owns one sampler chain; close() frees it (also on garbage collection)."""

    def __init__(self, params: SamplingParams, *, n_vocab: int, n_ctx: int) -> None:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self._chain: llama_cpp.llama_sampler_p | None = chain
        seed = RANDOM_SEED if params.seed < 0 else params.seed
        last_n = n_ctx if params.repeat_last_n < 0 else params.repeat_last_n
        add = llama_cpp.llama_sampler_chain_add
        add(
            chain,
            llama_cpp.llama_sampler_init_penalties(
                n_vocab,
                last_n,
                params.repeat_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            ),
        )
        if params.temp == 0.0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
        elif params.mirostat == 1:
            add(
                chain,
                llama_cpp.llama_sampler_init_mirostat(
                    n_vocab, seed, params.mirostat_ent, params.mirostat_lr, 100
                ),
            )
        elif params.mirostat == 2:
            add(
                chain,
                llama_cpp.llama_sampler_init_mirostat_v2(
                    seed, params.mirostat_ent, params.mirostat_lr
                ),
            )
        else:
            add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
            add(chain, llama_cpp.llama_sampler_init_typical(params.typical, 1))
            add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
            add(chain, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
            add(chain, llama_cpp.llama_sampler_init_temp(params.temp))
            add(chain, llama_cpp.llama_sampler_init_dist(seed))

    def sample(self, ctx: llama_cpp.llama_context_p, idx: int) -> int:
        """Pick the next token from the logits of batch row ``idx`` (and remember it)."""
        return int(llama_cpp.llama_sampler_sample(self._chain, ctx, idx))

    def accept(self, token: int) -> None:
        """Tell the penalties about a token that was not sampled (a replacement)."""
        llama_cpp.llama_sampler_accept(self._chain, token)

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None

    def __del__(self) -> None:
        self.close()
