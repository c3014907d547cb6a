"""Finding the kept conversations from the command line: list, export, delete, id prefixes.

A real stack (``runa up``) serving the tiny synthetic model; states are saved after a
short idle time so that ``--delete`` has a state file to remove.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import isolated_env, runa, tiny_model_stack, wait_for

CONTEXT = {"RUNA_SPLINFER_CTX_SIZE": "2048", "RUNA_SPLINFER_THREADS": "2",
           "RUNA_SPLINFER_BATCH_SIZE": "512", "RUNA_SPLINFER_STATE_SAVE_IDLE_S": "0.2",
           "RUNA_LOG_TARGET": "stderr"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("find")
    with tiny_model_stack(root, CONTEXT) as (env, up):
        env["_UP"] = up.stdout
        env["_CONVERSATIONS"] = str(root / "home/.local/state/runa/conversations")
        env["_STATE"] = str(root / "home/.local/state/runa")
        yield env


def chat(env: dict[str, str], *args: str, lines: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runa", "chat", *args], input=lines, env=env,
                          capture_output=True, text=True, timeout=60)


def test_list_json_shows_what_identifies_each_conversation(stack) -> None:
    assert chat(stack, "--new", "--conversation", "list-alpha", "-n", "4",
                lines="What is a lighthouse?\nAnd a harbour?\n").returncode == 0
    result = runa("chat", "--list", "--json", env=stack)
    assert result.returncode == 0, result.stderr
    listed = {c["id"]: c for c in json.loads(result.stdout)["conversations"]}
    alpha = listed["list-alpha"]
    assert alpha["persona"] == "default" and alpha["messages"] == 4
    assert alpha["first"] == "What is a lighthouse?"
    assert alpha["updated"] >= alpha["created"] > 0
    assert "state_bytes" in alpha
    table = runa("chat", "--list", env=stack)
    assert table.returncode == 0
    assert "list-alp" in table.stdout and "What is a lighthouse?" in table.stdout
    assert "saved model state:" in table.stdout


def test_delete_removes_the_history_and_the_saved_state(stack) -> None:
    assert chat(stack, "--new", "--conversation", "del-me-1", "-n", "4",
                lines="Remember this.\n").returncode == 0
    folder = Path(stack["_CONVERSATIONS"])
    wait_for(lambda: (folder / "del-me-1.state").exists(), 30, "the idle state to be saved")
    assert (folder / "del-me-1.json").exists()
    result = runa("chat", "--delete", "del-me", env=stack)  # a unique start of the id
    assert result.returncode == 0, result.stderr
    assert "deleted conversation del-me-1" in result.stdout
    assert not (folder / "del-me-1.json").exists()
    assert not (folder / "del-me-1.state").exists()
    listed = json.loads(runa("chat", "--list", "--json", env=stack).stdout)["conversations"]
    assert "del-me-1" not in [c["id"] for c in listed]
    again = runa("chat", "--delete", "del-me-1", env=stack)
    assert again.returncode == 66 and "no conversation starts with 'del-me-1'" in again.stderr


def test_an_ambiguous_prefix_lists_the_candidates(stack) -> None:
    for name in ("twin-a", "twin-b"):
        assert chat(stack, "--new", "--conversation", name, "-n", "2",
                    lines="hi\n").returncode == 0
    result = runa("chat", "--export", "twin", env=stack)
    assert result.returncode == 64
    assert "'twin' starts 2 conversations (" in result.stderr
    assert "twin-a" in result.stderr and "twin-b" in result.stderr
    assert "Traceback" not in result.stderr


def test_export_prints_both_sides_as_markdown_or_json(stack) -> None:
    assert chat(stack, "--new", "--conversation", "export-1", "-n", "4",
                lines="Name a colour.\n").returncode == 0
    markdown = runa("chat", "--export", "export-", env=stack)
    assert markdown.returncode == 0, markdown.stderr
    assert markdown.stdout.startswith("# Conversation export-1\n")
    assert "**You:**\n\nName a colour.\n" in markdown.stdout
    assert "**Runa (default):**" in markdown.stdout
    data = json.loads(runa("chat", "--export", "export-1", "--format", "json",
                           env=stack).stdout)
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]


def test_conversation_accepts_a_unique_prefix(stack) -> None:
    assert chat(stack, "--new", "--conversation", "prefix-resume-1", "-n", "2",
                lines="hi\n").returncode == 0
    result = chat(stack, "--conversation", "prefix-res")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("resuming conversation prefix-resume-1 (2 messages")


def test_piped_chat_is_not_what_the_next_chat_resumes(stack) -> None:
    remembered = Path(stack["_STATE"]) / f"chat_conversation.{stack['RUNA_STACK']}"
    remembered.write_text("prefix-resume-1\n")  # what the person's last terminal chat was
    result = chat(stack, "-n", "2", lines="a scripted question\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("new conversation ")
    assert remembered.read_text() == "prefix-resume-1\n"


def test_status_says_how_much_state_is_kept(stack) -> None:
    assert chat(stack, "--new", "--conversation", "status-kept", "-n", "2",
                lines="hello\n").returncode == 0
    listed = json.loads(runa("chat", "--list", "--json", env=stack).stdout)
    kept = len(listed["conversations"]) + listed["omitted"]
    # Asked of splinfer, not counted in a directory: on the shared stack the files are the
    # service's, not under this person's state directory.
    elsewhere = {**stack, "XDG_STATE_HOME": str(Path(stack["_STATE"]).parent / "elsewhere")}
    for env in (stack, elsewhere):
        result = runa("status", env=env)
        assert result.returncode == 0, result.stdout
        assert f"kept: {kept} conversations, saved model state" in result.stdout
        assert "up to 1024 MiB, each dropped after 30 days unused" in result.stdout
    as_json = json.loads(runa("status", "--json", env=elsewhere).stdout)["kept"]
    assert as_json["conversations"] == kept
    assert as_json["state_max_bytes"] == 1024 << 20 and as_json["state_bytes"] >= 0


def test_status_without_the_inference_service_does_not_guess_what_is_kept(
        tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    (tmp_path / "home/.local/state/runa/conversations").mkdir(parents=True)
    (tmp_path / "home/.local/state/runa/conversations/old.json").write_text("{}")
    result = runa("status", env=env)
    assert result.returncode == 3
    assert "kept: unknown (the inference service is not running)" in result.stdout
    assert json.loads(runa("status", "--json", env=env).stdout)["kept"] is None


def test_up_ends_with_the_next_step(stack) -> None:
    assert stack["_UP"].rstrip().endswith(
        "next: 'runa chat' to talk with the model, 'runa down' to stop it")
