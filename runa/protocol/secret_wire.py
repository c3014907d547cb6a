"""The answers of the secrets hops, as gilgul's broker and ``runa secret`` read them.

``runa.protocol.secrets`` declares the requests; this module declares what comes back, in
one place, so the broker, the command and coven agree on the field names and faults:

- a request's sealed fields are ``Op.request(...)`` (``{"op": …, "name": …}``; towards coven
  also ``for`` and ``pid``); a value (``set``, the passphrase of ``unlock``, the new
  passphrase of ``rotate``) is the sealed frame's value bytes;
- an answer is a ``response`` envelope (the request's id, ``eof``) whose payload is sealed
  (``broker_reply``/``coven_reply``) with the fields below, ``get``'s value as value bytes;
- a refusal or failure is a plain ``error`` envelope: ``code``, ``name``, ``message``, and
  ``exit_code`` (the sysexits status a command ends with: ``runa.protocol.faults``); from
  coven also ``kind`` (the vault error's class: ``VaultLocked``, ``WrongPassphrase``, …),
  from the broker ``reason`` (one of ``REASONS``). A locked vault is coven's ``kind``
  ``VaultLocked`` (``exit_code`` 69): a component that gets it waits and asks again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# -- sealed reply fields -----------------------------------------------------------------------

#: ``list``: ``{"secrets": [{"name": str, "size": int, "updated_ms": int}, …]}``.
SECRETS = "secrets"
ENTRY_NAME, ENTRY_SIZE, ENTRY_CHANGED = "name", "size", "updated_ms"
#: ``status``, ``unlock``, ``lock``: ``state`` (one of ``STATES``), ``mode`` (``keyfile`` or
#: ``passphrase``; None with no vault), ``key_id``, ``argon2`` (``{"opslimit": int,
#: "memlimit": int}`` in passphrase mode, else None) and ``secrets``: how many (None unless
#: unlocked).
STATE, MODE, KEY_ID, ARGON2, COUNT = "state", "mode", "key_id", "argon2", "secrets"
ABSENT, LOCKED, UNLOCKED = "absent", "locked", "unlocked"
STATES = (ABSENT, LOCKED, UNLOCKED)
#: ``rotate``'s optional request field: the key mode to rotate to (``keyfile`` or
#: ``passphrase``, whose new passphrase is the value bytes); absent keeps the vault's mode.
KEYFILE, PASSPHRASE = "keyfile", "passphrase"
MODES = (KEYFILE, PASSPHRASE)

# -- faults ------------------------------------------------------------------------------------

EXIT_CODE = "exit_code"
KIND = "kind"
LOCKED_KIND = "VaultLocked"
REASON = "reason"
EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_UNAVAILABLE, EX_NOPERM = 64, 65, 66, 69, 77
#: Why the broker refused or could not serve a request (``reason`` of its faults).
NOT_AUTHORIZED = "not-authorized"
COVEN_NOT_RUNNING = "coven-not-running"
COVEN_NOT_ANSWERING = "coven-not-answering"
REASONS = (NOT_AUTHORIZED, COVEN_NOT_RUNNING, COVEN_NOT_ANSWERING)


def is_locked(fault: Mapping[str, Any]) -> bool:
    """Whether an error payload says the vault is locked (coven's ``VaultLocked``), as
    opposed to coven not running (the broker's, same exit status): worth waiting for."""
    return fault.get(KIND) == LOCKED_KIND
