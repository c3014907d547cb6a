"""The memory index bench's vectors: real embeddings of documentation, copied to any count.

Text: every paragraph of 8+ words of this machine's package READMEs (``/usr/share/doc/*/
README*``) and installed manuals (``/usr/share/info/*.info*``), gzipped or not, and of this
repository's own docs (``README.md``, ``docs/*.md``), whitespace collapsed, cut to 120 words,
duplicates dropped. Each paragraph's sha256 decides
its part, so the split is the same on every machine for the same text:

- first byte % 10 == 0: a query (held out: neither it nor a copy of it is stored); of the
  queries, an even second byte is the tune half (parameters are chosen on it), odd the test
  half (the numbers are reported on it); each half keeps its MAX_QUERIES with the
  smallest sha256 (the rest are neither stored nor asked);
- otherwise: a base paragraph, stored.

The paragraphs' embeddings (the shipped embedding model, all-MiniLM-L6-v2, 384 dimensions)
are cached by text in ~/.cache/runa-bench/memory (never in the repository). Record r of
an index of N is base ``r % B`` (B base paragraphs) for r < B, and after that a perturbed copy:
the base vector plus Gaussian noise of ``NOISE`` a dimension, renormalised (cosine to its base
≈ 0.96), from a generator seeded by the block's number, so any block can be made again.

``python bench/memory_vectors.py`` embeds (or loads) them and prints the counts.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CACHE = Path.home() / ".cache" / "runa-bench" / "memory"
DOC_GLOBS = ("/usr/share/doc/*/README*", "/usr/share/info/*.info*")
REPO_DOCS = ("README.md", "docs/*.md")
MIN_WORDS = 8
MAX_WORDS = 120
#: Queries kept in each half: enough for a p50 and a recall, few enough for a quick run.
MAX_QUERIES = 300
#: Standard deviation of the noise added to each dimension of a copy (unit vectors).
NOISE = 0.015
BLOCK = 1 << 16
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Texts:
    base: list[str]
    tune: list[str]
    test: list[str]

    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.base, self.tune, self.test):
            for text in part:
                h.update(text.encode() + b"\0")
            h.update(b"\1")
        return h.hexdigest()[:16]


def _read(path: Path) -> str:
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile):
        return ""
    return data.decode("utf-8", errors="replace")


def source_files() -> list[Path]:
    files = {p for pattern in DOC_GLOBS for p in Path("/").glob(pattern.lstrip("/"))}
    files |= {p for pattern in REPO_DOCS for p in REPO.glob(pattern)}
    return sorted(p for p in files if p.is_file())


def paragraphs(text: str) -> Iterator[str]:
    for block in re.split(r"\n\s*\n", text):
        words = _SPACE.sub(" ", block).strip().split(" ")
        if len(words) >= MIN_WORDS:
            yield " ".join(words[:MAX_WORDS])


def texts() -> Texts:
    """Every paragraph, deduplicated, in its part (see the module's docstring)."""
    seen: set[str] = set()
    base: list[str] = []
    tune: list[str] = []
    test: list[str] = []
    for path in source_files():
        for paragraph in paragraphs(_read(path)):
            if paragraph in seen:
                continue
            seen.add(paragraph)
            digest = hashlib.sha256(paragraph.encode()).digest()
            if digest[0] % 10:
                base.append(paragraph)
            else:
                (tune if digest[1] % 2 == 0 else test).append(paragraph)
    return Texts(base, _first_by_digest(tune), _first_by_digest(test))


def _first_by_digest(queries: list[str]) -> list[str]:
    """The MAX_QUERIES of ``queries`` with the smallest sha256, in their original order."""
    kept = set(sorted(queries, key=lambda t: hashlib.sha256(t.encode()).digest())[:MAX_QUERIES])
    return [text for text in queries if text in kept]


@dataclass(frozen=True)
class Embedded:
    base: np.ndarray
    tune: np.ndarray
    test: np.ndarray
    digest: str


def _fit(embedder: object, text: str) -> str:
    """``text`` cut to what the embedder takes (its word-piece limit; a "word" can be long)."""
    count = embedder.count_tokens  # type: ignore[attr-defined]
    limit = embedder.max_tokens  # type: ignore[attr-defined]
    while count(text) > limit:
        text = text[:int(len(text) * 0.8)]
    return text


def embed_all(progress: object = print) -> Embedded:
    """The three parts' embeddings. The cache keeps each paragraph's vector by its text's
    sha256, so a changed document costs only its new paragraphs."""
    found = texts()
    cached = CACHE / "paragraphs.npz"
    known: dict[bytes, np.ndarray] = {}
    if cached.exists():
        with np.load(cached) as data:
            # "S32" drops trailing NUL bytes: a digest ending in 0 is padded back.
            known = dict(zip((bytes(k).ljust(32, b"\0") for k in data["keys"]),
                             data["vectors"], strict=True))
    everything = found.base + found.tune + found.test
    keys = [hashlib.sha256(text.encode()).digest() for text in everything]
    missing = [(key, text) for key, text in zip(keys, everything, strict=True)
               if key not in known]
    if missing:
        _embed_into(known, missing, progress, lambda: _save(known, cached))
        _save(known, cached)
    vectors = np.stack([known[key] for key in keys]).astype(np.float32)
    b, t = len(found.base), len(found.tune)
    return Embedded(vectors[:b], vectors[b:b + t], vectors[b + t:], found.digest())


def _save(known: dict[bytes, np.ndarray], cached: Path) -> None:
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name("paragraphs.tmp.npz")
    np.savez(partial, keys=np.array(list(known), dtype="S32"),
             vectors=np.stack(list(known.values())))
    partial.replace(cached)


def _embed_into(known: dict[bytes, np.ndarray], missing: list[tuple[bytes, str]],
                progress: object, save: Callable[[], None]) -> None:
    """Embeds ``missing`` into ``known``, saving the cache every few thousand paragraphs
    (a first run takes minutes; an interrupted one keeps what it did)."""
    from runa.models import LlamaEmbedder, embedding_model_path
    from runa.paths import Paths, personal_stack

    say = progress if callable(progress) else print
    embedder = LlamaEmbedder(embedding_model_path("default", Paths.for_stack(
        personal_stack()).models))
    try:
        say(f"embedding {len(missing)} paragraphs (cached afterwards)")
        for start in range(0, len(missing), 32):
            batch = missing[start:start + 32]
            vectors = embedder.embed([_fit(embedder, text) for _, text in batch])
            for (key, _), vector in zip(batch, vectors, strict=True):
                known[key] = vector
            if start % 640 == 0:
                say(f"  {start + len(batch)} / {len(missing)}")
            if start % 2048 == 0 and start:
                save()
    finally:
        embedder.close()


def stored_block(base: np.ndarray, first: int, count: int, seed: int = 0) -> np.ndarray:
    """Records ``first .. first + count`` of the stored vectors (see the module's docstring).

    ``first`` must be a multiple of BLOCK unless ``count`` stays within one block.
    """
    out = np.empty((count, base.shape[1]), dtype=np.float32)
    done = 0
    while done < count:
        row = first + done
        block = row // BLOCK
        offset = row - block * BLOCK
        n = min(count - done, BLOCK - offset)
        rows = np.arange(block * BLOCK, (block + 1) * BLOCK)
        vectors = base[rows % len(base)]
        noise = np.random.default_rng([seed, block]).standard_normal(vectors.shape,
                                                                    dtype=np.float32)
        noise[rows < len(base)] = 0  # the first B records are the bases themselves
        vectors += NOISE * noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        out[done:done + n] = vectors[offset:offset + n]
        done += n
    return out


def stored(base: np.ndarray, total: int, seed: int = 0) -> Iterator[np.ndarray]:
    """All ``total`` stored vectors, a BLOCK at a time."""
    for first in range(0, total, BLOCK):
        yield stored_block(base, first, min(BLOCK, total - first), seed)


def main() -> int:
    embedded = embed_all()
    print(f"base {len(embedded.base)}, tune {len(embedded.tune)}, test {len(embedded.test)} "
          f"paragraphs (text {embedded.digest})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
