"""``runa chat`` without processes: the REPL driven through a fake splinfer and fake input.

The fake speaks docs/protocol.md's splinfer ops (chat, cancel, personas, history) the way
the daemon answers them, including its faults, so the REPL's logic is tested here and
tests/test_chat_repl_pty.py only has to show it works in a real terminal on a real stack.
"""

from __future__ import annotations

import io
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import runa

from runa.chat import commands
from runa.chat.commands import Command, Question
from runa.chat.files import ChatFiles
from runa.chat.params import ChatParamError, SessionParams
from runa.chat.repl import Repl
from runa.chat.session import ChatSession, Start, UnknownConversation, UnknownPersona
from runa.cli.main import main
from runa.client import ServiceFault
from runa.errors import UsageError
from runa.splinter import Envelope, Fault

PERSONAS = [{"name": "assistant", "description": "helpful and brief", "source": "packaged",
             "params": {"temp": 0.5, "top_k": 30}},
            {"name": "pirate", "description": "arr", "source": "~/.config/runa/personas"}]


def bad_schema(message: str) -> ServiceFault:
    return ServiceFault("splinfer", {"code": Fault.BAD_SCHEMA, "name": "BAD_SCHEMA",
                                     "message": message})


class FakeSplinfer:
    """Answers like splinfer: streamed chat, cancel, personas, history and their faults."""

    def __init__(self, *, modern: bool = True, pieces: tuple[str, ...] = ("Hel", "lo!")
                 ) -> None:
        self.modern = modern  # False: the splinfer of issue 5 (chat, cancel, status only)
        self.pieces = pieces
        self.requests: list[dict[str, Any]] = []
        self.conversations: dict[str, dict[str, Any]] = {}
        self.interrupt_next = False
        self.cancels = 0
        self.fault: ServiceFault | None = None

    def _reply(self, payload: dict[str, Any], eof: bool = False) -> Envelope:
        return Envelope(type="response", sender="splinfer", to="chat", payload=payload,
                        eof=eof or None)

    def request(self, payload: dict[str, Any], *, idle_timeout: float = 30.0,
                before_send: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                ) -> Iterator[Envelope]:
        if before_send is not None:
            payload = before_send(payload)
        self.requests.append(payload)
        op = payload["op"]
        if op != "chat":
            yield self._reply(self._one_shot(payload), eof=True)
            return
        if self.fault is not None:
            raise self.fault
        persona = payload.get("persona")
        if self.modern and persona is not None and persona not in self._names():
            raise bad_schema(f"unknown persona {persona!r}; known: {', '.join(self._names())}")
        conversation = self.conversations.setdefault(
            payload["conversation"], {"persona": persona or "assistant", "messages": []})
        conversation["persona"] = persona or conversation["persona"]
        for piece in self.pieces:
            yield self._reply({"text": piece})
            if self.interrupt_next:
                self.interrupt_next = False
                raise KeyboardInterrupt
        answer = "".join(self.pieces)
        conversation["messages"] += [{"role": "user", "content": payload["text"]},
                                     {"role": "assistant", "content": answer}]
        yield self._reply({"text": "", "finish_reason": "stop", "n_gen": 2,
                           "dropped_messages": 0, "conversation": payload["conversation"],
                           "persona": conversation["persona"]}, eof=True)

    def _names(self) -> list[str]:
        return [p["name"] for p in PERSONAS]

    def _one_shot(self, payload: dict[str, Any]) -> dict[str, Any]:
        op = payload["op"]
        if not self.modern:
            raise bad_schema(f"unknown op {op!r}; splinfer answers chat, cancel, status")
        if op == "personas":
            return {"personas": PERSONAS, "default": "assistant"}
        if op == "history":
            known = self.conversations.get(payload["conversation"])
            if known is None:
                raise bad_schema(f"unknown conversation {payload['conversation']!r}")
            return {"conversation": payload["conversation"], "persona": known["persona"],
                    "messages": [{"role": "system", "content": "be nice"},
                                 *known["messages"]]}
        raise AssertionError(f"unexpected op {op}")

    def call(self, payload: dict[str, Any], *, idle_timeout: float = 30.0) -> dict[str, Any]:
        return next(e for e in self.request(payload) if e.eof).payload

    def cancel(self, wait: float = 5.0) -> Envelope | None:
        self.cancels += 1
        return self._reply({"text": "", "finish_reason": "cancelled"}, eof=True)

    def chats(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["op"] == "chat"]


