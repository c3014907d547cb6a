"""The vault: named secrets in one file, encrypted at rest, opened and locked on purpose.

Envelope encryption: a random data key encrypts the contents; a key-encryption key (KEK)
wraps the data key. The KEK comes from a key file (the default: created at first use, so a
stack starts unattended) or from a passphrase through Argon2id (the vault then starts
locked). Only the KEK stays in memory while the vault is unlocked; every operation reads the
file, checks its checksum and both MACs, and wipes the data key and the decrypted contents
before it returns.

States (``VaultState``): ABSENT (no file yet: ``list`` is empty, ``set`` and
``get_or_create`` create a key-file vault, ``create`` a passphrase one), LOCKED (the file
exists, no KEK held: only ``status`` answers; everything else raises VaultLocked, exit 69),
UNLOCKED (a KEK held). ``unlock`` and ``lock`` move between the last two; a new ``Vault``
(and ``Vault.open``) starts LOCKED. Names are encrypted with the values, so listing them
needs the vault unlocked.

Every public operation emits one ``AccessEvent`` (operation, secret name, requester,
outcome) to the audit sink, before any secret leaves the vault; a sink that fails stops the
secret. Writes hold an exclusive flock on the vault's directory and reads a shared one, so
two processes never interleave a read-modify-write, and a rotation never removes a key file
under a reader.
"""

from __future__ import annotations

import enum
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runa.coven.atomic import (
    Checkpoint,
    directory_lock,
    no_checkpoint,
    remove_temporaries,
    replace_file,
)
from runa.coven.contents import Contents, MalformedContents, SecretInfo
from runa.coven.errors import (
    CovenError,
    KeyFileError,
    SecretValueError,
    UnknownSecret,
    VaultAltered,
    VaultLocked,
    VaultModeError,
    VaultWriteError,
    WrongPassphrase,
)
from runa.coven.fileformat import (
    CONTENTS_MAX,
    KEY_ID_BYTES,
    LARGEST_FILE,
    SHIPPED_ARGON2,
    WRAPPED_KEY_BYTES,
    Argon2Params,
    Header,
    KeyMode,
    VaultBytes,
    parse,
    seal,
)
from runa.coven.keys import KeyFiles, derive
from runa.coven.secret import COUNT_MAX, SecretBytes, check_name, check_value
from runa.crypto import sodium
from runa.errors import RunaError
from runa.log import event
from runa.paths import Paths
from runa.protocol.secrets import CREATE_SIZE, size_problem

VAULT_FILE = "vault"
KEYS_DIR = "keys"
LOCAL = "local"  # the requester of a direct library call (no broker in between)


class VaultState(enum.Enum):
    ABSENT = "absent"
    LOCKED = "locked"
    UNLOCKED = "unlocked"


@dataclass(frozen=True)
class Location:
    """Where a vault's file and its key files live."""

    vault: Path
    keys: Path

    @classmethod
    def in_directory(cls, directory: Path) -> Location:
        return cls(directory / VAULT_FILE, directory / KEYS_DIR)

    @classmethod
    def for_stack(cls, paths: Paths) -> Location:
        """A stack's vault: ``<data>/coven/vault`` and ``<data>/coven/keys/``."""
        return cls.in_directory(paths.data / "coven")


@dataclass(frozen=True)
class AccessEvent:
    """One audited operation. Never a value: a name, who asked, what happened."""

    op: str
    name: str | None
    requester: str
    outcome: str  # ok, absent, unknown, locked, altered, wrong-passphrase, refused, error


Audit = Callable[[AccessEvent], None]


def no_audit(event: AccessEvent) -> None:
    """The audit sink of a caller that keeps no record (tests, a one-shot tool)."""


def journal_audit(logger: logging.Logger,
                  context: Callable[[], Mapping[str, str | int]] = dict) -> Audit:
    """An audit sink writing ``RUNA_EVENT=secret_access`` records (name, requester, outcome),
    plus the fields ``context`` gives at that moment (the daemon's: the pids the kernel
    named)."""
    def audit(access: AccessEvent) -> None:
        fields: dict[str, Any] = {**context(), "op": access.op, "secret": access.name or "",
                                  "requester": access.requester, "outcome": access.outcome}
        event(logger, "secret_access",
              f"secret {access.op} {access.name or '-'} by {access.requester}: {access.outcome}",
              **fields)
    return audit


@dataclass(frozen=True)
class VaultStatus:
    """What can be said of a vault without its key (nothing about its secrets)."""

    path: Path
    state: VaultState
    mode: KeyMode | None = None
    key_id: str | None = None
    argon2: Argon2Params | None = None


