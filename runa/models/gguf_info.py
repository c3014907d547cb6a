"""Read and check a GGUF file's header before llama.cpp touches it.

llama.cpp may abort the whole process on a malformed file, so Runa checks the
magic, the version, every metadata entry and every tensor's extent against the
file size first, and turns any problem into a :class:`CorruptModelError` naming
the path. The same pass yields the hyperparameters the memory fit check needs.

``gguf.GGUFReader`` materialises every vocabulary entry as numpy objects (2.4 s
for SmolLM2's 49k tokens and merges); this reader walks the header with
``struct`` over an mmap instead (tens of milliseconds) and takes the format's
constants (value types, quantisation block sizes, key names) from the ``gguf``
package.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import gguf

from runa.models.errors import CorruptModelError, ModelNotFoundError

_SCALARS: dict[int, str] = {
    gguf.GGUFValueType.UINT8: "<B",
    gguf.GGUFValueType.INT8: "<b",
    gguf.GGUFValueType.UINT16: "<H",
    gguf.GGUFValueType.INT16: "<h",
    gguf.GGUFValueType.UINT32: "<I",
    gguf.GGUFValueType.INT32: "<i",
    gguf.GGUFValueType.FLOAT32: "<f",
    gguf.GGUFValueType.BOOL: "<?",
    gguf.GGUFValueType.UINT64: "<Q",
    gguf.GGUFValueType.INT64: "<q",
    gguf.GGUFValueType.FLOAT64: "<d",
}
#: Arrays longer than this are skipped, not kept (vocabularies, merges, scores).
_KEEP_ARRAY_MAX = 4096
_MAX_DIMS = 4


@dataclass(frozen=True)
class ModelInfo:
    """What Runa needs to know about a model without loading it."""

    path: Path
    file_size: int
    architecture: str
    name: str | None
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: tuple[int, ...]
    """Attention heads per layer."""
    n_head_kv: tuple[int, ...]
    """Key/value heads per layer (fewer than ``n_head`` with grouped-query attention)."""
    head_dim_k: int
    head_dim_v: int
    n_ctx_train: int
    n_vocab: int
    chat_template: str | None
    tensor_count: int
    pooling_type: int | None = None
    """``<arch>.pooling_type``: set (above 0) only by embedding models."""
    causal: bool | None = None
    """``<arch>.attention.causal``: False for encoders, which cannot generate text."""
    quantization: str = "unknown"
    """``general.file_type`` by llama.cpp's name (``Q4_K_M``, ``F16``), else the type most
    of the weights' bytes have."""

    def kv_bytes_per_token(self, bytes_per_element: int = 2) -> int:
        """KV-cache bytes one token of context costs (f16 cache by default)."""
        per_layer = (
            kv * (self.head_dim_k + self.head_dim_v) for kv in self.n_head_kv
        )
        return sum(per_layer) * bytes_per_element


class _Cursor:
    """Bounds-checked little-endian reads; running off the end is corruption."""

    def __init__(self, buf: mmap.mmap | bytes, size: int) -> None:
        self.buf = buf
        self.size = size
        self.pos = 0

    def take(self, fmt: str) -> int | float | bool:
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise ValueError(f"header ends early at byte {self.pos}")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def string(self) -> str:
        n = int(self.take("<Q"))
        if self.pos + n > self.size:
            raise ValueError(f"string of {n} bytes at byte {self.pos} runs past the end")
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = int(self.take("<Q"))
        if self.pos + n > self.size:
            raise ValueError(f"string of {n} bytes at byte {self.pos} runs past the end")
        self.pos += n

    def value(self, vtype: int) -> object:
        if vtype == gguf.GGUFValueType.STRING:
            return self.string()
        if vtype == gguf.GGUFValueType.ARRAY:
            itype = int(self.take("<I"))
            count = int(self.take("<Q"))
            return self.array(itype, count)
        fmt = _SCALARS.get(vtype)
        if fmt is None:
            raise ValueError(f"unknown metadata value type {vtype} at byte {self.pos}")
        return self.take(fmt)

    def array(self, itype: int, count: int) -> object:
        """Small arrays come back as tuples; big ones are skipped and reported by length."""
        if itype == gguf.GGUFValueType.ARRAY:
            raise ValueError("nested metadata arrays are not supported")
        if count <= _KEEP_ARRAY_MAX:
            return tuple(self.value(itype) for _ in range(count))
        if itype == gguf.GGUFValueType.STRING:
            for _ in range(count):
                self.skip_string()
        else:
            fmt = _SCALARS.get(itype)
            if fmt is None:
                raise ValueError(f"unknown array item type {itype}")
            n = struct.calcsize(fmt) * count
            if self.pos + n > self.size:
                raise ValueError(f"array of {count} items runs past the end")
            self.pos += n
        return _Skipped(count)


