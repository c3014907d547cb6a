"""The few libsodium calls Runa makes (the vault, sealed bus payloads), on buffers the
caller owns and can wipe.

PyNaCl's public wrappers (``nacl.bindings``, ``nacl.pwhash``) take keys and plaintext only as
``bytes`` and return ``bytes``: immutable objects Python frees without zeroing, so every key
and every decrypted secret would linger in freed memory. These wrappers call the same
libsodium functions through PyNaCl's own compiled binding (``nacl._sodium``, present and
unchanged in every PyNaCl since 1.0; checked with Debian 12's 1.5.0 and with 1.6) with
``bytearray`` buffers: keys are generated, derived and decrypted straight into buffers
that ``wipe`` zeroes with ``sodium_memzero``.

The algorithms: XChaCha20-Poly1305 (IETF) AEAD with 24-byte random nonces, Argon2id
(``crypto_pwhash`` with ``ALG_ARGON2ID13``), and Ed25519 signatures (``crypto_sign``).
"""

from __future__ import annotations

import importlib
from typing import Any

try:
    _sodium: Any = importlib.import_module("nacl._sodium")  # compiled: no stubs, typed Any
except ImportError as error:  # a PyNaCl without it: say which, not a bare ImportError
    raise ImportError(f"coven needs PyNaCl's compiled libsodium binding (nacl._sodium), "
                      f"present in PyNaCl 1.5 and 1.6: {error}") from None
_ffi: Any = _sodium.ffi
_lib: Any = _sodium.lib
if _lib.sodium_init() < 0:  # idempotent; PyNaCl does it too, on first use of its wrappers
    raise ImportError("libsodium failed to initialise")

KEY_BYTES: int = _lib.crypto_aead_xchacha20poly1305_ietf_keybytes()
NONCE_BYTES: int = _lib.crypto_aead_xchacha20poly1305_ietf_npubbytes()
MAC_BYTES: int = _lib.crypto_aead_xchacha20poly1305_ietf_abytes()
SALT_BYTES: int = _lib.crypto_pwhash_saltbytes()
OPSLIMIT_MIN: int = _lib.crypto_pwhash_argon2id_opslimit_min()
MEMLIMIT_MIN: int = _lib.crypto_pwhash_argon2id_memlimit_min()
_ARGON2ID: int = _lib.crypto_pwhash_alg_argon2id13()
SIGN_SEED_BYTES = 32
SIGN_PUBLIC_BYTES: int = _lib.crypto_sign_publickeybytes()
SIGNATURE_BYTES: int = _lib.crypto_sign_bytes()

Buffer = bytes | bytearray | memoryview


def _in(data: Buffer) -> Any:
    return _ffi.from_buffer("unsigned char[]", data)


def _out(buffer: bytearray) -> Any:
    return _ffi.from_buffer("unsigned char[]", buffer, require_writable=True)


def random_into(buffer: bytearray) -> bytearray:
    """Fill ``buffer`` with random bytes from libsodium's CSPRNG; returns it."""
    if buffer:
        _lib.randombytes(_out(buffer), len(buffer))
    return buffer


def random_bytes(size: int) -> bytes:
    """Random bytes for what is not secret (nonces, salts, key ids)."""
    return bytes(random_into(bytearray(size)))


def new_key() -> bytearray:
    """A fresh random 32-byte key, in a buffer the caller wipes."""
    return lock_memory(random_into(bytearray(KEY_BYTES)))


def wipe(buffer: bytearray) -> None:
    """Zero ``buffer`` in place (``sodium_memzero``: not optimised away)."""
    if buffer:
        _lib.sodium_memzero(_out(buffer), len(buffer))


def lock_memory(buffer: bytearray) -> bytearray:
    """Keep ``buffer``'s pages out of swap where ``RLIMIT_MEMLOCK`` allows; returns it.

    Best effort: a refused ``mlock`` changes nothing else. The buffer must not be resized
    afterwards (a bytearray that grows moves). The pages stay locked after the buffer is
    freed (unlocking one could unlock a neighbour sharing its page); locked memory is capped
    by ``RLIMIT_MEMLOCK``, and once that is used up further locks fail quietly.
    """
    if buffer:
        _lib.sodium_mlock(_out(buffer), len(buffer))
    return buffer


def encrypt(key: bytearray, nonce: bytes, plaintext: Buffer, associated: bytes) -> bytes:
    """XChaCha20-Poly1305 of ``plaintext``, authenticating ``associated``; ciphertext + MAC."""
    _check_key_and_nonce(key, nonce)
    out = bytearray(len(plaintext) + MAC_BYTES)
    written = _ffi.new("unsigned long long *")
    _lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
        _out(out), written, _in(plaintext), len(plaintext), _in(associated),
        len(associated), _ffi.NULL, _in(nonce), _in(key))
    return bytes(out[:written[0]])


