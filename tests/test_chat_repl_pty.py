"""``runa chat`` in a real terminal (a pty, through pexpect) against a real stack.

The stack serves the tiny synthetic model with its end-of-turn token silenced, so with
``top_k`` below the vocabulary an answer never ends by itself: a long answer is really
running when Ctrl-C arrives, whatever the machine's speed.
"""

from __future__ import annotations

import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import gguf
import pexpect
import pytest
from support import isolated_env, remove_segments, runa, wait_for

from runa.testing.tiny_gguf import IM_END_ID, write_tiny_gguf

CONTEXT = {"RUNA_SPLINFER_CTX_SIZE": "4096", "RUNA_SPLINFER_THREADS": "2",
           "RUNA_SPLINFER_BATCH_SIZE": "512"}
#: prompt-toolkit turns bracketed paste off as it hands a message over (then the answer).
SENT = "\x1b[?2004l"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")

def endless_model(path: Path) -> Path:
    """The tiny model whose end-of-turn logit is 0, below every token a top-k of 20 keeps."""
    write_tiny_gguf(path, context_length=4096)
    reader = gguf.GGUFReader(path, "r+")
    output = next(t for t in reader.tensors if t.name == "output.weight")
    output.data[IM_END_ID] = 0.0
    del reader  # flushes the memory map
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("chat")
    model = endless_model(root / "endless.gguf")
    env = {**isolated_env(root), **CONTEXT, "RUNA_SPLINFER_MODEL": str(model),
           "RUNA_LOG_TARGET": "stderr", "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm"}
    up = runa("up", "--detach", env=env)
    assert up.returncode == 0, up.stderr + (root / "run/runa/supervisor.log").read_text()
    env["_LOG"] = str(root / "run/runa/supervisor.log")
    env["_STATE"] = str(root / "home/.local/state/runa")
    yield env
    runa("down", env=env)
    remove_segments(env)


class Terminal:
    """``runa chat`` on a pty, in conversation ``conversation`` (its id is in the prompt)."""

    def __init__(self, env: dict[str, str], conversation: str, *args: str) -> None:
        self.child = pexpect.spawn(
            sys.executable, ["-m", "runa", "chat", "--conversation", conversation, *args],
            env=env, encoding="utf-8", timeout=15, dimensions=(40, 200))
        self.conversation = conversation
        self.wait_prompt()

    def wait_prompt(self, persona: str = r"[\w.-]+") -> str:
        """Wait for "<persona> <conversation>>"; what came before it, as a person sees it.

        Escape sequences just before the prompt are matched with it, so "\x1b[0m" is
        not read as part of the persona's name.
        """
        self.child.expect(rf"(?:{ANSI.pattern})*{persona} {re.escape(self.conversation)}>")
        return ANSI.sub("", self.child.before).strip()

    def ask(self, line: str) -> str:
        """Type ``line``; the answer shown before the next prompt.

        prompt-toolkit redraws the prompt and the line as it is typed; only Enter ends it
        with a newline, so the answer is what comes between that and the next prompt.
        """
        self.child.sendline(line)
        self.child.expect_exact(line)
        self.child.expect_exact("\n")
        return self.wait_prompt()

    def leave(self) -> int:
        """Ctrl-D; the exit status."""
        self.child.sendeof()
        self.child.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus


def test_a_question_is_answered_and_ctrl_d_leaves_with_zero(stack) -> None:
    term = Terminal(stack, "pty-a", "--new", "--temp", "0", "-n", "12")
    assert re.search(r"\w{3}", term.ask("Tell me about the sea."))
    assert term.leave() == 0
    history = Path(stack["_STATE"]) / "chat_history"
    assert "Tell me about the sea." in history.read_text()
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    remembered = Path(stack["_STATE"]) / f"chat_conversation.{stack['RUNA_STACK']}"
    assert remembered.read_text() == "pty-a\n"


def test_ctrl_c_stops_a_long_answer_and_the_repl_goes_on(stack) -> None:
    term = Terminal(stack, "pty-b", "--new", "--temp", "0.7", "--top-k", "20", "-n", "-1")
    child = term.child
    child.sendline("a long story please")
    child.expect_exact("a long story please")
    # The answer is streaming: prompt-toolkit has left the terminal (its redraws are full of
    # escape sequences, the answer has none), so Ctrl-C is now a signal, not a key.
    child.expect(r"[^\x1b]{40}")
    child.sendintr()
    child.expect_exact("[answer stopped]", timeout=10)
    term.wait_prompt()
    wait_for(lambda: "request cancelled by its client" in Path(stack["_LOG"]).read_text(), 10,
             "splinfer to log the cancel")
    # Ctrl-C at the prompt drops the typed line and leaves the REPL running.
    child.send("never sent")
    child.send("\x03")
    child.expect_exact("\n")
    term.wait_prompt()
    assert term.ask("/params n_predict=6") == \
        "this session sends: temp=0.7, top_k=20, n_predict=6"
    assert re.search(r"\w", term.ask("and now a short one"))
    assert term.leave() == 0


