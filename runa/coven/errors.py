"""What can go wrong with a vault, each naming the file or the secret a person must look at.

No message carries a secret's value, a key or a passphrase: only names, paths and counts.
Exit codes follow sysexits, as everywhere in Runa.
"""

from __future__ import annotations

from pathlib import Path

from runa.errors import RunaError, UsageError


class CovenError(RunaError):
    """Base of every vault problem."""

    exit_code = 70  # EX_SOFTWARE unless a subclass knows better


class SecretNameError(CovenError, UsageError):
    """A secret's name outside the allowed form (says which)."""

    exit_code = 64  # EX_USAGE


class SecretValueError(CovenError, UsageError):
    """A secret's value that cannot be stored: empty, too large, or the vault would be full."""

    exit_code = 64  # EX_USAGE


class UnknownSecret(CovenError):
    """No secret of that name in the vault."""

    exit_code = 66  # EX_NOINPUT, as every name of something that does not exist

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no secret {name!r} in the vault")


class VaultLocked(CovenError):
    """The vault is locked (passphrase mode, or locked on purpose): nothing can be read."""

    exit_code = 69  # EX_UNAVAILABLE: answerable once unlocked

    def __init__(self, path: Path | str, hint: str = "unlock it with 'runa secret unlock'") -> None:
        self.path = str(path)
        super().__init__(f"the vault {self.path} is locked; {hint}")


class WrongPassphrase(CovenError):
    """The passphrase does not open the vault; nothing was changed."""

    exit_code = 77  # EX_NOPERM

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        super().__init__(f"wrong passphrase for the vault {self.path} (or its key block was "
                         "altered); the vault was not changed")


class VaultAltered(CovenError):
    """The vault file is not what Runa wrote: a changed, truncated or extended byte.

    It is never overwritten and never re-created in its place: a person decides (restore a
    backup, or move it away to start a new vault).
    """

    exit_code = 65  # EX_DATAERR

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"the vault {self.path} was altered or damaged ({problem}); it was "
                         "left as it is: restore it from a backup, or move it away to start a "
                         "new vault")


class UnsupportedVault(CovenError):
    """An intact vault in a format this version of Runa does not read (a newer one)."""

    exit_code = 65  # EX_DATAERR

    def __init__(self, path: Path | str, version: int, supported: int) -> None:
        self.path = str(path)
        super().__init__(f"the vault {self.path} has format version {version}; this Runa "
                         f"reads version {supported}: use the Runa that wrote it")


class KeyFileError(CovenError):
    """A key file that cannot be used: missing, malformed, or not the vault's key."""

    exit_code = 66  # EX_NOINPUT

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"key file {self.path}: {problem}")


class KeyFileExposed(CovenError):
    """A key file (or its directory) others may read or that another user owns: refused.

    As ssh refuses an unprotected private key: the key is not read at all.
    """

    exit_code = 77  # EX_NOPERM

    def __init__(self, path: Path | str, problem: str, fix: str) -> None:
        self.path = str(path)
        super().__init__(f"refusing {self.path}: {problem}; {fix}")


class VaultWriteError(CovenError):
    """The vault (or a key file) cannot be written; the previous one is unchanged."""

    exit_code = 74  # EX_IOERR

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = str(path)
        super().__init__(f"cannot write {self.path}: {problem}; the previous version is kept")


class VaultModeError(CovenError, UsageError):
    """Asked for what the vault's key mode does not have (a passphrase for a key-file vault,
    or none where one is needed), or to create a vault where one is."""

    exit_code = 64  # EX_USAGE
