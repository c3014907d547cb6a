"""The store's errors (exported by ``runa.alethia.store``)."""

from __future__ import annotations

from runa.errors import RunaError


class StoreError(RunaError):
    """Something about alethia's store; the message names the file or record, never text."""

    exit_code = 74  # EX_IOERR


class WrongKey(StoreError):
    """A memory key that does not open the store's day keys (or a signing key that is not the
    store's); nothing was written."""

    exit_code = 77  # EX_NOPERM


class StoreFull(StoreError):
    """The disk is full: the record was not written and the chain is as it was before."""


class UnknownRecord(StoreError):
    """No record with this id (or it was forgotten)."""

    exit_code = 66  # EX_NOINPUT
