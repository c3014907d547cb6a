"""``runa secret`` and the vault line of ``runa status``, as a person uses them: values from
standard input, never the command line; the broker (in the test) and a fake coven behind it."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_coven import FakeVault
from secret_stack import SecretStack, secret_stack
from support import runa, wait_for

VALUE = b"s3cret-VALUE\x00\xff\n"


@pytest.fixture
def stack(runa_env: dict[str, str]) -> Iterator[SecretStack]:
    with secret_stack(runa_env) as made:
        yield made


def test_set_reads_the_value_from_stdin_never_argv_and_get_gives_it_back_exactly(
        stack: SecretStack) -> None:
    stack.start_coven(FakeVault())
    with stack.broker_running():
        setting = subprocess.Popen([sys.executable, "-m", "runa", "secret", "set", "api.key"],
                                   env=stack.env, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            proc = Path(f"/proc/{setting.pid}/cmdline")
            cmdline = wait_for(lambda: b"runa" in proc.read_bytes() and proc.read_bytes(), 10,
                               "runa secret set to be executed")
            assert isinstance(cmdline, bytes)
            assert cmdline.split(b"\0")[-3:-1] == [b"set", b"api.key"]
            out, err = setting.communicate(VALUE, timeout=30)
        finally:
            setting.kill()
        assert setting.returncode == 0, err
        assert out.decode().strip() == f"stored api.key ({len(VALUE)} bytes)"
        asked = stack.asked.get(timeout=5)
        assert (asked["op"], asked["for"], asked["value"]) == ("set", "person", VALUE)
        got = subprocess.run([sys.executable, "-m", "runa", "secret", "get", "api.key"],
                             env=stack.env, capture_output=True, timeout=30)
        assert (got.returncode, got.stdout) == (0, VALUE)  # byte for byte, nothing added
        listed = runa("secret", "list", "--json", env=stack.env)
        assert '"name": "api.key"' in listed.stdout and "VALUE" not in listed.stdout


def test_a_value_on_the_command_line_is_refused_without_being_repeated(
        stack: SecretStack) -> None:
    result = runa("secret", "set", "api.key", "hunter2-VALUE", env=stack.env)
    assert result.returncode == 64
    assert "never taken from the command line" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


@pytest.mark.parametrize("name", ["API.key", "a" * 65])
def test_a_bad_name_is_a_usage_error(stack: SecretStack, name: str) -> None:
    result = runa("secret", "get", name, env=stack.env)
    assert result.returncode == 64
    assert "runa secret get: secret name" in result.stderr


def test_a_locked_vault_says_how_to_unlock_and_status_shows_it(stack: SecretStack) -> None:
    stack.start_coven(FakeVault(locked=True, secrets={"api.key": b"x"}))
    with stack.broker_running():
        result = runa("secret", "get", "api.key", env=stack.env)
        assert result.returncode == 69
        assert "locked" in result.stderr and "runa secret unlock" in result.stderr
        assert result.stdout == ""
        status = runa("status", env=stack.env)
        assert "vault: locked (passphrase); run 'runa secret unlock'" in status.stdout


def test_coven_down_is_named_and_status_stays_quick(stack: SecretStack) -> None:
    with stack.broker_running():
        result = runa("secret", "list", env=stack.env)
        assert result.returncode == 69
        assert "runa secret list: coven is not running" in result.stderr
        begun = time.monotonic()
        status = runa("status", env=stack.env)
        took = time.monotonic() - begun
        assert "vault: unknown (coven is not running" in status.stdout
        assert took < 5  # python's start-up and the config; no wait for coven


def test_without_gilgul_the_broker_is_named(stack: SecretStack) -> None:
    result = runa("secret", "status", env=stack.env)
    assert result.returncode == 69
    assert "gilgul's secrets broker is not running" in result.stderr


def test_unlocked_vault_in_status_and_secret_status(stack: SecretStack) -> None:
    stack.start_coven(FakeVault(secrets={"api.key": b"x", "b.key": b"y"}))
    with stack.broker_running():
        assert "vault: unlocked (key file, 2 secrets)" in runa("status", env=stack.env).stdout
        result = runa("secret", "status", env=stack.env)
        assert (result.returncode, result.stdout) == (
            0, "vault: unlocked (key file, 2 secrets)\n")


def test_a_value_too_large_for_the_bus_is_refused_saying_which_setting(
        stack: SecretStack) -> None:
    stack.start_coven(FakeVault())
    with stack.broker_running():
        result = subprocess.run([sys.executable, "-m", "runa", "secret", "set", "big"],
                                env=stack.env, input=b"v" * 40_000, capture_output=True,
                                timeout=30)
    assert result.returncode == 64
    assert b"does not fit on the main bus" in result.stderr
    assert b"bus.envelope_max_bytes" in result.stderr


def test_under_runa_up_the_supervisor_brokers_and_hands_coven_s_queue_to_no_stranger(
        runa_env: dict[str, str]) -> None:
    """The broker runs in the supervisor's process: it answers with no gilgul daemon, and a
    process that is not the supervisor's coven child gets nothing for holding 'coven'."""
    off = Path(runa_env["RUNA_SYSCONFDIR"]) / "components.d/20-splinfer-off.toml"
    # The keeper alone (quick), and no coven of the stack's own: the stranger takes its queue.
    off.write_text("[components.splinfer]\nenabled = false\n"
                   "[components.coven]\nenabled = false\n")
    up = runa("up", "--detach", env=runa_env)
    assert up.returncode == 0, up.stderr
    try:
        result = runa("secret", "status", env=runa_env)
        assert result.returncode == 69
        assert "runa secret status: coven is not running" in result.stderr
        with secret_stack(runa_env) as stack:
            stranger = stack.start_coven(FakeVault())
            result = subprocess.run([sys.executable, "-m", "runa", "secret", "set", "x"],
                                    env=runa_env, input=b"stolen-VALUE", capture_output=True,
                                    timeout=30)
            assert result.returncode == 69
            assert f"held by pid {stranger} (person), not by coven".encode() in result.stderr
            assert stack.asked.empty()
    finally:
        runa("down", env=runa_env)