@dataclass(frozen=True)
class _Skipped:
    """A long array whose items were not kept."""

    count: int


def _tensor_nbytes(ggml_type: int, dims: list[int]) -> int:
    try:
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise ValueError(f"unknown tensor type {ggml_type}") from None
    n = 1
    for d in dims:
        n *= d
    if dims and dims[0] % block:
        raise ValueError(f"row of {dims[0]} elements is not a multiple of block size {block}")
    return n // block * type_size


def _per_layer(value: object, n_layer: int, key: str) -> tuple[int, ...]:
    if isinstance(value, tuple):
        if len(value) != n_layer:
            raise ValueError(f"{key} has {len(value)} entries for {n_layer} layers")
        return tuple(int(v) for v in value)
    return (int(value),) * n_layer  # type: ignore[call-overload]


def read_model_info(path: Path) -> ModelInfo:
    """Check ``path`` is a loadable-looking GGUF model and return its hyperparameters.

    Raises ModelNotFoundError if it does not exist and CorruptModelError (naming
    the path and the problem) for anything llama.cpp could choke on.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            if size < 24:
                raise CorruptModelError(path, f"file is {size} bytes, too short for a GGUF header")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(path, buf, size)
    except FileNotFoundError:
        raise ModelNotFoundError(str(path), [path], "Check the path.") from None
    except IsADirectoryError:
        raise CorruptModelError(path, "is a directory, not a file") from None
    except PermissionError as e:
        raise CorruptModelError(path, f"cannot read it: {e.strerror}") from None


def _parse(path: Path, buf: mmap.mmap, size: int) -> ModelInfo:
    cur = _Cursor(buf, size)
    try:
        magic = cur.take("<I")
        if magic != gguf.GGUF_MAGIC:
            raise CorruptModelError(path, f"bad magic {bytes(buf[:4])!r} (expected b'GGUF')")
        version = cur.take("<I")
        if version not in (2, 3):
            raise CorruptModelError(path, f"GGUF version {version} is not supported (2 or 3)")
        n_tensors = int(cur.take("<Q"))
        n_kv = int(cur.take("<Q"))
        if n_tensors > size // 24 or n_kv > size // 12:
            raise CorruptModelError(path, f"implausible counts ({n_tensors} tensors, {n_kv} keys)")
        meta: dict[str, object] = {}
        for _ in range(n_kv):
            key = cur.string()
            meta[key] = cur.value(int(cur.take("<I")))
        tensors: list[tuple[str, int, int]] = []
        by_type: dict[int, int] = {}
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = int(cur.take("<I"))
            if n_dims > _MAX_DIMS:
                raise ValueError(f"tensor {name} has {n_dims} dimensions")
            dims = [int(cur.take("<Q")) for _ in range(n_dims)]
            ggml_type = int(cur.take("<I"))
            offset = int(cur.take("<Q"))
            tensors.append((name, offset, _tensor_nbytes(ggml_type, dims)))
            by_type[ggml_type] = by_type.get(ggml_type, 0) + tensors[-1][2]
    except ValueError as e:
        raise CorruptModelError(path, str(e)) from None

    alignment = meta.get(gguf.Keys.General.ALIGNMENT, gguf.GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise CorruptModelError(path, f"bad alignment {alignment!r}")
    data_start = -(-cur.pos // alignment) * alignment
    for name, offset, nbytes in tensors:
        if data_start + offset + nbytes > size:
            raise CorruptModelError(
                path,
                f"tensor {name} needs bytes up to {data_start + offset + nbytes} but the file "
                f"has {size} (truncated download?)",
            )
    return _model_info(path, size, meta, len(tensors), _quantization(meta, by_type))


def _quantization(meta: dict[str, object], by_type: dict[int, int]) -> str:
    """The file's quantization as llama.cpp names it (``Q4_K_M``), ``unknown`` if unsaid."""
    file_type = meta.get(gguf.Keys.General.FILE_TYPE)
    if isinstance(file_type, int):
        try:
            return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    if not by_type:
        return "unknown"
    try:
        return gguf.GGMLQuantizationType(max(by_type, key=by_type.__getitem__)).name
    except ValueError:
        return "unknown"


