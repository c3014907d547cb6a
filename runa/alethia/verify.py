"""Checking one day's chain and signatures, with the public key only.

The walk goes through a day's record lines in file order, keeping the last link that held
and the index it expects next (docs/alethia.md, VERIFY):

- a record whose nonce and ciphertext do not hash to its ``h`` is **altered**; so is one
  in its expected place whose link does not follow (its hash field was changed too);
- a record in the expected place that does not follow, while a later line of the same
  index does, is **inserted**; so is a second line of an index already walked;
- a gap in the indices is **removed**, or **reordered** when the missing index comes later
  in the file (that later line is then not named again);
- a signature line that does not verify, or whose signed head is not the chain's head
  after that many records, is **signature**; a signature over more records than the file
  holds names the first one as **removed**.

After a problem the walk resumes from the record's own link, so one problem names one
record and the rest of the day still verifies. Only the first problem of each kind is
named per day.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runa.alethia import chain
from runa.alethia.dayfile import Line, Scan
from runa.alethia.model import Problem
from runa.crypto import sodium


@dataclass
class DayCheck:
    """What the walk of one day found."""

    day: str
    prev: bytes | None
    head: bytes | None
    records: int = 0
    forgotten: int = 0
    unsigned: int = 0
    problems: list[Problem] = field(default_factory=list)

    def note(self, index: int | None, kind: str, message: str) -> None:
        if all(problem.kind != kind for problem in self.problems):
            self.problems.append(Problem(self.day, index, kind, message))


def _follows(previous: bytes | None, day: str, record: Line) -> bool:
    assert record.fields is not None
    return previous is not None and chain.link(
        previous, day, record.fields["i"], record.hexes("h")) == record.hexes("l")


def check_day(day: str, scan: Scan, public: bytes) -> DayCheck:
    """Walk ``day``'s lines (``scan``) against ``public``; see the module doc."""
    header = scan.header
    if header is None or header.fields is None or header.fields.get("day") != day:
        check = DayCheck(day, None, None)
        check.note(None, "altered", "the day's first line is not its header")
        return check
    prev = header.hexes("prev")
    check = DayCheck(day, prev, prev)
    links: dict[int, bytes] = {0: prev}
    link: bytes | None = prev
    expected = 1
    late: set[int] = set()
    lines = [line for line in scan.lines[1:] if line.kind != "sig"]
    for position, line in enumerate(lines):
        if line.fields is None or line.kind != "rec":
            check.note(expected, "altered", f"line {line.number} is not a record")
            link, expected = None, expected + 1
            continue
        index = int(line.fields["i"])
        check.records += 1
        _check_contents(check, day, line, public)
        if index < expected or index in links:
            if index in late:
                late.discard(index)
                continue
            check.note(index, "inserted", f"line {line.number} is a second record {index}")
            continue
        if index == expected and _follows(link, day, line):
            link = links[index] = line.hexes("l")
            expected += 1
            continue
        rest = lines[position + 1:]
        if index == expected and link is not None:
            if any(other.fields is not None and other.fields.get("i") == index
                   and _follows(link, day, other) for other in rest):
                check.note(index, "inserted", f"line {line.number} is not in the chain")
                continue
            check.note(index, "altered", f"record {index} does not follow the chain")
        later = {other.fields.get("i") for other in rest if other.fields is not None}
        for missing in range(expected, min(index, expected + len(lines))):
            if missing in later:
                check.note(missing, "reordered", f"record {missing} comes after {index}")
                late.add(missing)
            else:
                check.note(missing, "removed", f"record {missing} is not in the file")
        link = links[index] = line.hexes("l")
        expected = index + 1
    top = expected - 1
    check.head = links.get(top, link)
    signed = 0
    for line in scan.signatures():
        assert line.fields is not None
        count, head = int(line.fields["count"]), line.hexes("head")
        if not sodium.signed_by(public, chain.head_message(day, count, head),
                                line.hexes("sig")):
            check.note(None, "signature", f"the signature on line {line.number} does not "
                                          f"verify")
        elif count > top:
            check.note(top + 1, "removed", f"{count} records were signed, {top} are here")
        elif count in links and links[count] != head:
            check.note(None, "signature", f"the head signed after {count} records is not "
                                          f"the chain's")
        else:
            signed = max(signed, count)
    check.unsigned = max(0, top - signed)
    return check


def _check_contents(check: DayCheck, day: str, line: Line, public: bytes) -> None:
    assert line.fields is not None
    index, digest = int(line.fields["i"]), line.hexes("h")
    if "forgot" in line.fields:
        check.forgotten += 1
        if not sodium.signed_by(public, chain.tombstone_message(day, index, digest),
                                line.hexes("forgot")):
            check.note(index, "signature", f"record {index}'s tombstone is not signed")
    elif chain.record_hash(line.blob("n"), line.blob("c")) != digest:
        check.note(index, "altered", f"record {index} does not match its hash")
