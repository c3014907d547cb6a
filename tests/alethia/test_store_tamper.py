"""Someone who can write the store's files but holds no key: re-signing with a key of their
own, damaging lines, restoring a foreign snapshot. Each is named, and nothing is destroyed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from runa.alethia import chain, dayfile
from runa.alethia.store import Store, StoreError, public_key_of, verify
from runa.crypto import sodium

from .helpers import Clock, new_keys, turn

Open = Callable[..., Store]
SEED = b"s" * 32


def two_days(opener: Open, clock: Clock, per_day: int = 5) -> None:
    store = opener()
    for _day in range(2):
        for n in range(per_day):
            store.append("turn", turn(n))
        store.flush()
        clock.next_day()
    store.close()


def resign_with_own_key(root: Path) -> None:
    """Put another public key in alethia.json, re-sign every day and forge a tombstone."""
    public, secret = sodium.sign_keypair(bytearray(b"E" * 32))
    (root / "alethia.json").write_text(json.dumps({"format": 1, "public_key": public.hex()}))
    for path in (root / "days").glob("*.log"):
        out = []
        for line in dayfile.scan(path.read_bytes()).lines:
            fields = line.fields
            assert fields is not None
            if fields["t"] == "sig":
                head = line.hexes("head")
                out.append(dayfile.signature(fields["count"], head, sodium.sign(
                    secret, chain.head_message(path.stem, fields["count"], head))))
            elif fields["t"] == "rec" and fields["i"] == 2:
                digest = line.hexes("h")
                out.append(dayfile.tombstone(2, digest, line.hexes("l"), sodium.sign(
                    secret, chain.tombstone_message(path.stem, 2, digest))))
            else:
                out.append(json.dumps(fields, separators=(",", ":")).encode() + b"\n")
        path.write_bytes(b"".join(out))


def test_verify_with_the_signing_key_names_a_store_re_signed_by_another(
        opener: Open, clock: Clock, root: Path) -> None:
    two_days(opener, clock)
    trusted = public_key_of(bytearray(SEED))
    assert verify(root, trusted).ok and verify(root, trusted).key_checked
    resign_with_own_key(root)
    unchecked = verify(root)
    assert unchecked.ok and not unchecked.key_checked  # alethia.json's key: fooled, and says so
    report = verify(root, trusted)
    assert not report.ok and report.key_checked and report.public_key == trusted.hex()
    kinds = {(p.day, p.kind) for p in report.problems}
    assert ("alethia.json", "public_key") in kinds
    assert ("2026-12-07", "signature") in kinds and ("2026-12-08", "signature") in kinds


def test_public_key_of_is_the_stores_key(opener: Open) -> None:
    store = opener(new_keys(seed=SEED))
    assert store.status()["public_key"] == public_key_of(bytearray(SEED)).hex()


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "lock"}


def test_a_flipped_header_byte_is_named_and_open_deletes_nothing(
        opener: Open, clock: Clock, root: Path) -> None:
    two_days(opener, clock)
    path = root / "days" / "2026-12-07.log"
    data = bytearray(path.read_bytes())
    at = data.index(b'"prev":"') + 8
    data[at] = ord("A")
    path.write_bytes(bytes(data))
    before = files_of(root)
    assert ("2026-12-07", "altered") in {(p.day, p.kind) for p in verify(root).problems}
    store = opener()
    assert len(list(store.entries())) == 10  # the damaged past day still reads
    store.close()
    assert files_of(root) == before


def test_an_altered_last_signature_of_a_past_day_cuts_nothing(
        opener: Open, clock: Clock, root: Path) -> None:
    two_days(opener, clock)
    path = root / "days" / "2026-12-07.log"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[-1] = lines[-1].replace(b'"sig":"', b'"sig":"X', 1)
    path.write_bytes(b"".join(lines))
    before = files_of(root)
    store = opener()
    assert store.status()["records"] == 10
    store.close()
    assert files_of(root) == before
    assert ("2026-12-07", "altered") in {(p.day, p.kind) for p in verify(root).problems}


def test_a_past_days_key_without_its_log_is_kept(opener: Open, clock: Clock,
                                                 root: Path) -> None:
    two_days(opener, clock)
    (root / "days" / "2026-12-07.log").unlink()
    opener().close()
    assert (root / "days" / "2026-12-07.key").exists()


def test_damage_on_the_newest_day_is_refused_not_cut(opener: Open, clock: Clock,
                                                     root: Path) -> None:
    two_days(opener, clock)
    path = root / "days" / "2026-12-08.log"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[-1] = lines[-1].replace(b'"sig":"', b'"sig":"X', 1)  # the newest day's last signature
    path.write_bytes(b"".join(lines))
    before = files_of(root)
    with pytest.raises(StoreError, match="verify"):
        opener()
    assert files_of(root) == before


def test_zeroed_pages_in_a_torn_last_batch_are_cut(opener: Open, clock: Clock,
                                                   root: Path) -> None:
    """A power cut wrote the batch's signature line but not the page before it."""
    store = opener()
    store.append("turn", turn(0))
    store.flush()
    path = root / "days" / "2026-12-07.log"
    durable = path.read_bytes()
    for n in range(1, 4):
        store.append("turn", turn(n))
    store.flush()
    whole = bytearray(path.read_bytes())
    store.close()
    first = whole.index(b"\n", len(durable)) + 1  # zero the second new record's line
    second = whole.index(b"\n", first)
    whole[first:second] = bytes(second - first)
    path.write_bytes(bytes(whole))
    again = opener()
    assert path.read_bytes() == durable
    assert again.status()["unsigned"] == 0
    assert again.append("turn", turn(9)) == "2026-12-07/2"
    again.close()
    assert verify(root).ok


