"""The vault file's bytes: a versioned header, the encrypted contents, a checksum.

Layout (integers little-endian; docs/coven.md, FILE FORMAT, is the reference)::

    offset size  field
         0    8  magic "RUNAVLT\\x00"
         8    2  format version (1)
        10    1  key mode (1 key file, 2 passphrase)
        11    1  reserved, 0
        12   16  key id (names the key file; random per passphrase salt)
        28    4  Argon2id opslimit (0 in key-file mode)
        32    8  Argon2id memlimit in bytes (0 in key-file mode)
        40   16  Argon2id salt (zeros in key-file mode)
        56   24  nonce of the wrapped data key
        80   48  the data key, encrypted by the key-encryption key (32 + 16 MAC)
       128   24  nonce of the contents
       152    4  length of the encrypted contents (N)
       156    N  the contents, encrypted by the data key (contents + 16 MAC)
     156+N   32  BLAKE2b-256 of every byte before it

Both encryptions are XChaCha20-Poly1305: the data key's authenticates bytes 0-55 (what
derives and names the key-encryption key), the contents' authenticates the whole header
(bytes 0-155). The checksum is not a secret and proves nothing against someone who means
harm (the MACs do that); it tells a damaged or edited file apart from a wrong passphrase
before any key is needed, so one changed byte anywhere is named as such, even while the
vault is locked.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass, replace
from pathlib import Path

from runa.coven.errors import UnsupportedVault, VaultAltered
from runa.crypto import sodium

MAGIC = b"RUNAVLT\x00"
VERSION = 1
KEY_ID_BYTES = 16
CHECKSUM_BYTES = 32
WRAPPED_KEY_BYTES = sodium.KEY_BYTES + sodium.MAC_BYTES
_HEADER = struct.Struct("<8sHBB16sIQ16s24s48s24sI")
HEADER_BYTES = _HEADER.size
_KEK_BOUND = 56  # the bytes the wrapped data key authenticates

# Bounds on the Argon2id parameters a vault may name: a forged header must not make unlock
# take an hour or allocate the machine's memory.
OPSLIMIT_MAX = 16
MEMLIMIT_MAX = 1 << 30
CONTENTS_MAX = 8 << 20  # the decrypted contents; COUNT_MAX x VALUE_MAX would not fit, on purpose
LARGEST_FILE = HEADER_BYTES + CONTENTS_MAX + sodium.MAC_BYTES + CHECKSUM_BYTES


class KeyMode(enum.IntEnum):
    """How the data key is wrapped."""

    KEYFILE = 1
    PASSPHRASE = 2

    @property
    def label(self) -> str:
        return "key file" if self is KeyMode.KEYFILE else "passphrase"


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id's cost: passes over memory (``opslimit``) and memory in bytes (``memlimit``)."""

    opslimit: int
    memlimit: int

    def problem(self) -> str | None:
        """Why these parameters are out of the bounds a vault may name, or None."""
        if not sodium.OPSLIMIT_MIN <= self.opslimit <= OPSLIMIT_MAX:
            return (f"Argon2id opslimit {self.opslimit} outside "
                    f"{sodium.OPSLIMIT_MIN}..{OPSLIMIT_MAX}")
        if not sodium.MEMLIMIT_MIN <= self.memlimit <= MEMLIMIT_MAX:
            return (f"Argon2id memlimit {self.memlimit} outside "
                    f"{sodium.MEMLIMIT_MIN}..{MEMLIMIT_MAX} bytes")
        return None


#: What a new passphrase vault uses: 128 MiB and 3 passes. Unlock's peak memory is the
#: process plus 128 MiB, inside a unit's MemoryMax=256M; docs/coven.md gives the time.
SHIPPED_ARGON2 = Argon2Params(opslimit=3, memlimit=128 << 20)


@dataclass(frozen=True)
class Header:
    """The header's fields (see the module doc for their places)."""

    mode: KeyMode
    key_id: bytes
    argon2: Argon2Params | None
    salt: bytes
    wrap_nonce: bytes
    wrapped_key: bytes
    contents_nonce: bytes
    contents_length: int
    version: int = VERSION

    def pack(self) -> bytes:
        argon2 = self.argon2 or Argon2Params(0, 0)
        return _HEADER.pack(MAGIC, self.version, int(self.mode), 0, self.key_id,
                            argon2.opslimit, argon2.memlimit, self.salt, self.wrap_nonce,
                            self.wrapped_key, self.contents_nonce, self.contents_length)

    def kek_bound(self) -> bytes:
        """The bytes the wrapped data key authenticates: everything naming its wrapping key."""
        return self.pack()[:_KEK_BOUND]

    def with_contents(self, nonce: bytes, length: int) -> Header:
        return replace(self, contents_nonce=nonce, contents_length=length)


@dataclass(frozen=True)
class VaultBytes:
    """A vault file split into its parts, checksum and header checked."""

    header: Header
    header_bytes: bytes
    contents: bytes


def seal(header: Header, encrypted_contents: bytes) -> bytes:
    """The whole file: header, encrypted contents, checksum."""
    if len(encrypted_contents) != header.contents_length:
        raise ValueError("the header's contents length does not match the contents")
    body = header.pack() + encrypted_contents
    return body + _checksum(body)


def parse(path: Path, data: bytes) -> VaultBytes:
    """Split ``data`` (the file at ``path``) into its parts; VaultAltered if it is not intact."""
    smallest = HEADER_BYTES + sodium.MAC_BYTES + CHECKSUM_BYTES
    if len(data) < smallest:
        raise VaultAltered(path, f"{len(data)} bytes, shorter than any vault ({smallest})")
    body, checksum = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
    if not sodium.equal(_checksum(body), checksum):
        raise VaultAltered(path, "its checksum does not match its contents")
    (magic, version, mode, reserved, key_id, opslimit, memlimit, salt, wrap_nonce, wrapped_key,
     contents_nonce, length) = _HEADER.unpack_from(body, 0)
    if magic != MAGIC:
        raise VaultAltered(path, "it does not start as a Runa vault")
    if version != VERSION:
        raise UnsupportedVault(path, version, VERSION)
    if reserved != 0 or mode not in (KeyMode.KEYFILE, KeyMode.PASSPHRASE):
        raise VaultAltered(path, f"unknown key mode {mode}/{reserved}")
    if HEADER_BYTES + length != len(body) or length > CONTENTS_MAX + sodium.MAC_BYTES:
        raise VaultAltered(path, f"its header gives {length} bytes of contents, the file has "
                                 f"{len(body) - HEADER_BYTES}")
    key_mode = KeyMode(mode)
    argon2 = None
    if key_mode is KeyMode.PASSPHRASE:
        argon2 = Argon2Params(opslimit, memlimit)
        if (problem := argon2.problem()) is not None:
            raise VaultAltered(path, problem)
    elif opslimit or memlimit or any(salt):
        raise VaultAltered(path, "a key-file vault with Argon2id parameters")
    header = Header(key_mode, key_id, argon2, salt, wrap_nonce, wrapped_key, contents_nonce,
                    length, version)
    return VaultBytes(header, body[:HEADER_BYTES], body[HEADER_BYTES:])


def _checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=CHECKSUM_BYTES).digest()
