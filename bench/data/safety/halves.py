"""The safety prompts of one half, as the tuning script and the bench read them.

Every reader goes through ``load``: it reads the sets with ``split.py``'s readers, checks each
prompt against the committed ``splits.json`` (same half, same text hash: a set edited after
the split is an error, not a silent re-split) and returns the prompts of the half asked for.
Tuning reads ``tune`` only; reports use ``test`` only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from split import OUTPUT, SAFETY_DIR, DataError, read_sets, text_digest

HALVES = ("tune", "test")


@dataclass(frozen=True)
class LabelledPrompt:
    """One prompt with its set, its right action and (circumvention) its technique."""

    id: str
    text: str
    set: str  # "harmbench", "donotanswer/human_chatbox", "authored/benign_sensitive", …
    action: str  # block | care | answer_with_care | block_or_flag | allow
    technique: str = ""


def load(half: str, root: Path = SAFETY_DIR) -> list[LabelledPrompt]:
    """Every prompt of ``half``, in set order then file order; DataError when the files no
    longer match the committed split."""
    if half not in HALVES:
        raise ValueError(f"half must be tune or test, not {half!r}")
    committed = json.loads((root / OUTPUT).read_text(encoding="utf-8"))["sets"]
    sets, _absent = read_sets(root)
    techniques = _techniques(root / "authored" / "circumvention.jsonl")
    out = []
    for prompt_set in sets:
        split = committed.get(prompt_set.name)
        if split is None:
            raise DataError(f"{prompt_set.name} is not in {OUTPUT}: run split.py first")
        for prompt in prompt_set.prompts:
            digest = text_digest(prompt.text)
            recorded = split["tune"].get(prompt.id) or split["test"].get(prompt.id)
            if recorded != digest:
                raise DataError(f"{prompt_set.name} {prompt.id} differs from {OUTPUT}: "
                                "a set was edited after the split")
            if prompt.id in split[half]:
                out.append(LabelledPrompt(prompt.id, prompt.text, prompt_set.name,
                                          prompt_set.action, techniques.get(prompt.id, "")))
    return out


def _techniques(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            out[str(record["id"])] = str(record.get("technique", ""))
    return out
