"""The packaged tier-2 weights are what tools/build_tier2.py builds from the tune halves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_build_script_rebuilds_the_packaged_weights_byte_for_byte(minilm_gguf: Path
                                                                       ) -> None:
    """No embedding cache: every window is embedded again, as on a fresh machine."""
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