def _model_info(path: Path, size: int, meta: dict[str, object], n_tensors: int,
                quantization: str) -> ModelInfo:
    arch = meta.get(gguf.Keys.General.ARCHITECTURE)
    if not isinstance(arch, str) or not arch:
        raise CorruptModelError(path, "no general.architecture in the metadata")

    def need(key_template: str) -> object:
        key = key_template.format(arch=arch)
        if key not in meta:
            raise CorruptModelError(path, f"metadata key {key} is missing")
        return meta[key]

    def opt(key_template: str, default: object) -> object:
        return meta.get(key_template.format(arch=arch), default)

    try:
        n_layer = int(need(gguf.Keys.LLM.BLOCK_COUNT))  # type: ignore[call-overload]
        n_embd = int(need(gguf.Keys.LLM.EMBEDDING_LENGTH))  # type: ignore[call-overload]
        n_head = _per_layer(need(gguf.Keys.Attention.HEAD_COUNT), n_layer, "head_count")
        n_head_kv = _per_layer(
            opt(gguf.Keys.Attention.HEAD_COUNT_KV, need(gguf.Keys.Attention.HEAD_COUNT)),
            n_layer,
            "head_count_kv",
        )
        default_head_dim = n_embd // max(n_head) if max(n_head, default=0) else 0
        head_dim_k = int(opt(gguf.Keys.Attention.KEY_LENGTH, default_head_dim))  # type: ignore[call-overload]
        head_dim_v = int(opt(gguf.Keys.Attention.VALUE_LENGTH, default_head_dim))  # type: ignore[call-overload]
        n_ff_raw = opt(gguf.Keys.LLM.FEED_FORWARD_LENGTH, 0)
        n_ff = max(n_ff_raw) if isinstance(n_ff_raw, tuple) else int(n_ff_raw)  # type: ignore[call-overload]
        n_ctx_train = int(opt(gguf.Keys.LLM.CONTEXT_LENGTH, 0))  # type: ignore[call-overload]
    except (TypeError, ValueError) as e:
        raise CorruptModelError(path, f"bad hyperparameter: {e}") from None
    tokens = meta.get(gguf.Keys.Tokenizer.LIST)
    if tokens is None:
        raise CorruptModelError(path, "no tokenizer.ggml.tokens (vocabulary) in the metadata")
    n_vocab = tokens.count if isinstance(tokens, _Skipped) else len(tokens)  # type: ignore[arg-type]
    template = meta.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    name = meta.get(gguf.Keys.General.NAME)
    pooling = opt(gguf.Keys.LLM.POOLING_TYPE, None)
    causal = opt(gguf.Keys.Attention.CAUSAL, None)
    return ModelInfo(
        path=path,
        file_size=size,
        architecture=arch,
        name=name if isinstance(name, str) else None,
        n_layer=n_layer,
        n_embd=n_embd,
        n_ff=n_ff,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=head_dim_k,
        head_dim_v=head_dim_v,
        n_ctx_train=n_ctx_train,
        n_vocab=n_vocab,
        chat_template=template if isinstance(template, str) else None,
        tensor_count=n_tensors,
        pooling_type=pooling if isinstance(pooling, int) else None,
        causal=causal if isinstance(causal, bool) else None,
        quantization=quantization,
    )


#: Architectures that only encode: llama.cpp gives them no text-generating head.
ENCODER_ARCHITECTURES = frozenset({
    "bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert",
    "neo-bert", "eurobert", "t5encoder",
})


def not_a_chat_model(info: ModelInfo) -> str | None:
    """What ``info`` is when it cannot chat ("an embedding model (bert)"), else None.

    Judged by the metadata alone: an encoder architecture, a pooling type (only
    embedding models have one) or attention that is not causal. llama.cpp would
    load such a file as a chat model and answer with noise such as ``[unused27]``.
    """
    if info.architecture == "t5":
        return "an encoder-decoder model (t5), which splinfer cannot chat with"
    if info.architecture in ENCODER_ARCHITECTURES or (info.pooling_type or 0) > 0:
        return f"an embedding model ({info.architecture})"
    if info.causal is False:
        return f"an encoder with non-causal attention ({info.architecture})"
    return None