@dataclass
class _Kek:
    """The key-encryption key held while unlocked, with the key id it belongs to."""

    key_id: bytes
    key: bytearray = field(repr=False)

    def wipe(self) -> None:
        sodium.wipe(self.key)


_OUTCOMES: tuple[tuple[type[RunaError], str], ...] = (
    (UnknownSecret, "unknown"), (VaultLocked, "locked"), (VaultAltered, "altered"),
    (WrongPassphrase, "wrong-passphrase"), (VaultModeError, "refused"),
)


class Vault:
    """One vault file and its keys (module doc: states, audit, locking)."""

    def __init__(self, location: Location, *, audit: Audit = no_audit,
                 checkpoint: Checkpoint = no_checkpoint,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                 argon2: Argon2Params = SHIPPED_ARGON2) -> None:
        self.location = location
        self._audit = audit
        self._checkpoint = checkpoint
        self._clock_ms = clock_ms
        self._argon2 = argon2
        self._keys = KeyFiles(location.keys, checkpoint)
        self._kek: _Kek | None = None

    @classmethod
    def open(cls, location: Location, *, unattended: bool = True, audit: Audit = no_audit,
             checkpoint: Checkpoint = no_checkpoint) -> Vault:
        """A vault as a daemon opens it: leftovers of killed writers removed (``recover``),
        and a key-file vault unlocked when ``unattended`` (a passphrase vault stays locked)."""
        vault = cls(location, audit=audit, checkpoint=checkpoint)
        vault.recover()
        if unattended and vault.status().mode is KeyMode.KEYFILE:
            vault.unlock()
        return vault

    def __repr__(self) -> str:
        return f"<Vault {self.location.vault} {self.state.value}>"

    # -- state --------------------------------------------------------------------------

    @property
    def state(self) -> VaultState:
        if self._kek is not None:
            return VaultState.UNLOCKED
        return VaultState.LOCKED if self.location.vault.exists() else VaultState.ABSENT

    def status(self) -> VaultStatus:
        """State, key mode, key id and Argon2id parameters; VaultAltered if the file is not
        intact (checked without the key, so also while locked)."""
        with self._reading():
            parsed = self._read()
        if parsed is None:
            return VaultStatus(self.location.vault, VaultState.ABSENT)
        header = parsed.header
        return VaultStatus(self.location.vault, self.state, header.mode, header.key_id.hex(),
                           header.argon2)

    def unlock(self, passphrase: sodium.Buffer | None = None, *,
               requester: str = LOCAL) -> VaultState:
        """Hold the KEK after checking it opens the whole vault; the new state.

        A key-file vault takes no passphrase; a passphrase vault needs one. A wrong
        passphrase raises WrongPassphrase and changes nothing, the state included.
        """
        with self._audited("unlock", None, requester) as done, self._writing():
            parsed = self._read()
            if parsed is None:
                self._recover(None)
                done("absent")
                return VaultState.ABSENT
            kek = self._kek_for(parsed.header, passphrase)
            try:
                self._decrypt(parsed, kek).wipe()
            except BaseException:
                kek.wipe()
                raise
            self._forget_kek()
            self._kek = kek
            self._recover(kek)
            return VaultState.UNLOCKED

    def lock(self, *, requester: str = LOCAL) -> VaultState:
        """Wipe the KEK; the vault answers VaultLocked until ``unlock``."""
        with self._audited("lock", None, requester):
            self._forget_kek()
            return self.state

    def recover(self) -> list[Path]:
        """Remove what killed writers left: temporary files, and key files the vault does
        not name once its header is proven (a key-file vault's by its key file, a passphrase
        vault's when unlocked); none while there is no vault or it is not intact. Which ones."""
        with self._writing():
            return self._recover(self._kek)

    # -- secrets ------------------------------------------------------------------------

    def names(self, *, requester: str = LOCAL) -> list[SecretInfo]:
        """Every secret's name and last change, sorted by name (never values)."""
        with self._audited("list", None, requester), self._reading():
            parsed = self._read()
            if parsed is None:
                return []
            with self._decrypt(parsed, self._held_kek(parsed.header)) as contents:
                return contents.names()

    def get(self, name: str, *, requester: str = LOCAL) -> SecretBytes:
        """A copy of ``name``'s value, which the caller wipes (``with vault.get(n) as v``)."""
        check_name(name)
        with self._audited("get", name, requester) as done, self._reading():
            parsed = self._read()
            if parsed is None:
                raise UnknownSecret(name)
            with self._decrypt(parsed, self._held_kek(parsed.header)) as contents:
                if name not in contents:
                    raise UnknownSecret(name)
                value = contents.get(name)
            try:
                done("ok")  # the access is on record before the value leaves
            except BaseException:
                value.wipe()
                raise
            return value

    def set(self, name: str, value: bytes | bytearray | memoryview, *,
            requester: str = LOCAL) -> None:
        """Store ``value`` as ``name`` (replacing any); an absent vault is created first with
        a new key file."""
        check_name(name)
        check_value(name, value)
        with self._audited("set", name, requester), self._writing():
            parsed = self._read()
            if parsed is None:
                self._create(KeyMode.KEYFILE, None, Contents.empty(), name, value)
                return
            kek = self._held_kek(parsed.header)
            with self._decrypt(parsed, kek) as contents:
                if name not in contents and len(contents) >= COUNT_MAX:
                    raise SecretValueError(f"secret {name!r}: the vault holds {COUNT_MAX} "
                                           "secrets, its limit")
                with contents.with_value(name, value, self._clock_ms()) as changed:
                    self._write_contents(parsed.header, kek, changed)

    def get_or_create(self, name: str, size: int = CREATE_SIZE, *,
                      requester: str = LOCAL) -> tuple[SecretBytes, bool]:
        """``name``'s value, made of ``size`` random bytes and stored first if there is none
        (an absent vault is created with a key file), and whether it was made; the caller
        wipes. Looking and storing under one writer's lock, so two requesters never make two
        values."""
        check_name(name)
        problem = size_problem(size) if isinstance(size, int) else "'size' must be an integer"
        if problem:
            raise SecretValueError(f"secret {name!r}: {problem}")
        with self._audited("create", name, requester) as done, self._writing():
            value, created = self._get_or_make(name, size)
            try:
                done("created" if created else "ok")  # on record before the value leaves
            except BaseException:
                value.wipe()
                raise
            return value, created

    def _get_or_make(self, name: str, size: int) -> tuple[SecretBytes, bool]:
        """Under the exclusive lock: the stored value, or a new one stored."""
        value = SecretBytes.adopt(sodium.random_into(bytearray(size)))
        try:
            parsed = self._read()
            if parsed is None:
                self._create(KeyMode.KEYFILE, None, Contents.empty(), name, value.view())
                return value, True
            kek = self._held_kek(parsed.header)
            with self._decrypt(parsed, kek) as contents:
                if name in contents:
                    value.wipe()
                    return contents.get(name), False
                if len(contents) >= COUNT_MAX:
                    raise SecretValueError(f"secret {name!r}: the vault holds {COUNT_MAX} "
                                           "secrets, its limit")
                with contents.with_value(name, value.view(), self._clock_ms()) as changed:
                    self._write_contents(parsed.header, kek, changed)
            return value, True
        except BaseException:
            value.wipe()
            raise

    def remove(self, name: str, *, requester: str = LOCAL) -> None:
        """Delete ``name`` (UnknownSecret if there is none)."""
        check_name(name)
        with self._audited("rm", name, requester), self._writing():
            parsed = self._read()
            if parsed is None:
                raise UnknownSecret(name)
            kek = self._held_kek(parsed.header)
            with self._decrypt(parsed, kek) as contents:
                if name not in contents:
                    raise UnknownSecret(name)
                with contents.without(name) as changed:
                    self._write_contents(parsed.header, kek, changed)

    # -- keys ---------------------------------------------------------------------------

    def create(self, passphrase: sodium.Buffer | None = None, *,
               requester: str = LOCAL) -> None:
        """Create an empty vault: with a passphrase (Argon2id) or a new key file; unlocked.

        VaultModeError if a vault is already there.
        """
        with self._audited("create", None, requester), self._writing():
            if self._read() is not None:
                raise VaultModeError(f"a vault already exists at {self.location.vault}")
            mode = KeyMode.KEYFILE if passphrase is None else KeyMode.PASSPHRASE
            self._create(mode, passphrase, Contents.empty(), None, None)

    def rotate(self, *, mode: KeyMode | None = None, passphrase: sodium.Buffer | None = None,
               requester: str = LOCAL) -> str:
        """Re-encrypt everything under a new data key and a new KEK; the new key id.

        ``mode`` says how the new KEK is kept: a new key file, or ``passphrase`` (the same or
        a new one) with a new salt; by default a passphrase when one is given, else the
        vault's own mode. In key-file mode the new key
        file is written first, then the vault naming it, then the old key file removed: a kill
        at any point leaves a vault that opens, and ``recover`` removes the key left over.
        """
        with self._audited("rotate", None, requester), self._writing():
            parsed = self._read()
            if parsed is None:
                raise VaultModeError(f"there is no vault at {self.location.vault} to rotate")
            if mode is None:
                mode = KeyMode.PASSPHRASE if passphrase is not None else parsed.header.mode
            if mode is KeyMode.PASSPHRASE and passphrase is None:
                raise VaultModeError("rotating to a passphrase needs the passphrase (the "
                                     "current one or a new one)")
            if mode is KeyMode.KEYFILE and passphrase is not None:
                raise VaultModeError("a key-file vault takes no passphrase")
            old = parsed.header
            with self._decrypt(parsed, self._held_kek(old)) as contents:
                self._create(mode, passphrase, contents, None, None)
            if old.mode is KeyMode.KEYFILE:
                self._keys.remove(old.key_id)
            assert self._kek is not None
            return self._kek.key_id.hex()

    # -- inside -------------------------------------------------------------------------

    def _create(self, mode: KeyMode, passphrase: sodium.Buffer | None, contents: Contents,
                name: str | None, value: bytes | bytearray | memoryview | None) -> None:
        """Write a vault with a new data key and KEK holding ``contents`` (plus ``name``);
        hold the new KEK. Under the exclusive lock."""
        self.location.vault.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if mode is KeyMode.KEYFILE:
            key_id, kek_key = self._keys.create()  # first: the vault must never name a
            argon2, salt = None, bytes(sodium.SALT_BYTES)     # key file that is not there yet
        else:
            assert passphrase is not None
            key_id = sodium.random_bytes(KEY_ID_BYTES)
            argon2, salt = self._argon2, sodium.random_bytes(sodium.SALT_BYTES)
            kek_key = derive(passphrase, salt, argon2)
        kek = _Kek(key_id, kek_key)
        data_key = sodium.new_key()
        try:
            wrap_nonce = sodium.random_bytes(sodium.NONCE_BYTES)
            header = Header(mode, key_id, argon2, salt, wrap_nonce, bytes(WRAPPED_KEY_BYTES),
                            bytes(sodium.NONCE_BYTES), 0)
            wrapped = sodium.encrypt(kek.key, wrap_nonce, data_key, header.kek_bound())
            header = replace(header, wrapped_key=wrapped)
            if name is not None and value is not None:
                with contents.with_value(name, value, self._clock_ms()) as changed:
                    self._write_with_data_key(header, data_key, changed)
            else:
                self._write_with_data_key(header, data_key, contents)
        except BaseException:
            kek.wipe()
            raise
        finally:
            sodium.wipe(data_key)
        self._forget_kek()
        self._kek = kek

    def _write_contents(self, header: Header, kek: _Kek, contents: Contents) -> None:
        data_key = self._unwrap(header, kek)
        try:
            self._write_with_data_key(header, data_key, contents)
        finally:
            sodium.wipe(data_key)

    def _write_with_data_key(self, header: Header, data_key: bytearray,
                             contents: Contents) -> None:
        if len(contents.plaintext) > CONTENTS_MAX:
            raise SecretValueError(f"the vault would hold {len(contents.plaintext)} bytes; "
                                   f"its limit is {CONTENTS_MAX}")
        nonce = sodium.random_bytes(sodium.NONCE_BYTES)
        length = len(contents.plaintext) + sodium.MAC_BYTES
        header = header.with_contents(nonce, length)
        encrypted = sodium.encrypt(data_key, nonce, contents.plaintext, header.pack())
        replace_file(self.location.vault, seal(header, encrypted), label="vault",
                     checkpoint=self._checkpoint)

    def _read(self) -> VaultBytes | None:
        """The intact vault file, or None if there is none."""
        path = self.location.vault
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise VaultAltered(path, f"cannot be opened: {error.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            if size > LARGEST_FILE:
                raise VaultAltered(path, f"{size} bytes, larger than any vault ({LARGEST_FILE})")
            with os.fdopen(fd, "rb", closefd=False) as stream:
                data = stream.read(LARGEST_FILE + 1)
        finally:
            os.close(fd)
        return parse(path, data)

    def _held_kek(self, header: Header) -> _Kek:
        """The KEK for ``header``: the one held, or (key-file mode, the vault rotated by
        another process) its new key file; VaultLocked when there is none."""
        kek = self._kek
        if kek is None:
            raise VaultLocked(self.location.vault)
        if sodium.equal(kek.key_id, header.key_id):
            return kek
        if header.mode is KeyMode.PASSPHRASE:
            self._forget_kek()
            raise VaultLocked(self.location.vault, "it was re-keyed since it was unlocked: "
                                                   "unlock it again")
        fresh = _Kek(header.key_id, self._keys.load(header.key_id))
        self._forget_kek()
        self._kek = fresh
        return fresh

    def _kek_for(self, header: Header, passphrase: sodium.Buffer | None) -> _Kek:
        """The KEK ``header`` names, from its key file or ``passphrase``; checked to unwrap."""
        if header.mode is KeyMode.KEYFILE:
            if passphrase is not None:
                raise VaultModeError(f"the vault {self.location.vault} is opened by its key "
                                     "file, not a passphrase")
            kek = _Kek(header.key_id, self._keys.load(header.key_id))
        else:
            if passphrase is None:
                raise VaultLocked(self.location.vault,
                                  "it needs its passphrase: 'runa secret unlock'")
            assert header.argon2 is not None
            kek = _Kek(header.key_id, derive(passphrase, header.salt, header.argon2))
        try:
            sodium.wipe(self._unwrap(header, kek))
        except BaseException:
            kek.wipe()
            raise
        return kek

    def _unwrap(self, header: Header, kek: _Kek) -> bytearray:
        data_key = sodium.decrypt_into(kek.key, header.wrap_nonce, header.wrapped_key,
                                       header.kek_bound())
        if data_key is not None:
            return data_key
        if header.mode is KeyMode.PASSPHRASE:
            raise WrongPassphrase(self.location.vault)
        raise KeyFileError(self._keys.path(header.key_id),
                           f"does not open the vault {self.location.vault}: the key file was "
                           "altered or belongs to another vault")

    def _decrypt(self, parsed: VaultBytes, kek: _Kek) -> Contents:
        data_key = self._unwrap(parsed.header, kek)
        try:
            plain = sodium.decrypt_into(data_key, parsed.header.contents_nonce,
                                        parsed.contents, parsed.header_bytes)
        finally:
            sodium.wipe(data_key)
        if plain is None:
            raise VaultAltered(self.location.vault, "its contents do not authenticate")
        try:
            return Contents(plain)
        except MalformedContents as error:
            sodium.wipe(plain)
            raise VaultAltered(self.location.vault, f"malformed contents: {error}") from None

    def _recover(self, verified: _Kek | None) -> list[Path]:
        """Remove temporary files, then key files the vault does not name, but only once the
        vault's header is proven: its key id and mode are authenticated by the wrapped data
        key, so a forged header can never make Runa delete the key that opens the vault."""
        removed = []
        for directory in {self.location.vault.parent, self.location.keys}:
            if directory.is_dir():
                removed += remove_temporaries(directory)
        try:
            parsed = self._read()
        except CovenError:
            return removed  # not intact: its key files are what a person needs to keep
        if parsed is None:
            return removed  # key files may belong to a vault being restored: kept
        header = parsed.header
        if verified is None or not sodium.equal(verified.key_id, header.key_id):
            if header.mode is not KeyMode.KEYFILE:
                return removed  # proven only when unlocked with the passphrase
            try:
                self._kek_for(header, None).wipe()
            except CovenError:
                return removed
        keep = header.key_id if header.mode is KeyMode.KEYFILE else None
        return removed + self._keys.remove_others(keep)

    def _forget_kek(self) -> None:
        if self._kek is not None:
            self._kek.wipe()
            self._kek = None

    @contextmanager
    def _reading(self) -> Iterator[None]:
        if not self.location.vault.parent.is_dir():
            yield
            return
        with directory_lock(self.location.vault.parent, exclusive=False):
            yield

    @contextmanager
    def _writing(self) -> Iterator[None]:
        directory = self.location.vault.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise VaultWriteError(directory, error.strerror or str(error)) from None
        with directory_lock(directory, exclusive=True):
            yield

    @contextmanager
    def _audited(self, op: str, name: str | None,
                 requester: str) -> Iterator[Callable[[str], None]]:
        """Emit one AccessEvent for the operation: ``ok`` when it returns, else the error's
        outcome. An operation that hands out a secret calls the yielded function first, so
        the event is recorded before the secret leaves."""
        recorded = False

        def record(outcome: str = "ok") -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                self._audit(AccessEvent(op, name, requester, outcome))

        try:
            yield record
        except RunaError as error:
            record(next((label for kind, label in _OUTCOMES if isinstance(error, kind)),
                        "error"))
            raise
        except BaseException:
            record("error")
            raise
        record()
