"""``runa models quantize``: llama.cpp's quantizer; an interrupted or failed run leaves nothing."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import isolated_env, runa

from runa.models.errors import ModelError, ModelSpaceError
from runa.models.library import add_model, read_entry, sidecar
from runa.models.quantize import Progress, quantize_model
from runa.paths import Paths
from runa.testing.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="module")
def f32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An F32 model with rows of 256, so every k-quant applies (6.5 MiB)."""
    root = tmp_path_factory.mktemp("quant")
    source = write_tiny_gguf(root / "src.gguf", n_embd=256, n_ff=512)
    return add_model(source, root / "models", name="base").path


def test_a_quantized_copy_is_listed_with_its_type_and_sha256(f32_model: Path,
                                                             tmp_path: Path) -> None:
    steps: list[Progress] = []
    made = quantize_model(read_entry(f32_model), "q8_0", tmp_path, progress=steps.append)
    assert made.path == tmp_path / "base-q8_0.gguf"
    assert made.info is not None and made.info.quantization == "Q8_0"
    assert made.role == "chat" and made.size < f32_model.stat().st_size / 3
    assert made.sha256 == hashlib.sha256(made.path.read_bytes()).hexdigest()
    assert json.loads(sidecar(made.path).read_text())["source"] == str(f32_model)
    assert steps[-1] == Progress(21, 21) and len(steps) == 21
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base-q8_0.gguf",
                                                          "base-q8_0.gguf.json"]


def test_an_unknown_type_names_the_known_ones(f32_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"unknown quantization 'Q9_X'.*Q4_K_M"):
        quantize_model(read_entry(f32_model), "Q9_X", tmp_path)


def test_interrupted_leaves_no_half_file(f32_model: Path, tmp_path: Path) -> None:
    """Ctrl-C while llama.cpp writes: the child is killed and its file deleted."""

    def interrupt(step: Progress) -> None:
        if step.done == 5:
            assert any(tmp_path.iterdir())  # the temporary file is being written
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quantize_model(read_entry(f32_model), "Q8_0", tmp_path, progress=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_too_little_space_is_refused_before_writing(f32_model: Path, tiny_tmpfs: Path) -> None:
    with pytest.raises(ModelSpaceError, match=r"1 MiB free; base-q8_0\.gguf needs about 2 MiB"):
        quantize_model(read_entry(f32_model), "Q8_0", tiny_tmpfs)
    assert list(tiny_tmpfs.iterdir()) == []


def test_a_disk_that_fills_while_writing_leaves_nothing(f32_model: Path,
                                                        tiny_tmpfs: Path) -> None:
    """The check passed (another program filled the disk after it): no half file either."""
    with pytest.raises(ModelSpaceError, match="filled up while writing") as err:
        quantize_model(read_entry(f32_model), "Q8_0", tiny_tmpfs,
                       free_space=lambda directory: 1 << 40)
    assert err.value.exit_code == 74
    assert list(tiny_tmpfs.iterdir()) == []


def test_a_real_ctrl_c_leaves_only_the_model_it_started_from(tmp_path: Path) -> None:
    """SIGINT to `runa models quantize` while llama.cpp writes: exit 130, nothing half
    written beside the source."""
    env = isolated_env(tmp_path)
    models = Paths.for_stack(env["RUNA_STACK"], env).models[0]
    source = write_tiny_gguf(tmp_path / "big.gguf", n_embd=1024, n_ff=4096,
                             n_layer=8)  # ~400 MB of F32: seconds to quantize
    assert runa("models", "add", str(source), "--name", "big", env=env).returncode == 0
    before = sorted(p.name for p in models.iterdir())
    child = subprocess.Popen([sys.executable, "-m", "runa", "models", "quantize", "big",
                              "Q8_0"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stderr is not None
        started = child.stderr.readline()  # "quantizing big to Q8_0 (N tensors)"
        assert "quantizing big" in started, started
        child.send_signal(signal.SIGINT)
        assert child.wait(60) == 130
    finally:
        child.kill()
        child.wait()
    assert sorted(p.name for p in models.iterdir()) == before