def test_on_a_terminal_the_value_is_typed_twice_and_never_shown(stack: SecretStack) -> None:
    import pexpect

    stack.start_coven(FakeVault())
    with stack.broker_running():
        typing = pexpect.spawn(sys.executable, ["-m", "runa", "secret", "set", "api.key"],
                               env=stack.env, timeout=20)
        typing.expect(b"value of api.key: ")
        typing.sendline(b"typed-VALUE")
        typing.expect(re.escape(b"value of api.key (again): "))
        typing.sendline(b"typed-VALUE")
        typing.expect(pexpect.EOF)
        typing.close()
        shown = typing.before
        assert typing.exitstatus == 0, shown
        assert b"stored api.key (11 bytes)" in shown and b"typed-VALUE" not in shown
        assert stack.asked.get(timeout=5)["value"] == b"typed-VALUE"

        shown_back = pexpect.run(f"{sys.executable} -m runa secret get api.key",
                                 env=stack.env, timeout=20)
        assert shown_back == b"typed-VALUE\r\n"  # on a terminal, a newline after it

        mistyped = pexpect.spawn(sys.executable, ["-m", "runa", "secret", "set", "b.key"],
                                 env=stack.env, timeout=20)
        mistyped.expect(b"value of b.key: ")
        mistyped.sendline(b"one-VALUE")
        mistyped.expect(re.escape(b"(again): "))
        mistyped.sendline(b"other-VALUE")
        mistyped.expect(pexpect.EOF)
        mistyped.close()
        assert mistyped.exitstatus == 64
        assert b"differ; nothing was stored" in mistyped.before
        assert b"VALUE" not in mistyped.before


def test_rotate_sends_the_new_passphrase_as_a_value_never_a_field(stack: SecretStack) -> None:
    stack.start_coven(FakeVault())
    with stack.broker_running():
        plain = runa("secret", "rotate", env=stack.env)
        assert plain.returncode == 0, plain.stderr
        to_passphrase = subprocess.run(
            [sys.executable, "-m", "runa", "secret", "rotate", "--passphrase"],
            env=stack.env, input=b"correct horse", capture_output=True, timeout=30)
        assert to_passphrase.returncode == 0, to_passphrase.stderr
    asked = [stack.asked.get(timeout=5) for _ in range(3)]
    rotations = [(a.get("mode"), a["value"]) for a in asked if a["op"] == "rotate"]
    assert rotations == [(None, b""), ("passphrase", b"correct horse")]
    assert all(b"correct horse" not in str(k).encode() for a in asked for k in a.items()
               if k[0] != "value")


def test_create_makes_a_random_secret_once_and_never_prints_it(stack: SecretStack) -> None:
    stack.start_coven(FakeVault(secrets={"api.key": VALUE}))
    with stack.broker_running():
        made = runa("secret", "create", "api.token", "--size", "48", env=stack.env)
        assert (made.returncode, made.stdout.strip()) == (0, "created api.token (48 random "
                                                             "bytes)")
        asked = stack.asked.get(timeout=5)
        assert (asked["op"], asked["name"], asked["size"], asked["for"]) == \
            ("create", "api.token", 48, "person")
        got = subprocess.run([sys.executable, "-m", "runa", "secret", "get", "api.token"],
                             env=stack.env, capture_output=True, timeout=30)
        assert got.returncode == 0 and len(got.stdout) == 48
        assert got.stdout.hex() not in made.stdout + made.stderr
        kept = runa("secret", "create", "api.key", env=stack.env)
        assert (kept.returncode, kept.stdout.strip()) == (0, "kept api.key: it exists "
                                                             f"({len(VALUE)} bytes)")
    small = runa("secret", "create", "api.other", "--size", "8", env=stack.env)
    assert small.returncode == 64 and "'size' must be 16 to 4096 bytes" in small.stderr