class Script:
    """Typed input: lines, or KeyboardInterrupt / EOFError to raise; then the end (EOF)."""

    def __init__(self, *items: str | type[BaseException]) -> None:
        self.items = list(items)
        self.prompts: list[str] = []

    def read(self, prompt: str, default: str = "") -> str:
        self.prompts.append(prompt)
        if not self.items:
            raise EOFError
        item = self.items.pop(0)
        if isinstance(item, str):
            return item
        raise item


class Run:
    """One REPL over a fake splinfer; ``out`` and ``notices`` hold what it printed."""

    def __init__(self, fake: FakeSplinfer | None = None, *, interactive: bool = True,
                 conversation: str = "conv-1", persona: str | None = None,
                 params: SessionParams | None = None) -> None:
        self.fake = fake or FakeSplinfer()
        self.remembered: list[str] = []
        ids = iter(f"conv-{n}" for n in range(2, 100))
        self.session = ChatSession(self.fake, conversation, persona=persona, params=params,
                                   new_id=lambda: next(ids), remember=self.remembered.append)
        self.out = io.StringIO()
        self.notices = self.out if interactive else io.StringIO()
        self.interactive = interactive

    def start(self, how: Start = Start.FRESH) -> list[str]:
        return self.session.start(how)

    def run(self, *items: str | type[BaseException]) -> tuple[int, Script]:
        script = Script(*items)
        status = Repl(self.session, script, out=self.out, notices=self.notices,
                      interactive=self.interactive).run()
        return status, script


# -- what a line is ----------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "parsed"), [
    ("hello there\n", Question("hello there")),
    ("   \n", None),
    ("/persona pirate", Command("persona", ("pirate",))),
    ("/PARAMS temp=0.5 top_k=3", Command("params", ("temp=0.5", "top_k=3"))),
    ("/exit", Command("quit")),
    ("/", Command("")),
    ("//etc/hosts is what?", Question("/etc/hosts is what?")),
])
def test_a_line_is_a_question_a_command_or_nothing(line: str, parsed: object) -> None:
    assert commands.parse(line) == parsed


# -- sampling settings -------------------------------------------------------------------------

def test_params_take_llama_cpp_names_and_typed_values() -> None:
    params = SessionParams({"temp": 0.2})
    notes = params.update(["top_k=5", "n_predict=100", "temperature=0.9"])
    assert params.payload() == {"temp": 0.9, "top_k": 5, "n_predict": 100}
    assert isinstance(params.payload()["top_k"], int)
    assert any("alias" in note and "'temp'" in note for note in notes)
    rows = {name: (value, source) for name, value, source in params.rows()}
    assert rows["temp"] == (0.9, "this session") and rows["top_p"] == (0.95,
                                                                         "llama.cpp's default")
    rows = {name: (value, source) for name, value, source in
            SessionParams().rows("tutor", {"temp": 0.6}, default_persona=True)}
    assert rows["temp"] == (0.6, "persona tutor (splinfer.persona in the config)")


def test_a_bad_param_is_refused_with_its_range_and_nothing_changes() -> None:
    params = SessionParams({"temp": 0.2})
    with pytest.raises(ChatParamError, match=r"top_p = .*1\.5.*0 to 1"):
        params.update(["temp=0.5", "top_p=1.5"])
    assert params.payload() == {"temp": 0.2}
    with pytest.raises(ChatParamError, match="did you mean 'top_k'"):
        params.update(["topk=3"])
    with pytest.raises(ChatParamError, match="fixed when the model is loaded"):
        params.update(["ctx_size=8192"])
    with pytest.raises(ChatParamError, match="name=value"):
        params.update(["temp"])
    params.update(["temp="])
    assert params.payload() == {}


# -- the person's files ------------------------------------------------------------------------

