"""Ed25519 on wipeable buffers: the keys PyNaCl's public API derives from the same seed, and
signatures that fail for any other message or key."""

from __future__ import annotations

import nacl.signing

from runa.crypto import sodium


def test_a_seed_gives_pynacls_key_and_signatures_it_accepts() -> None:
    seed = bytearray(range(32))
    public, secret = sodium.sign_keypair(seed)
    reference = nacl.signing.SigningKey(bytes(seed))
    assert public == bytes(reference.verify_key)
    signature = sodium.sign(secret, b"day head")
    assert signature == reference.sign(b"day head").signature
    assert sodium.signed_by(public, b"day head", signature)


def test_a_signature_fails_for_another_message_key_or_length() -> None:
    public, secret = sodium.sign_keypair(bytearray(32))
    other, _ = sodium.sign_keypair(bytearray(b"x" * 32))
    signature = sodium.sign(secret, b"message")
    assert not sodium.signed_by(public, b"messagf", signature)
    assert not sodium.signed_by(other, b"message", signature)
    assert not sodium.signed_by(public, b"message", signature[:-1])
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not sodium.signed_by(public, b"message", flipped)
