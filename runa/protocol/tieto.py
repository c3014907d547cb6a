"""tieto's requests (queue ``tieto``; docs/protocol.md, "tieto") and its numbers' ranges.

The ranges hold wherever a recall or completion number comes from: ``runa recall``'s
flags, a request to the daemon, ``[tieto]`` in the configuration (``runa config check``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from runa.errors import UsageError
from runa.protocol.payloads import Field, Op

SERVICE = "tieto"
MODES = ("hybrid", "vector", "fts")
FUSIONS = ("zscore", "rrf")
#: What an answer citing none of its sources gets: ``mark`` it, or ``refuse`` to show it.
UNCITED = ("mark", "refuse")

#: The range of every number a recall or a completion takes, from a flag, a request or the
#: configuration alike: NaN, an infinity or a value outside is refused, naming the range.
RANGES: Mapping[str, tuple[float, float]] = {
    "k": (1, 1000), "candidates": (1, 4096), "rrf_k": (0, 10000), "fts_weight": (0, 1),
    "min_similarity": (-1, 1), "sieve": (-1, 1),  # cosine similarities
}
WHOLE = frozenset({"k", "candidates"})
"""The numbers that are counts: whole numbers only."""


class OutOfRange(UsageError):
    """A recall or completion setting out of its range (k, a similarity, a weight)."""


def _show(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)


def number_problem(field: str, value: object) -> str | None:
    """Why ``value`` cannot be number ``field`` ("must be …"), or None when it can."""
    low, high = RANGES[field]
    whole = field in WHOLE
    if isinstance(value, int | float) and not isinstance(value, bool) \
            and not (whole and isinstance(value, float)) \
            and math.isfinite(value) and low <= value <= high:
        return None
    what = "a whole number" if whole else "a number"
    return f"must be {what} from {low:g} to {high:g}"


def check_number(field: str, value: object, name: str | None = None) -> None:
    """OutOfRange unless ``value`` is in ``RANGES[field]``; the message calls it ``name``
    (a command's flag) or ``field``."""
    problem = number_problem(field, value)
    if problem:
        raise OutOfRange(f"{name or field} {problem}, not {_show(value)}")


def _range(field: str) -> str:
    low, high = RANGES[field]
    return f"{low:g} to {high:g}"


_QUESTION = Field("question", "string", "what to find", required=True)
_TOPIC = Field("topic", "string", "the topic's name", required=True,
               allowed="1-64 of A-Z a-z 0-9 . _ -")
_FILTERS = Field("filters", "list of strings", "KEY OP VALUE conditions (docs/tieto.md)")
_K = Field("k", "integer", "how many hits", default="tieto.k", allowed=_range("k"))
_MODE = Field("mode", "string", "how hits are ranked", default="tieto.mode",
              allowed=", ".join(MODES))
_MIN_SIMILARITY = Field("min_similarity", "number", "drop hits less similar",
                        default="tieto.min_similarity", allowed=_range("min_similarity"))
_SOURCE_FIELDS = (
    _QUESTION, _TOPIC, _FILTERS,
    Field("k", "integer", "how many hits", default="tieto.complete_k", allowed=_range("k")),
    _MODE, _MIN_SIMILARITY,
    Field("sieve", "number", "sources under this similarity are not given",
          default="tieto.sieve", allowed=_range("sieve")),
    Field("uncited", "string", "an answer citing no source", default="tieto.uncited",
          allowed=", ".join(UNCITED)),
)
_PATH = Field("path", "string", "an absolute path", required=True)
_TARGET = Field("target", "string", "the id of a running complete or of an ingest",
                required=True)


#: Texts one ``embed`` takes: their vectors (384 float32 in base64, 2 KiB each) fit one
#: envelope of the main bus.
MAX_EMBED_TEXTS = 8


def _op(name: str, doc: str, *fields: Field) -> Op:
    """An op whose fields ``read`` checks for their wire type; the numbers' ranges are held
    by :func:`check_number` (a usage error, as the command's flag), the topic name and the
    choices by the library, so a daemon refuses them as the command would."""
    return Op(SERVICE, name, doc, fields)


OPS: Mapping[str, Op] = {op.name: op for op in (
    _op("recall", "the hits for a question", _QUESTION, _TOPIC, _FILTERS, _K, _MODE,
        _MIN_SIMILARITY),
    _op("sources", "the hits at or above the sieve", *_SOURCE_FIELDS),
    _op("complete", "an answer from the sources, streamed", *_SOURCE_FIELDS,
        Field("params", "object", "splinfer's sampling parameters",
              allowed="as splinfer's chat")),
    _op("ingest", "files into a topic, in the background", _TOPIC,
        Field("paths", "list of strings", "absolute paths of files or directories",
              required=True),
        Field("filterable", "list of strings", "KEY:TYPE keys to declare"),
        Field("rebuild", "boolean", "start the topic over", default="false")),
    _op("snapshot", "a consistent copy of a topic", _TOPIC,
        Field("path", "string", "an absolute path that must not exist", required=True)),
    _op("restore", "a topic from a snapshot", _TOPIC, _PATH),
    _op("topics", "the topics' names"),
    _op("status", "the topics, the model, the ingests"),
    _op("cancel", "end a complete or an ingest", _TARGET),
    _op("embed", "texts as the embedding model's vectors",
        Field("texts", "list of strings", "the texts", required=True,
              allowed=f"1 to {MAX_EMBED_TEXTS}, each within the model's word-pieces")),
)}


def request(op: str, **fields: Any) -> dict[str, Any]:
    """The payload of request ``op`` (fields given as None are not sent)."""
    return OPS[op].request(**fields)
