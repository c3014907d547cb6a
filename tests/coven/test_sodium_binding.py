"""The private libsodium binding coven calls: every function it uses exists in this PyNaCl.

coven calls PyNaCl's compiled binding (``nacl._sodium``) so keys can live in buffers it
wipes; that module is not PyNaCl's public interface, so an upgrade that renames a function
must fail here, in CI, not when a person's stack starts.
"""

from __future__ import annotations

import re
from pathlib import Path

import nacl

from runa.crypto import sodium


def test_every_libsodium_function_coven_calls_exists_in_this_pynacl() -> None:
    source = Path(sodium.__file__).read_text(encoding="utf-8")
    used = sorted(set(re.findall(r"_lib\.(\w+)", source)))
    assert len(used) >= 10, used  # the scan found the calls
    missing = [name for name in used if not hasattr(sodium._lib, name)]
    assert not missing, f"PyNaCl {nacl.__version__} lacks {missing}"
