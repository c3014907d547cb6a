"""coven: secrets encrypted at rest, handed out on purpose (docs/coven.md).

Modules, each with one job: ``sodium`` (the libsodium calls, on buffers that are wiped),
``secret`` (name rules, value limits, ``SecretBytes``), ``contents`` (the decrypted inside),
``fileformat`` (the file's bytes: header, checksum), ``atomic`` (crash-safe replacement and the
directory lock), ``keys`` (key files and Argon2id), ``vault`` (the vault and its states),
``identity`` (who may ask: gilgul, as the kernel names it) and ``daemon`` (``runa daemon
coven``: the vault served to gilgul on the coven bus). gilgul's broker and ``runa secret``
reach the vault through gilgul.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runa.surface import lazy

if TYPE_CHECKING:
    from runa.coven.contents import SecretInfo
    from runa.coven.errors import (
        CovenError,
        KeyFileError,
        KeyFileExposed,
        SecretNameError,
        SecretValueError,
        UnknownSecret,
        UnsupportedVault,
        VaultAltered,
        VaultLocked,
        VaultModeError,
        VaultWriteError,
        WrongPassphrase,
    )
    from runa.coven.fileformat import SHIPPED_ARGON2, Argon2Params, KeyMode
    from runa.coven.secret import NAME_FORM, VALUE_MAX, SecretBytes, check_name, check_value
    from runa.coven.vault import (
        AccessEvent,
        Location,
        Vault,
        VaultState,
        VaultStatus,
        journal_audit,
    )

__all__ = [
    "NAME_FORM",
    "SHIPPED_ARGON2",
    "VALUE_MAX",
    "AccessEvent",
    "Argon2Params",
    "CovenError",
    "KeyFileError",
    "KeyFileExposed",
    "KeyMode",
    "Location",
    "SecretBytes",
    "SecretInfo",
    "SecretNameError",
    "SecretValueError",
    "UnknownSecret",
    "UnsupportedVault",
    "Vault",
    "VaultAltered",
    "VaultLocked",
    "VaultModeError",
    "VaultState",
    "VaultStatus",
    "VaultWriteError",
    "WrongPassphrase",
    "check_name",
    "check_value",
    "journal_audit",
]
if not TYPE_CHECKING:  # mypy reads the imports above; an unknown name stays an error
    __getattr__ = lazy(__name__, {
        "contents": ("SecretInfo",),
        "errors": ("CovenError", "KeyFileError", "KeyFileExposed", "SecretNameError",
                   "SecretValueError", "UnknownSecret", "UnsupportedVault", "VaultAltered",
                   "VaultLocked", "VaultModeError", "VaultWriteError", "WrongPassphrase"),
        "fileformat": ("SHIPPED_ARGON2", "Argon2Params", "KeyMode"),
        "secret": ("NAME_FORM", "VALUE_MAX", "SecretBytes", "check_name", "check_value"),
        "vault": ("AccessEvent", "Location", "Vault", "VaultState", "VaultStatus",
                  "journal_audit"),
    })