def test_an_unknown_persona_lists_the_known_ones(stack) -> None:
    term = Terminal(stack, "pty-c", "--new")
    shown = term.ask("/persona nosuch")
    assert "no persona 'nosuch'; known:" in shown
    assert re.search(r"^\* \S+", shown, re.MULTILINE), shown  # the current one, marked
    assert term.leave() == 0


def test_switching_persona_in_the_terminal(stack) -> None:
    term = Terminal(stack, "pty-d", "--new", "--temp", "0", "-n", "6")
    others = re.findall(r"^  (\S+)", term.ask("/persona"), re.MULTILINE)
    assert others
    assert re.search(r"\w", term.ask("hello"))
    term.child.sendline(f"/persona {others[0]}")
    term.child.expect_exact("re-read once")
    term.wait_prompt(persona=re.escape(others[0]))
    assert re.search(r"\w", term.ask("and now?"))
    history = term.ask("/history")
    assert history.startswith("you: hello\nassistant: ") and "\nyou: and now?\n" in history
    assert term.leave() == 0
    # Resumed, the conversation comes back with the persona splinfer kept for it.
    term = Terminal(stack, "pty-d")
    assert "resuming conversation pty-d (4 messages" in term.child.before
    assert ANSI.sub("", term.child.after) == f"{others[0]} pty-d>"
    term.child.sendline("/quit")
    term.child.expect(pexpect.EOF)


def piped(env: dict[str, str], *args: str, lines: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runa", "chat", *args], input=lines, env=env,
                          capture_output=True, text=True, timeout=30)


def test_piped_questions_are_answered_one_per_line(stack) -> None:
    result = piped(stack, "--new", "--conversation", "pty-e", "--temp", "0", "-n", "5",
                   lines="one\n\ntwo\n/history\n")
    assert result.returncode == 0, result.stderr
    answers, history = result.stdout.split("you: one\n")
    assert answers.strip() and answers.endswith("\n")
    assert "\nyou: two\n" in history
    assert result.stderr == "new conversation pty-e\n"  # notices only, on stderr


def test_end_of_input_at_once_resumes_and_exits_zero_promptly(stack) -> None:
    piped(stack, "--new", "--conversation", "pty-f", "-n", "3", lines="hi\n")
    started = time.monotonic()
    result = piped(stack, "--conversation", "pty-f")  # `make run < /dev/null` ends like this
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and time.monotonic() - started < 10
    assert result.stderr.startswith("resuming conversation pty-f (2 messages")