@pytest.mark.parametrize("line", [
    {"t": "sig", "count": -1, "head": "00" * 32, "sig": "00" * 64},
    {"t": "rec", "i": 2 ** 64, "h": "00" * 32, "l": "00" * 32, "forgot": "00" * 64},
    {"t": "rec", "i": 0, "h": "00" * 32, "l": "00" * 32, "forgot": "00" * 64},
], ids=["negative-count", "huge-index", "index-zero"])
def test_integers_out_of_range_are_named_not_a_crash(opener: Open, clock: Clock, root: Path,
                                                     line: dict[str, object]) -> None:
    two_days(opener, clock)
    with (root / "days" / "2026-12-07.log").open("ab") as handle:
        handle.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
    assert ("2026-12-07", "altered") in {(p.day, p.kind) for p in verify(root).problems}


def forge_next_record(root: Path, day: str) -> None:
    path = root / "days" / f"{day}.log"
    last = dayfile.scan(path.read_bytes()).records()[-1]
    assert last.fields is not None
    index = last.fields["i"] + 1
    nonce, ciphertext = b"n" * 24, b"forged" * 10
    digest = chain.record_hash(nonce, ciphertext)
    with path.open("ab") as handle:
        handle.write(dayfile.record(index, digest, chain.link(last.hexes("l"), day, index,
                                                              digest), nonce, ciphertext))


def test_a_record_forged_after_the_newest_signature_is_named(opener: Open, clock: Clock,
                                                             root: Path) -> None:
    two_days(opener, clock)
    forge_next_record(root, "2026-12-08")
    report = verify(root)
    assert [(p.day, p.kind) for p in report.problems] == [("2026-12-08", "unsigned")]


def test_a_forged_record_is_named_while_the_writer_runs(opener: Open, root: Path) -> None:
    store = opener()
    store.append("turn", turn(0))
    store.flush()
    forge_next_record(root, "2026-12-07")
    assert [(p.day, p.kind) for p in verify(root).problems] == [("2026-12-07", "unsigned")]
    store.close()


def test_a_made_up_empty_day_is_named_by_verify(opener: Open, clock: Clock,
                                                root: Path) -> None:
    store = opener()
    store.append("turn", turn(0))
    clock.next_day()
    clock.next_day()
    store.append("turn", turn(1))
    store.close()
    third = (root / "days" / "2026-12-09.log").read_bytes().splitlines(keepends=True)[0]
    (root / "days" / "2026-12-08.log").write_bytes(third.replace(b"2026-12-09", b"2026-12-08"))
    assert [(p.day, p.kind) for p in verify(root).problems] == [("2026-12-08", "removed")]