def decrypt_into(key: bytearray, nonce: bytes, ciphertext: Buffer,
                 associated: bytes) -> bytearray | None:
    """The plaintext of ``ciphertext`` in a new buffer the caller wipes; None if the MAC fails.

    A MAC failure means the ciphertext, the associated data, the nonce or the key differ from
    the ones it was made with; the caller knows which of those it can tell apart.
    """
    _check_key_and_nonce(key, nonce)
    if len(ciphertext) < MAC_BYTES:
        return None
    out = lock_memory(bytearray(len(ciphertext) - MAC_BYTES))
    written = _ffi.new("unsigned long long *")
    failed = _lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
        _out(out) if out else _ffi.NULL, written, _ffi.NULL, _in(ciphertext), len(ciphertext),
        _in(associated), len(associated), _in(nonce), _in(key))
    if failed:
        wipe(out)
        return None
    return out


def decrypt_to(key: bytearray, nonce: bytes, ciphertext: Buffer, associated: bytes,
               out: Buffer) -> bool:
    """Decrypt ``ciphertext`` into ``out`` (writable, its plaintext's size); False if the MAC
    fails (``out`` is then zeroed). For bulk reads into a buffer the caller already owns."""
    _check_key_and_nonce(key, nonce)
    if len(ciphertext) < MAC_BYTES or len(out) != len(ciphertext) - MAC_BYTES:
        raise ValueError("out must be the size of the ciphertext's plaintext")
    target = _ffi.from_buffer("unsigned char[]", out, require_writable=True)
    failed = _lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
        target if len(out) else _ffi.NULL, _ffi.NULL, _ffi.NULL, _in(ciphertext),
        len(ciphertext), _in(associated), len(associated), _in(nonce), _in(key))
    if failed:
        _lib.sodium_memzero(target, len(out))
    return not failed


def argon2id_into(passphrase: Buffer, salt: bytes, opslimit: int, memlimit: int) -> bytearray:
    """The 32-byte key Argon2id derives from ``passphrase``, in a buffer the caller wipes.

    Raises MemoryError when libsodium cannot allocate ``memlimit`` bytes.
    """
    if len(salt) != SALT_BYTES:
        raise ValueError(f"an Argon2id salt is {SALT_BYTES} bytes, not {len(salt)}")
    out = lock_memory(bytearray(KEY_BYTES))
    failed = _lib.crypto_pwhash(
        _out(out), len(out), _ffi.from_buffer("char[]", passphrase), len(passphrase),
        _in(salt), opslimit, memlimit, _ARGON2ID)
    if failed:
        wipe(out)
        raise MemoryError(f"Argon2id could not allocate {memlimit} bytes")
    return out


def sign_keypair(seed: bytearray) -> tuple[bytes, bytearray]:
    """The Ed25519 public key and secret key of ``seed``; the secret key in a buffer the
    caller wipes."""
    if len(seed) != SIGN_SEED_BYTES:
        raise ValueError(f"an Ed25519 seed is {SIGN_SEED_BYTES} bytes, not {len(seed)}")
    public = bytearray(SIGN_PUBLIC_BYTES)
    secret = lock_memory(bytearray(_lib.crypto_sign_secretkeybytes()))
    _lib.crypto_sign_seed_keypair(_out(public), _out(secret), _in(seed))
    return bytes(public), secret


def sign(secret: bytearray, message: bytes) -> bytes:
    """The Ed25519 signature (detached) of ``message`` by ``secret``."""
    out = bytearray(SIGNATURE_BYTES + len(message))
    written = _ffi.new("unsigned long long *")
    _lib.crypto_sign(_out(out), written, _in(message), len(message), _in(secret))
    return bytes(out[:SIGNATURE_BYTES])


def signed_by(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public``'s Ed25519 signature of ``message``."""
    if len(public) != SIGN_PUBLIC_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    combined = signature + message
    out = bytearray(len(combined))
    written = _ffi.new("unsigned long long *")
    return _lib.crypto_sign_open(_out(out), written, _in(combined), len(combined),
                                 _in(public)) == 0


def equal(a: Buffer, b: Buffer) -> bool:
    """Constant-time comparison of two buffers of the same length."""
    return len(a) == len(b) and (not a or _lib.sodium_memcmp(_in(a), _in(b), len(a)) == 0)


def _check_key_and_nonce(key: bytearray, nonce: bytes) -> None:
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError(f"XChaCha20-Poly1305 takes a {KEY_BYTES}-byte key and a "
                         f"{NONCE_BYTES}-byte nonce")
