"""``runa recall``'s numeric options: a value out of range is a usage error naming the range.

No model and no topic are needed: the options are checked before anything is opened, so a
person learns what is wrong with the command line first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import isolated_env, runa

CASES = [
    (["--min-similarity", "nan"], "--min-similarity must be a number from -1 to 1, not nan"),
    (["--min-similarity", "inf"], "--min-similarity must be a number from -1 to 1, not inf"),
    (["--min-similarity", "1.01"], "--min-similarity must be a number from -1 to 1, not 1.01"),
    (["--min-similarity", "-3"], "--min-similarity must be a number from -1 to 1, not -3"),
    (["--complete", "--sieve", "2"], "--sieve must be a number from -1 to 1, not 2"),
    (["--complete", "--sieve", "nan"], "--sieve must be a number from -1 to 1, not nan"),
    (["--timeout", "-1"], "--timeout -1.0: must be from 0.1 to 86400 seconds"),
    (["--complete", "--timeout", "nan"], "--timeout nan: must be from 0.1 to 86400 seconds"),
    (["--timeout", "1e300"], "--timeout 1e+300: must be from 0.1 to 86400 seconds"),
    (["--k", "0"], "--k must be a whole number from 1 to 1000, not 0"),
]


@pytest.mark.parametrize(("flags", "message"), CASES, ids=[" ".join(f) for f, _ in CASES])
def test_a_number_out_of_range_is_a_usage_error(tmp_path: Path, flags: list[str],
                                                message: str) -> None:
    done = runa("recall", "how do I reset my password", "--topic", "notes", *flags,
                env=isolated_env(tmp_path))
    assert done.returncode == 64, done.stderr
    assert done.stderr == f"runa recall: {message}\n"
