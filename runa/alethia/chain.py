"""The hash chain and what is signed: the bytes every link, hash and signature is made of.

- A record's hash is BLAKE2b-256 of its nonce and ciphertext.
- link_0 of a day is the previous day's head (32 zero bytes before the first day);
  link_i = BLAKE2b-256(link_{i-1} ‖ day ‖ i ‖ hash_i), i from 1 as a big-endian u64, so a
  record is bound to its place and its day, and a day to the one before it.
- A day's signature is Ed25519 over ``alethia/day-head\\0 ‖ day ‖ count ‖ head``; a
  tombstone's over ``alethia/tombstone\\0 ‖ day ‖ i ‖ hash_i``.
"""

from __future__ import annotations

import hashlib

HASH_BYTES = 32
GENESIS = bytes(HASH_BYTES)


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def record_hash(nonce: bytes, ciphertext: bytes) -> bytes:
    return hashlib.blake2b(nonce + ciphertext, digest_size=HASH_BYTES).digest()


def link(previous: bytes, day: str, index: int, digest: bytes) -> bytes:
    return hashlib.blake2b(previous + day.encode() + _u64(index) + digest,
                           digest_size=HASH_BYTES).digest()


def head_message(day: str, count: int, head: bytes) -> bytes:
    return b"alethia/day-head\0" + day.encode() + _u64(count) + head


def tombstone_message(day: str, index: int, digest: bytes) -> bytes:
    return b"alethia/tombstone\0" + day.encode() + _u64(index) + digest


def record_associated(day: str, index: int) -> bytes:
    """What a record's AEAD authenticates: its day and place (moved, it does not decrypt)."""
    return b"alethia/record\0" + day.encode() + _u64(index)


def day_key_associated(day: str, version: int) -> bytes:
    """What a wrapped day key authenticates: its day and the memory key version wrapping it."""
    return b"alethia/day-key\0" + day.encode() + _u64(version)
