"""The key-encryption keys: key files in a private directory, or a passphrase via Argon2id.

A key file is ``<key id in hex>.key`` in a 0700 directory, mode 0600, owned by the user, 56
bytes: the magic ``RUNAKEY\\x00``, the 16-byte key id (again, so a renamed file is noticed)
and the 32-byte key. A key file or directory that others may read, or that another user
owns, is refused before a byte of it is read (as ssh refuses an unprotected private key).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from runa.coven.atomic import Checkpoint, no_checkpoint, remove_file, replace_file
from runa.coven.errors import KeyFileError, KeyFileExposed, SecretValueError, VaultWriteError
from runa.coven.fileformat import KEY_ID_BYTES, Argon2Params
from runa.crypto import sodium

KEY_MAGIC = b"RUNAKEY\x00"
KEY_FILE_BYTES = len(KEY_MAGIC) + KEY_ID_BYTES + sodium.KEY_BYTES
SUFFIX = ".key"


def derive(passphrase: sodium.Buffer, salt: bytes, params: Argon2Params) -> bytearray:
    """The key-encryption key of ``passphrase`` (Argon2id), in a buffer the caller wipes."""
    if not isinstance(passphrase, (bytes, bytearray, memoryview)):
        raise SecretValueError(f"a passphrase is bytes, not {type(passphrase).__name__}")
    if not memoryview(passphrase).nbytes:
        raise SecretValueError("the passphrase is empty")
    return sodium.argon2id_into(passphrase, salt, params.opslimit, params.memlimit)


class KeyFiles:
    """The key files of one vault, in ``directory``."""

    def __init__(self, directory: Path, checkpoint: Checkpoint = no_checkpoint) -> None:
        self.directory = directory
        self._checkpoint = checkpoint

    def path(self, key_id: bytes) -> Path:
        return self.directory / f"{key_id.hex()}{SUFFIX}"

    def create(self) -> tuple[bytes, bytearray]:
        """A new key (id, key) written to its file durably; the caller wipes the key."""
        self._ensure_directory()
        key_id = sodium.random_bytes(KEY_ID_BYTES)
        key = sodium.new_key()
        record = sodium.lock_memory(bytearray(KEY_MAGIC + key_id) + key)
        try:
            replace_file(self.path(key_id), record, label="key", checkpoint=self._checkpoint)
        except BaseException:
            sodium.wipe(key)
            raise
        finally:
            sodium.wipe(record)
        return key_id, key

    def load(self, key_id: bytes) -> bytearray:
        """The key of ``key_id`` from its file, in a buffer the caller wipes.

        KeyFileExposed if the file or its directory is open to others, KeyFileError if it is
        missing or not a key file of this id.
        """
        path = self.path(key_id)
        self._check_directory()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KeyFileError(path, "missing; the vault names this key and cannot be opened "
                                     "without it (restore it from the backup of the vault)"
                               ) from None
        except OSError as error:
            raise KeyFileError(path, f"cannot be opened: {error.strerror}") from None
        record = sodium.lock_memory(bytearray(KEY_FILE_BYTES + 1))
        try:
            _check_private(path, os.fstat(fd), directory=False)
            size = os.readv(fd, [record])
            if size != KEY_FILE_BYTES or record[:len(KEY_MAGIC)] != KEY_MAGIC:
                raise KeyFileError(path, "not a Runa key file (wrong size or start)")
            if bytes(record[len(KEY_MAGIC):len(KEY_MAGIC) + KEY_ID_BYTES]) != key_id:
                raise KeyFileError(path, "holds the key of another id (renamed?)")
            # a memoryview slice copies nothing: the key exists only in ``record`` (wiped
            # below) and in the buffer handed out
            return sodium.lock_memory(
                bytearray(memoryview(record)[len(KEY_MAGIC) + KEY_ID_BYTES:size]))
        finally:
            sodium.wipe(record)
            os.close(fd)

    def remove(self, key_id: bytes) -> None:
        remove_file(self.path(key_id), label="old-key", checkpoint=self._checkpoint)

    def remove_others(self, keep: bytes | None) -> list[Path]:
        """Delete every key file but ``keep``'s (None: all of them); which ones.

        Called under the vault's lock with the key id the intact vault names: the others are
        left by a rotation or a creation that was killed before it finished.
        """
        if not self.directory.is_dir():
            return []
        keep_name = self.path(keep).name if keep is not None else None
        removed = [path for path in sorted(self.directory.glob(f"*{SUFFIX}"))
                   if path.name != keep_name]
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise VaultWriteError(self.directory, error.strerror or str(error)) from None
        self._check_directory()

    def _check_directory(self) -> None:
        try:
            info = os.stat(self.directory)
        except FileNotFoundError:
            return  # load then names the missing file
        _check_private(self.directory, info, directory=True)


def _check_private(path: Path, info: os.stat_result, *, directory: bool) -> None:
    uid = os.geteuid()
    if info.st_uid != uid:
        raise KeyFileExposed(path, f"owned by uid {info.st_uid}, not by uid {uid}",
                             f"chown it to uid {uid} or move it away")
    kind_ok = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    if not kind_ok:
        raise KeyFileExposed(path, f"not a {'directory' if directory else 'regular file'}",
                             "move it away")
    if info.st_mode & 0o077:
        fix = "chmod 700" if directory else "chmod 600"
        raise KeyFileExposed(path, f"mode {stat.S_IMODE(info.st_mode):04o} lets others in",
                             f"{fix} {path}")