def test_an_unknown_conversation_id_is_refused_with_the_way_out(stack) -> None:
    result = subprocess.run([sys.executable, "-m", "runa", "chat", "--conversation", "nosuch"],
                            stdin=subprocess.DEVNULL, env=stack, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 66
    assert "runa chat --new --conversation nosuch" in result.stderr


# -- typing ------------------------------------------------------------------------------------

def test_alt_enter_makes_one_message_of_three_lines(stack) -> None:
    term = Terminal(stack, "pty-ml", "--new", "--temp", "0", "-n", "4")
    term.child.send("line one\x1b\rline two\x1b\rline three\r")
    term.child.expect_exact(SENT)
    term.wait_prompt()
    assert "you: line one\nline two\nline three\nassistant: " in term.ask("/history")
    assert term.ask("/multiline").startswith("multi-line on: Enter starts a new line")
    term.child.send("first\rsecond\x1b\r")
    term.child.expect_exact(SENT)
    term.wait_prompt()
    term.child.send("/multiline\x1b\r")
    term.child.expect_exact("multi-line off: Enter sends")
    term.wait_prompt()
    assert "you: first\nsecond\nassistant: " in term.ask("/history")
    assert term.leave() == 0


def test_typing_during_an_answer_waits_at_the_next_prompt(stack) -> None:
    term = Terminal(stack, "pty-ta", "--new", "--temp", "0.7", "--top-k", "20", "-n", "-1")
    child = term.child
    child.sendline("a long story please")
    child.expect_exact("a long story please")
    child.expect(r"[^\x1b]{40}")  # the answer is streaming
    child.send("typed ahead\r")
    time.sleep(0.5)  # the keys reach the terminal while the answer still streams
    child.sendintr()
    child.expect_exact("[answer stopped]", timeout=10)
    answer = ANSI.sub("", child.before)
    assert "typed ahead" not in answer  # not echoed into the answer
    term.wait_prompt()
    child.expect_exact("typed ahead")  # shown at the prompt, not sent
    child.send(" and more\r")
    child.expect_exact(SENT)
    child.expect(r"[^\x1b]{20}")  # its answer streams (endless: stopped here)
    child.sendintr()
    child.expect_exact("[answer stopped]", timeout=10)
    term.wait_prompt()
    history = term.ask("/history")
    asked = re.findall(r"^you: (.*)$", history, re.MULTILINE)
    assert asked == ["a long story please", "typed ahead and more"], history
    assert term.leave() == 0


# -- conversations -----------------------------------------------------------------------------

def test_conversations_lists_them_and_resume_takes_a_prefix(stack) -> None:
    piped(stack, "--new", "--conversation", "cv-12345", "-n", "3",
          lines="What is a harbour?\n")
    child = pexpect.spawn(sys.executable, ["-m", "runa", "chat", "--new"], env=stack,
                          encoding="utf-8", timeout=15, dimensions=(40, 200))
    child.expect(r"new conversation (\w+)")
    child.expect_exact(">")
    child.sendline("/conversations")
    child.expect_exact("/resume ID goes on with one")
    listing = ANSI.sub("", child.before)
    row = next(line for line in listing.splitlines() if line.startswith("cv-12345"))
    assert "default" in row and "What is a harbour?" in row
    child.expect_exact(">")
    term = Terminal.__new__(Terminal)
    term.child, term.conversation = child, "cv-12345"
    child.sendline("/resume cv-123")
    child.expect_exact("resuming conversation cv-12345 (2 messages")
    term.wait_prompt()
    assert term.ask("/history").startswith("you: What is a harbour?\nassistant: ")
    assert term.leave() == 0


def test_save_writes_both_sides_as_markdown(stack, tmp_path: Path) -> None:
    term = Terminal(stack, "pty-sv", "--new", "--temp", "0", "-n", "6")
    answer = term.ask("Tell me about the sea.")
    target = tmp_path / "chat.md"
    assert term.ask(f"/save {target}") == f"saved 2 messages to {target}"
    text = target.read_text()
    assert text.startswith("# Conversation pty-sv\n")
    assert "**You:**\n\nTell me about the sea.\n" in text
    assert "**Runa (default):**\n\n" in text
    assert answer.split()[0] in text
    assert term.leave() == 0


# -- settings ----------------------------------------------------------------------------------

def test_the_persona_stays_across_new(stack) -> None:
    piped(stack, "--new", "--conversation", "pty-pn", "--persona", "tutor", "-n", "3",
          lines="hi\n")
    term = Terminal(stack, "pty-pn", "--temp", "0", "-n", "3")  # resumed: tutor, not chosen
    assert ANSI.sub("", term.child.after) == "tutor pty-pn>"
    term.child.sendline("/new")
    term.child.expect(r"new conversation (\w{32})")
    term.conversation = term.child.match.group(1)[:8]
    term.wait_prompt(persona="tutor")
    term.ask("hello again")  # answered by the prompt's persona, not splinfer's default
    assert ANSI.sub("", term.child.after) == f"tutor {term.conversation}>"
    assert re.search(r"^\* tutor ", term.ask("/persona"), re.MULTILINE)
    assert term.leave() == 0


def test_params_show_the_personas_values_and_where_they_come_from(stack) -> None:
    term = Terminal(stack, "pty-pp", "--new", "--persona", "tutor", "--top-k", "7")
    shown = term.ask("/params")
    assert re.search(r"^  temp +0\.6 +persona tutor$", shown, re.MULTILINE), shown
    assert re.search(r"^  top_k +7 +this session", shown, re.MULTILINE), shown
    assert re.search(r"^  min_p +0\.05 +llama\.cpp's default$", shown, re.MULTILINE), shown
    assert term.leave() == 0


def test_a_long_message_is_announced_while_it_is_read(stack) -> None:
    term = Terminal(stack, "pty-rd", "--new", "--temp", "0", "-n", "2")
    message = " ".join(f"word{i}" for i in range(300))  # far over 256 tokens
    term.child.send(message + "\r")
    term.child.expect(r"reading your message \((\d+) tokens\)…", timeout=30)
    assert int(term.child.match.group(1)) >= 256
    term.wait_prompt()
    assert term.leave() == 0


def test_a_history_longer_than_the_screen_goes_through_the_pager(stack) -> None:
    piped(stack, "--new", "--conversation", "pty-pg", "-n", "2",
          lines="".join(f"question {n}\n" for n in range(6)))
    child = pexpect.spawn(sys.executable, ["-m", "runa", "chat", "--conversation", "pty-pg"],
                          env={**stack, "PAGER": "sed s/^/paged:/"}, encoding="utf-8",
                          timeout=15, dimensions=(8, 200))
    child.expect_exact("pty-pg>")
    child.sendline("/history")
    child.expect_exact("paged:you: question 5")
    child.expect_exact("pty-pg>")
    child.sendeof()
    child.expect(pexpect.EOF)
