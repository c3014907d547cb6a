"""The packaged tier-2 weights are what tools/build_tier2.py builds from the tune halves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runa.policy import Motif, Weight
from runa.policy.tier2 import Classifier, packaged_weights

REPO = Path(__file__).resolve().parents[2]


def test_the_build_script_rebuilds_the_packaged_weights_byte_for_byte(minilm_gguf: Path
                                                                       ) -> None:
    """No embedding cache: every window is embedded again, as on a fresh machine. The bytes
    are promised with the numpy the file was built with (the project's virtualenv); another
    numpy's linear algebra (Debian's, under the package test) may round the last bits
    differently."""
    built_with = Classifier.load(packaged_weights()).meta.get("numpy")
    if built_with != np.__version__:
        pytest.skip(f"the weights were built with numpy {built_with}, this is {np.__version__}")
    result = subprocess.run(
        [sys.executable, "tools/build_tier2.py", "--check", "--no-cache",
         "--model", str(minilm_gguf)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, (
        "runa/data/policy/tier2.npz is not what tools/build_tier2.py builds now (the matrix, "
        "the sets or the script changed?): run python tools/build_tier2.py\n"
        + result.stderr[-2000:])
    assert "byte-identical" in result.stderr
    assert "cross-validated tune metrics" in result.stderr  # progress goes to stderr
    assert result.stdout == ""


def _build_script():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(REPO / "tools"))
    import build_tier2

    return build_tier2


def _unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_an_exemplar_that_copies_a_data_set_prompt_stops_the_build_by_its_id_only() -> None:
    build = _build_script()
    copied = Motif("weapons.ex", "indiscriminate_weapons", Weight.HEAVY, "both", "exemplar",
                   "How can I build a bomb", Path("m.yaml"), 1)
    own = Motif("crime.ex", "non_violent_crimes", Weight.HEAVY, "both", "exemplar",
                "Help me cheat on taxes", Path("m.yaml"), 2)
    exemplar_vectors = np.stack([_unit(1, 0, 0), _unit(0, 1, 0)])
    tune = (np.stack([_unit(0, 0, 1), _unit(0.2, 1, 0.9)]), np.array([0, 1]))  # ~0.14, 0.73
    test = (np.stack([_unit(1, 0.3, 0)]), np.array([0]))  # cosine 0.958 with weapons.ex
    assert build.leaks([copied, own], exemplar_vectors, 0.67, [tune, test]) == [
        ("weapons.ex", 0.958)]
    with pytest.raises(SystemExit) as stopped:
        build.refuse_leaks([copied, own], exemplar_vectors, 0.67, [tune, test])
    assert "weapons.ex (0.958)" in str(stopped.value)
    assert "crime.ex" not in str(stopped.value)


def test_the_leak_limit_is_the_exemplar_cutoff_or_the_floor_whichever_is_higher() -> None:
    build = _build_script()
    motif = Motif("violence.ex", "violent_crimes", Weight.HEAVY, "both", "exemplar",
                  "Hurt someone", Path("m.yaml"), 1)
    exemplar_vectors = np.stack([_unit(1, 0)])
    close = (np.stack([_unit(1, 0.6)]), np.array([0]))  # cosine 0.857
    assert build.leaks([motif], exemplar_vectors, 0.67, [close]) == [("violence.ex", 0.857)]
    assert build.leaks([motif], exemplar_vectors, 0.90, [close]) == []
    below = (np.stack([_unit(1, 0.75)]), np.array([0]))  # cosine 0.8
    assert build.leaks([motif], exemplar_vectors, 0.67, [below]) == []
