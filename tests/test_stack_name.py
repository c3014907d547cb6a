"""A stack name becomes file names (bus segments, cgroups, the runtime directory): checked
before any command runs, with a usage error that names the allowed form (issue 15)."""

from __future__ import annotations

import pytest
from support import runa


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "-x", "x" * 65, "é"])
def test_a_bad_stack_name_is_a_usage_error(runa_env: dict[str, str], name: str) -> None:
    for how in ([f"--stack={name}"], []):
        env = runa_env if how else {**runa_env, "RUNA_STACK": name}
        for command in (["status"], ["up", "--detach"], ["bus", "get", "k"]):
            result = runa(*how, *command, env=env)
            assert result.returncode == 64, (how, command, result.stderr)
            source = "--stack" if how else "RUNA_STACK"
            assert f"{source} {name!r} is not a stack name" in result.stderr
            assert "letters, digits, '_', '.' or '-'" in result.stderr
            assert "Traceback" not in result.stderr



def test_a_good_stack_name_is_used_as_given(runa_env: dict[str, str]) -> None:
    for name in ("u1000", "shared", "my-stack.2", "x" * 64):
        result = runa("--stack", name, "bus", "get", "k", env=runa_env)
        assert result.returncode == 69 and f"the main bus of stack {name} does not exist" in \
            result.stderr, result.stderr
