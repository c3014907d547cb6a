"""whisper's requests (queue ``whisper``; docs/protocol.md, "whisper").

splinfer and ``runa policy check`` build them with ``OPS[name].request(...)``, whisper
reads them with ``OPS[name].read(...)``.
"""

from __future__ import annotations

from collections.abc import Mapping

from runa.protocol.payloads import Field, Op

SERVICE = "whisper"
#: Characters of one text ``judge`` reads (its request must fit one envelope even in 4-byte
#: UTF-8); a client sends a longer text in overlapping parts of at most this many and pools
#: the judgements (``PART_OVERLAP`` characters shared, so no sentence is cut in both).
MAX_JUDGE_TEXT = 6 * 1024
PART_OVERLAP = 512
SIDES = ("prompt", "output")


def _text_problem(text: str) -> str | None:
    if len(text) > MAX_JUDGE_TEXT:
        return (f"'text' is longer than {MAX_JUDGE_TEXT} characters ({len(text)}); "
                "judge it in parts")
    return None


OPS: Mapping[str, Op] = {op.name: op for op in (
    Op(SERVICE, "judge", "tier 2's judgement of one text (docs/policy.md, \"Tier 2\")", (
        Field("text", "string", "the text, whole (it is judged in windows)", required=True,
              allowed=f"at most {MAX_JUDGE_TEXT} characters"),
        Field("side", "string", "a prompt or (part of) an answer", required=True,
              allowed="prompt, output"),
    ), {"text": _text_problem,
        "side": lambda value: None if value in SIDES else "'side' must be prompt or output"}),
    Op(SERVICE, "status", "whether tier 2 can judge, its model, weights and exemplars"),
)}


def judge(text: str, side: str) -> dict[str, str]:
    """A ``judge`` request."""
    return OPS["judge"].request(text=text, side=side)


def parts(text: str) -> list[str]:
    """``text`` as the overlapping parts of at most ``MAX_JUDGE_TEXT`` characters that
    ``judge`` requests carry (one part when it fits)."""
    if len(text) <= MAX_JUDGE_TEXT:
        return [text]
    step = MAX_JUDGE_TEXT - PART_OVERLAP
    return [text[start:start + MAX_JUDGE_TEXT]
            for start in range(0, len(text) - PART_OVERLAP, step)]