def test_history_file_is_private_and_the_conversation_is_remembered_per_stack(
        tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        files = ChatFiles(tmp_path / "state/runa", "u1000")
        history = files.ensure_history()
    finally:
        os.umask(old)
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert stat.S_IMODE(history.parent.stat().st_mode) == 0o700
    assert files.last_conversation() is None
    files.remember("abc-1")
    assert files.last_conversation() == "abc-1"
    assert ChatFiles(files.directory, "shared").last_conversation() is None
    files.conversation.write_text("not an id!\n")
    assert files.last_conversation() is None


def test_chat_files_live_in_the_persons_state_directory_even_for_the_shared_stack(
        tmp_path: Path) -> None:
    files = ChatFiles.for_person({"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "s")},
                                 "shared")
    assert files.history == tmp_path / "s/runa/chat_history"
    assert files.conversation == tmp_path / "s/runa/chat_conversation.shared"


# -- answering ---------------------------------------------------------------------------------

def test_an_answer_streams_and_carries_conversation_and_params() -> None:
    run = Run(params=SessionParams({"temp": 0.0}))
    run.start()
    status, script = run.run("hello")
    assert status == 0
    assert "Hello!\n" in run.out.getvalue()
    chat = run.fake.chats()[0]
    assert chat == {"op": "chat", "text": "hello", "conversation": "conv-1",
                    "params": {"temp": 0.0}}  # no persona: splinfer's default applies
    assert script.prompts[0] == "assistant conv-1> "
    assert run.remembered == ["conv-1"]


def test_ctrl_c_during_an_answer_cancels_it_and_the_repl_goes_on() -> None:
    run = Run()
    run.fake.interrupt_next = True
    status, _ = run.run("a long story", "next one")
    assert status == 0
    assert run.fake.cancels == 1
    out = run.out.getvalue()
    assert "Hel\n[answer stopped]\n" in out
    assert out.endswith("Hello!\n")  # the next question was answered in full
    assert len(run.fake.chats()) == 2


def test_ctrl_c_at_the_prompt_drops_the_line_and_ctrl_d_leaves_with_zero() -> None:
    run = Run()
    status, script = run.run(KeyboardInterrupt, KeyboardInterrupt, "hi")
    assert status == 0 and len(script.prompts) == 4  # three reads, then EOF
    assert run.fake.chats()[0]["text"] == "hi"
    assert Run().run("/quit", "never asked")[0] == 0


def test_piped_input_stops_at_the_first_failure_with_its_status() -> None:
    run = Run(interactive=False)
    run.fake.fault = bad_schema("top_p = 1.5 is not allowed; allowed: 0 to 1")
    status, _ = run.run("one", "two")
    assert status == 65
    assert "top_p = 1.5" in run.notices.getvalue()
    assert len(run.fake.chats()) == 1
    assert run.out.getvalue() == ""


def test_piped_ctrl_c_stops_the_answer_and_exits_130() -> None:
    run = Run(interactive=False)
    run.fake.interrupt_next = True
    assert run.run("one", "two")[0] == 130
    assert run.fake.cancels == 1 and len(run.fake.chats()) == 1


def test_a_fault_in_a_terminal_is_shown_and_the_repl_goes_on() -> None:
    run = Run()
    run.fake.fault = bad_schema("the prompt is 900 tokens; the context holds 512")
    status, _ = run.run("one")
    assert status == 0
    assert run.out.getvalue() == "runa chat: splinfer: the prompt is 900 tokens; the context " \
        "holds 512 (BAD_SCHEMA)\n"


def test_splinfer_failing_mid_answer_ends_the_line_before_the_error() -> None:
    class Failing(FakeSplinfer):
        def request(self, payload, *, idle_timeout=30.0,  # type: ignore[no-untyped-def]
                    before_send=None):
            yield self._reply({"text": "Hel"})
            raise ServiceFault("splinfer", {"code": Fault.INTERNAL_ERROR,
                                            "message": "decode failed"})

    run = Run(Failing())
    assert run.run("one")[0] == 0
    assert run.out.getvalue() == "Hel\nruna chat: splinfer: decode failed (INTERNAL_ERROR)\n"


# -- commands ----------------------------------------------------------------------------------

def test_persona_lists_the_known_ones_marking_the_current() -> None:
    run = Run()
    run.start()
    run.run("/persona")
    out = run.out.getvalue()
    assert "* assistant  helpful and brief  [packaged]" in out
    assert "  pirate     arr  [~/.config/runa/personas]" in out


def test_an_unknown_persona_lists_the_known_ones() -> None:
    run = Run(interactive=False)
    status, _ = run.run("/persona nosuch")
    assert status == 66
    assert "no persona 'nosuch'; known: assistant, pirate" in run.notices.getvalue()
    assert "  pirate" in run.out.getvalue()


def test_switching_persona_says_the_history_is_re_read_once() -> None:
    run = Run()
    run.start()
    status, script = run.run("hello", "/persona pirate", "arr?")
    assert status == 0
    assert "history is re-read once" in run.out.getvalue()
    assert run.fake.chats()[1]["persona"] == "pirate"
    assert script.prompts[-1] == "pirate conv-1> "


def test_choosing_a_persona_in_a_fresh_conversation_needs_no_re_read() -> None:
    run = Run()
    run.run("/persona pirate")
    assert "persona pirate\n" in run.out.getvalue()
    assert "re-read" not in run.out.getvalue()


def test_new_starts_another_conversation_and_remembers_it() -> None:
    run = Run()
    run.start()
    status, script = run.run("hello", "/new", "again")
    assert status == 0
    assert [c["conversation"] for c in run.fake.chats()] == ["conv-1", "conv-2"]
    assert run.remembered == ["conv-1", "conv-2"]
    assert "new conversation conv-2" in run.out.getvalue()
    assert script.prompts[-1] == "assistant conv-2> "


def test_history_shows_the_conversation_so_far() -> None:
    run = Run()
    run.run("/history", "hello", "/history")
    out = run.out.getvalue()
    assert "(nothing yet in this conversation)" in out
    assert "you: hello\nassistant: Hello!\n" in out
    assert "be nice" not in out  # the system prompt is the persona's, not the conversation's


def test_params_show_set_and_refuse() -> None:
    run = Run()
    status, _ = run.run("/params temp=0.3 n_predict=64", "/params top_p=2", "/params", "hi")
    assert status == 0
    out = run.out.getvalue()
    assert "this session sends: temp=0.3, n_predict=64" in out
    assert "top_p = 2.0 is not allowed; allowed: 0 to 1" in out
    assert re.search(r"\n  temp +0\.3 +this session\n", out)
    assert re.search(r"\n  top_k +30 +persona assistant \(splinfer.persona in the "
                     r"config\)\n", out)
    assert re.search(r"\n  top_p +0\.95 +llama\.cpp's default\n", out)
    assert run.fake.chats()[0]["params"] == {"temp": 0.3, "n_predict": 64}


def test_unknown_commands_and_help() -> None:
    run = Run()
    run.run("/frobnicate", "/help")
    out = run.out.getvalue()
    assert "unknown command /frobnicate; /help lists them" in out
    assert "/persona [NAME]" in out and "Ctrl-C stops an answer" in out
    assert not run.fake.chats()


# -- starting ----------------------------------------------------------------------------------

def test_resuming_a_known_conversation_takes_its_persona() -> None:
    fake = FakeSplinfer()
    fake.conversations["old"] = {"persona": "pirate", "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    run = Run(fake, conversation="old")
    notices = run.start(Start.RESUME)
    assert notices == ["resuming conversation old (2 messages; /history shows them, "
                       "/new starts another)"]
    assert run.session.persona == "pirate" and run.session.chosen_persona is None


def test_a_fresh_id_is_not_looked_up() -> None:
    run = Run()
    assert run.start(Start.FRESH) == ["new conversation conv-1"]
    assert [r["op"] for r in run.fake.requests] == ["personas"]  # no refused history query
    old = Run(FakeSplinfer(modern=False))
    assert "keeps no conversations" in old.start(Start.FRESH)[-1]


def test_a_remembered_conversation_splinfer_forgot_starts_afresh_under_its_id() -> None:
    run = Run(conversation="gone")
    assert run.start(Start.RESUME) == ["new conversation gone"]


def test_an_unknown_conversation_id_asked_for_is_an_error_with_the_way_out() -> None:
    with pytest.raises(UnknownConversation, match="runa chat --new --conversation gone"):
        Run(conversation="gone").start(Start.EXPLICIT)
    fake = FakeSplinfer()
    fake.conversations["taken"] = {"persona": "assistant", "messages": []}
    with pytest.raises(UsageError, match="exists already"):
        Run(fake, conversation="taken").start(Start.EXPLICIT_NEW)


def test_an_unknown_persona_on_the_command_line_lists_the_known_ones() -> None:
    with pytest.raises(UnknownPersona, match="known: assistant, pirate") as error:
        Run(persona="nosuch").start()
    assert error.value.exit_code == 66


def test_a_persona_other_than_the_conversations_warns_of_the_re_read() -> None:
    fake = FakeSplinfer()
    fake.conversations["old"] = {"persona": "assistant", "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    notices = Run(fake, conversation="old", persona="pirate").start(Start.RESUME)
    assert "re-read once" in notices[0]


def test_an_older_splinfer_still_answers_one_question_at_a_time() -> None:
    run = Run(FakeSplinfer(modern=False), persona="pirate")
    notices = run.start(Start.RESUME)
    assert notices == ["this splinfer has no personas yet; --persona is ignored",
                       "this splinfer keeps no conversations yet: each question is answered "
                       "on its own"]
    status, _ = run.run("hello", "/persona")
    assert "Hello!" in run.out.getvalue()
    assert "does not answer 'personas' yet" in run.out.getvalue()
    assert status == 0


# -- the command line --------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["chat", "--conversation", "no spaces!"], "an id is 1 to 64 characters"),
    (["chat", "--conversation", ".."], "an id is 1 to 64 characters"),
    (["chat", "--top-p", "1.5"], "top_p = 1.5 is not allowed"),
    (["chat", "--export", "a/b"], "--export 'a/b': an id is 1 to 64 characters"),
    (["chat", "--list", "--delete", "x"], "--list and --delete do not go together"),
    (["chat", "--json"], "--json goes with --list"),
    (["chat", "--list", "--format", "json"], "--format goes with --export ID"),
])
def test_bad_options_are_refused_before_anything_is_contacted(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
        runa_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in runa_env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 64
    assert message in capsys.readouterr().err


def test_chat_without_a_running_stack_says_what_to_do(runa_env: dict[str, str]) -> None:
    result = runa("chat", env=runa_env)
    assert result.returncode == 69
    assert "runa up" in result.stderr


# -- typing and long messages ------------------------------------------------------------------

def test_keys_typed_during_an_answer_become_the_text_they_edit() -> None:
    from runa.chat.typeahead import typed_text
    assert typed_text(b"helo\x7flo wor\x1b[Dld\r") == "hello world"
    assert typed_text(b"junk\x15fresh start") == "fresh start"
    assert typed_text("caf\u00e9\r\rtwo".encode()) == "caf\u00e9\n\ntwo"


def test_a_long_text_is_split_into_pieces_that_each_fit() -> None:
    import json

    from runa.chat.upload import split_text
    text = "\u00e9\"x" * 1000
    pieces = split_text(text, 500)
    assert "".join(pieces) == text and len(pieces) > 1
    assert all(len(json.dumps(p).encode()) <= 500 for p in pieces)
    assert split_text("short", 500) == ["short"]


def test_a_message_over_the_envelope_size_goes_ahead_in_parts() -> None:
    class Uploading(FakeSplinfer):
        def _one_shot(self, payload):  # type: ignore[no-untyped-def]
            if payload["op"] == "chat_part":
                parts = [r for r in self.requests if r.get("upload") == payload["upload"]]
                return {"upload": payload["upload"],
                        "received": sum(len(r["text"]) for r in parts)}
            return super()._one_shot(payload)

    run = Run(Uploading())
    run.session.max_request_bytes = 3000
    assert run.run("x" * 5000)[0] == 0
    parts = [r for r in run.fake.requests if r["op"] == "chat_part"]
    chat = run.fake.chats()[0]
    assert parts and all(p["upload"] == chat["upload"] for p in parts)
    assert "".join(p["text"] for p in parts) + chat["text"] == "x" * 5000


def test_a_message_whose_pieces_keep_being_lost_is_never_sent_in_part() -> None:
    """splinfer restarting during every upload (it holds fewer characters than were sent):
    the upload begins again a few times, then the person is told; no chat goes out."""
    class Forgetting(FakeSplinfer):
        def _one_shot(self, payload):  # type: ignore[no-untyped-def]
            if payload["op"] == "chat_part":
                return {"upload": payload["upload"], "received": 1}
            return super()._one_shot(payload)

    run = Run(Forgetting())
    run.session.max_request_bytes = 3000
    run.run("x" * 5000)
    assert "splinfer restarted 3 times while your message was being sent to it; send it " \
        "again" in run.out.getvalue()
    assert run.fake.chats() == []
    uploads = {r["upload"] for r in run.fake.requests if r["op"] == "chat_part"}
    assert len(uploads) == 3, "each attempt is a new upload"
