"""A tiny synthetic llama-architecture GGUF model for fast, offline tests.

Real models are tens of megabytes and take a download; unit tests need something
that loads in milliseconds and behaves the same on every run. This writer builds a
~0.8 MB model with random (seeded) weights, a SentencePiece-style vocabulary with
byte fallback, the ChatML special tokens and a ChatML Jinja chat template. Its
text is gibberish, but every code path of a real chat model runs: the template,
special-token parsing, multi-byte UTF-8 through byte tokens, end-of-turn. Greedy
output never picks raw byte or control tokens (their output rows are zero), so
it is valid UTF-8; a test that needs bytes can force them.

The output is byte-identical for equal arguments (no timestamps, seeded RNG).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np

#: ChatML, as SmolLM2 and many other instruction models use it.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

UNK_ID, BOS_ID, EOS_ID, IM_START_ID, IM_END_ID = 0, 1, 2, 3, 4
#: Byte tokens <0x00>..<0xFF> start right after the five special tokens.
FIRST_BYTE_ID = 5

_CHARS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    ".,!?;:'\"-()[]{}<>/\\|_=+*&^%$#@~`\n"
)
_WORDS = (
    "the", "a", "an", "and", "or", "of", "to", "in", "is", "it", "you", "he", "she", "we", "they",
    "that", "this", "for", "on", "with", "as", "was", "are", "be", "at", "by", "not", "but",
    "from", "have", "has", "had", "what", "when", "where", "who", "why", "how", "hello", "world",
    "sea", "sky", "sun", "moon", "star", "water", "fire", "earth", "wind", "tree", "stone",
    "river", "mountain", "city", "house", "day", "night", "time", "year", "good", "new", "first",
    "last", "long", "great", "little", "own", "other", "old", "right", "big", "high", "small",
    "large", "next", "early", "young", "important", "few", "public", "bad", "same", "able", "one",
    "two", "three", "four", "five", "yes", "no", "please", "thank", "thanks", "question",
    "answer", "model", "token",
)


def _pieces(vocab_size: int) -> list[tuple[str, float, int]]:
    """The vocabulary as (text, score, token type) in id order."""

    pieces: list[tuple[str, float, int]] = [
        ("<unk>", 0.0, gguf.TokenType.UNKNOWN),
        ("<s>", 0.0, gguf.TokenType.CONTROL),
        ("</s>", 0.0, gguf.TokenType.CONTROL),
        ("<|im_start|>", 0.0, gguf.TokenType.CONTROL),
        ("<|im_end|>", 0.0, gguf.TokenType.CONTROL),
    ]
    pieces += [(f"<0x{b:02X}>", 0.0, gguf.TokenType.BYTE) for b in range(256)]
    # SentencePiece merges adjacent pieces only through pieces that exist, so every
    # prefix of a word piece is in the vocabulary; two-letter pieces fill the rest.
    normal = ["\u2581", *_CHARS]
    for word in _WORDS:
        normal += ["\u2581" + word[:n] for n in range(1, len(word) + 1)]
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    normal += [a + b for a in letters for b in letters]
    seen: set[str] = set()
    for text in normal:
        if text in seen or len(pieces) == vocab_size:
            continue
        seen.add(text)
        pieces.append((text, -float(len(pieces)), gguf.TokenType.NORMAL))
    if len(pieces) < vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is above the {len(pieces)} pieces available")
    return pieces


def write_tiny_gguf(
    path: Path,
    *,
    seed: int = 0,
    vocab_size: int = 1024,
    context_length: int = 512,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    chat_template: str | None = CHATML_TEMPLATE,
    name: str = "runa-tiny",
    boost_tokens: Sequence[int] = (),
    endless: bool = False,
) -> Path:
    """Write the synthetic model to ``path`` and return ``path``.

    ``boost_tokens`` raises those tokens' output rows so greedy decoding tends to
    pick them, which lets a test steer what the model says without real training.
    ``chat_template=None`` writes a model without a template (a base model).
    ``endless=True`` never ends its turn by itself: every greedy answer runs to its token
    limit, which gives a test an answer that is still streaming when it acts.
    """

    rng = np.random.default_rng(seed)
    head_dim = n_embd // n_head

    def weight(rows: int, cols: int) -> np.ndarray:
        return rng.normal(0.0, 1.0 / np.sqrt(cols), size=(rows, cols)).astype(np.float32)

    pieces = _pieces(vocab_size)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(1e4)
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([p[0] for p in pieces])
    writer.add_token_scores([p[1] for p in pieces])
    writer.add_token_types([int(p[2]) for p in pieces])
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_eot_token_id(IM_END_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    output = weight(vocab_size, n_embd)
    # Zero rows give logit 0, far below the best of ~700 random logits, so greedy
    # text never contains raw bytes (it stays valid UTF-8) or control tokens.
    output[[UNK_ID, BOS_ID, EOS_ID, IM_START_ID]] = 0.0
    if endless:
        output[IM_END_ID] = 0.0
    output[FIRST_BYTE_ID : FIRST_BYTE_ID + 256] = 0.0
    for token in boost_tokens:
        output[token] *= 8.0
    writer.add_tensor("token_embd.weight", weight(vocab_size, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", output)
    for i in range(n_layer):
        blk = f"blk.{i}."
        writer.add_tensor(blk + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(blk + "attn_q.weight", weight(n_head * head_dim, n_embd))
        writer.add_tensor(blk + "attn_k.weight", weight(n_head_kv * head_dim, n_embd))
        writer.add_tensor(blk + "attn_v.weight", weight(n_head_kv * head_dim, n_embd))
        writer.add_tensor(blk + "attn_output.weight", weight(n_embd, n_head * head_dim))
        writer.add_tensor(blk + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(blk + "ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(blk + "ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(blk + "ffn_down.weight", weight(n_embd, n_ff))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
