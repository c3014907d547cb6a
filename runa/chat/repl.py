"""The read-answer loop of ``runa chat``, on a terminal or on piped lines.

On a terminal: prompt-toolkit reads the line (history, editing); Ctrl-C at the prompt
drops the line, Ctrl-C during an answer stops that answer (splinfer is told to cancel)
and the loop goes on; Ctrl-D or /quit leaves with 0. On piped input every line is one
question (or command), answers go to stdout, notices to stderr, and the first failure
ends the run with its exit status, so scripts and CI can rely on it.
"""

from __future__ import annotations

import pydoc
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol, TextIO

from runa.chat import commands, conversations
from runa.chat.commands import Command
from runa.chat.policy_notes import intervention_summary, whisper_lines
from runa.chat.remember import PastTurns
from runa.chat.session import (
    ChatSession,
    NotSupported,
    UnknownConversation,
    UnknownPersona,
)
from runa.chat.typeahead import TypeAhead
from runa.errors import RunaError, error_line
from runa.policy import UnknownPolicyError
from runa.protocol.answer import sources_heading

EX_USAGE = 64
EX_INTERRUPTED = 130


class SaveFailed(RunaError):
    """/save could not write its file."""

    exit_code = 74


class LineReader(Protocol):
    def read(self, prompt: str, default: str = "") -> str:
        """One message (``default``: text already typed); EOFError at the end of input,
        KeyboardInterrupt on Ctrl-C."""
        ...


class TerminalReader:
    """prompt-toolkit on the terminal, with the input history kept in a file.

    Enter sends and Alt-Enter (or Esc then Enter) starts a new line; ``multiline``
    (``/multiline``) swaps the two, for pasting or writing long messages.
    """

    def __init__(self, history: Path) -> None:
        # Imported here: only a terminal session pays for prompt-toolkit's import.
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

        self.multiline = False
        keys = KeyBindings()

        @keys.add("enter")
        def _enter(event: KeyPressEvent) -> None:
            self._enter(event, newline=self.multiline)

        @keys.add("escape", "enter")
        def _alt_enter(event: KeyPressEvent) -> None:
            self._enter(event, newline=not self.multiline)

        self._prompt: PromptSession[str] = PromptSession(
            history=FileHistory(str(history)), multiline=True, key_bindings=keys,
            prompt_continuation=lambda width, _line, _soft: "." * (width - 1) + " ")

    @staticmethod
    def _enter(event: Any, *, newline: bool) -> None:
        if newline:
            event.current_buffer.insert_text("\n")
        else:
            event.current_buffer.validate_and_handle()

    def read(self, prompt: str, default: str = "") -> str:
        # Python's own SIGINT handling, not prompt-toolkit's: a Ctrl-C typed just after
        # Enter (the terminal back in cooked mode, prompt-toolkit still closing) must not
        # be swallowed. It then surfaces here as KeyboardInterrupt and drops that line.
        return self._prompt.prompt(prompt, default=default, handle_sigint=False)


class StreamReader:
    """Lines from a stream (a pipe, a file, /dev/null); the prompt is not shown."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def read(self, prompt: str, default: str = "") -> str:
        line = self.stream.readline()
        if not line:
            raise EOFError
        return line


FINISH_NOTES = {
    "length": "[the answer reached n_predict; /params n_predict=-1 lets it finish]",
    "context": "[the context is full; /new starts a fresh conversation]",
    "policy": "[the token policy stopped the answer]",
}


class Repl:
    """Drives one ChatSession from a LineReader; ``run`` returns the exit status."""

    def __init__(self, session: ChatSession, reader: LineReader, *, out: TextIO,
                 notices: TextIO, interactive: bool,
                 typeahead: TypeAhead | None = None, speaker: str = "runa chat",
                 past: PastTurns | None = None) -> None:
        self.session = session
        self.past = past
        """What /remember asks (alethia's search); None: this chat has no memory."""
        self.reader = reader
        self.out = out
        self.notices = notices
        self.interactive = interactive
        self.typeahead = typeahead
        """On a terminal: keeps what is typed during an answer for the next prompt."""
        self.speaker = speaker
        """Whose errors these are (``runa chat``), the prefix of every error line."""
        self._reading_shown = False
        if interactive:
            session.on_reading = self._show_reading

    def prompt(self) -> str:
        """The status line: the conversation's persona and the start of its id."""
        rag = f" [rag:{self.session.rag_topic}]" if self.session.rag_topic else ""
        return f"{self.session.persona or 'runa'} {self.session.conversation[:8]}{rag}> "

    def notice(self, text: str) -> None:
        self.notices.write(text + "\n")
        self.notices.flush()

    def error(self, error: RunaError) -> int:
        self.notice(error_line(self.speaker, error))
        return error.exit_code

    def run(self) -> int:
        while True:
            try:
                typed = self.typeahead.take() if self.typeahead is not None else ""
                line = self.reader.read(self.prompt(), typed)
            except KeyboardInterrupt:
                if not self.interactive:
                    return EX_INTERRUPTED
                continue  # the typed line is dropped; a fresh prompt follows
            except EOFError:
                return 0
            item = commands.parse(line)
            if item is None:
                continue
            if isinstance(item, Command) and item.name == "quit":
                return 0
            try:
                status = (self.command(item) if isinstance(item, Command)
                          else self.answer(item.text))
            except RunaError as error:
                status = self.error(error)
            except KeyboardInterrupt:
                if not self.interactive:
                    return EX_INTERRUPTED
                self.notice("[interrupted]")
                status = 0
            if status and not self.interactive:
                return status

    # -- answers -----------------------------------------------------------------------------

    def answer(self, text: str) -> int:
        wrote = False
        held = self.typeahead.held() if self.typeahead is not None else nullcontext()
        try:
            with held:
                for piece in self.session.ask(text):
                    self._clear_reading()
                    self.out.write(piece)
                    self.out.flush()
                    wrote = True
        except KeyboardInterrupt:
            self._clear_reading()
            self._end_line(wrote)
            self._cancel()
            self.notice("[answer stopped]")
            return 0 if self.interactive else EX_INTERRUPTED
        except RunaError:
            self._clear_reading()
            self._end_line(wrote)  # the error goes on a line of its own
            raise
        self._clear_reading()
        self._end_line(True)
        self._sources()
        self._policy_notes(self.session.last)
        if self.interactive:  # piped runs keep stderr for what went wrong
            self._finish_notes(self.session.last)
        return 0

    def _policy_notes(self, final: dict[str, Any]) -> None:
        """The answer's whisper notes (always), and what the policy did (on a terminal)."""
        for line in whisper_lines(final):
            self.notice(line)
        summary = intervention_summary(final) if self.interactive else None
        if summary:
            self.notice(summary)

    def _show_reading(self, n_tokens: int) -> None:
        """splinfer evaluates a long prompt before the first word: say so meanwhile."""
        self.notices.write(f"reading your message ({n_tokens} tokens)…")
        self.notices.flush()
        self._reading_shown = True

    def _clear_reading(self) -> None:
        if self._reading_shown:
            self.notices.write("\r\x1b[K")
            self.notices.flush()
            self._reading_shown = False

    def _sources(self) -> None:
        """After an answer with /rag on: the sources it cites (else all it was given)."""
        grounding = self.session.grounding
        if grounding is None or not grounding.sources:
            return
        cited = self.session.last.get("citations") or []
        numbered = list(enumerate(grounding.sources, start=1))
        shown = [(n, h) for n, h in numbered if n in cited] or numbered
        self.say(sources_heading(self.session.last))
        for n, hit in shown:
            where = f"{hit.source}:{hit.line}" if hit.source else hit.record
            similarity = "" if hit.similarity is None else f"  similarity {hit.similarity:.2f}"
            self.say(f"  [{n}] {_home_as_tilde(where)}  score {hit.score:.2f}{similarity}")

    def _end_line(self, wrote: bool) -> None:
        if wrote:
            self.out.write("\n")
            self.out.flush()

    def _cancel(self) -> None:
        try:
            self.session.cancel()
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: do not wait for splinfer's confirmation
        except RunaError:
            pass  # splinfer is gone; the next question will say so

    def _finish_notes(self, final: dict[str, Any]) -> None:
        reason = str(final.get("finish_reason"))
        note = FINISH_NOTES.get(reason)
        if reason == "length" and "n_predict" in self.session.params.values:
            note = None  # the person asked for that length
        if note:
            self.notice(note)
        dropped = final.get("dropped_messages") or 0
        if dropped:
            self.notice(f"[the oldest {dropped} messages no longer fit the context and were "
                        "left out of it]")

    # -- commands ----------------------------------------------------------------------------

    def command(self, command: Command) -> int:
        handler = getattr(self, f"cmd_{command.name}", None)
        if command.name not in commands.HELP or handler is None:
            self.notice(f"unknown command /{command.name}; /help lists them")
            return EX_USAGE
        return int(handler(command.args) or 0)

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def cmd_help(self, _args: tuple[str, ...]) -> int:
        self.say(commands.help_text())
        return 0

    def cmd_persona(self, args: tuple[str, ...]) -> int:
        if len(args) > 1:
            self.notice("/persona takes one name (or none, to list them)")
            return EX_USAGE
        if not args:
            self._list_personas()
            return 0
        try:
            self.notice(self.session.switch_persona(args[0]))
        except UnknownPersona as error:
            self.error(error)
            self._list_personas()
            return error.exit_code
        return 0

    def _list_personas(self) -> None:
        personas = self.session.personas()
        current = self.session.persona or personas.default
        width = max((len(p.name) for p in personas.personas), default=0)
        self.say("personas (* = this conversation's; /persona NAME switches):")
        for persona in personas.personas:
            mark = "*" if persona.name == current else " "
            source = f"  [{_home_as_tilde(persona.source)}]" if persona.source else ""
            self.say(f"{mark} {persona.name:<{width}}  {persona.description}{source}".rstrip())

    def cmd_policy(self, args: tuple[str, ...]) -> int:
        if len(args) > 1:
            self.notice("/policy takes one name (or none, to list them)")
            return EX_USAGE
        if not args:
            self._list_policies()
            return 0
        try:
            self.notice(self.session.switch_policy(args[0]))
        except UnknownPolicyError as error:
            self.error(error)
            self._list_policies()
            return error.exit_code
        return 0

    def _list_policies(self) -> None:
        choices = self.session.policy_sets()
        current = self.session.policy
        width = max((len(c.name) for c in choices), default=0)
        self.say("policy sets (* = this conversation's; /policy NAME switches):")
        for choice in choices:
            mark = "*" if choice.name == current else " "
            locked = "locked  " if choice.locked else ""
            self.say(f"{mark} {choice.name:<{width}}  {locked}{choice.description}".rstrip())
        if current is None:
            self.say("(splinfer names this conversation's set with its next answer)")
        if any(c.locked for c in choices):
            self.say("(locked: below the administrator's minimum; 'runa policy show NAME' "
                     "says why)")

    def cmd_rag(self, args: tuple[str, ...]) -> int:
        if args == ("off",):
            self.notice(self.session.rag(None))
            return 0
        if len(args) != 2 or args[0] != "on":
            where = f" (now: topic {self.session.rag_topic})" if self.session.rag_topic else ""
            self.notice(f"/rag on TOPIC takes sources from TOPIC; /rag off stops{where}")
            return EX_USAGE
        self.notice(self.session.rag(args[1]))
        return 0

    def cmd_remember(self, args: tuple[str, ...]) -> int:
        if not args:
            self.notice("/remember WORDS shows your past turns nearest in meaning to WORDS")
            return EX_USAGE
        if self.past is None:
            self.notice("memory search is off: this chat has no memory (alethia)")
            return 0
        lines, off = self.past.lines(" ".join(args))
        if off is not None:
            self.notice(off)
            return 0
        self.say("from your past conversations:")
        for line in lines:
            self.say("  " + line)
        return 0

    def cmd_new(self, _args: tuple[str, ...]) -> int:
        self.notice(f"new conversation {self.session.new()}")
        return 0

    def cmd_conversations(self, _args: tuple[str, ...]) -> int:
        found = conversations.listing(self.session.call)
        width = shutil.get_terminal_size((120, 24)).columns
        for line in conversations.table(found, width):
            self.say(line)
        self.say("(/resume ID goes on with one; the start of its id is enough)")
        return 0

    def cmd_resume(self, args: tuple[str, ...]) -> int:
        if len(args) != 1:
            self.notice("/resume takes one conversation id (or its start); "
                        "/conversations lists them")
            return EX_USAGE
        conversation = conversations.resolve(self.session.call, args[0])
        self.notice(self.session.resume(conversation))
        return 0

    def cmd_save(self, args: tuple[str, ...]) -> int:
        if len(args) != 1:
            self.notice("/save takes one file name, e.g. /save chat.md")
            return EX_USAGE
        if not self.session.messages:
            self.notice("nothing to save yet: this conversation has no messages")
            return 0
        target = Path(args[0]).expanduser()
        history = conversations.full_history(self.session.call, self.session.conversation)
        text = conversations.render(history, "json" if target.suffix == ".json" else "md")
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as error:
            raise SaveFailed(f"/save: {target}: {error.strerror or error}") from None
        self.notice(f"saved {len(history['messages'])} messages to {target}")
        return 0

    def cmd_history(self, _args: tuple[str, ...]) -> int:
        messages: list[dict[str, str]] = []
        try:
            if self.session.messages or not self.session.keeps_conversations:
                messages = self.session.history()  # (a new one would only be refused)
        except UnknownConversation:
            pass
        if not messages:
            self.say("(nothing yet in this conversation)")
            return 0
        lines = []
        for message in messages:
            # Not the persona's name: after /persona it would be wrong for the older answers.
            who = "you" if message.get("role") == "user" else message.get("role", "assistant")
            lines.append(f"{who}: {message.get('content', '')}")
        self.page("\n".join(lines))
        return 0

    def page(self, text: str) -> None:
        """Show ``text``; through a pager ($PAGER, else less) when longer than the screen."""
        rows = shutil.get_terminal_size((80, 24)).lines
        if self.interactive and self.out.isatty() and text.count("\n") + 1 >= rows - 1:
            pydoc.pager(text + "\n")
        else:
            self.say(text)

    def cmd_multiline(self, _args: tuple[str, ...]) -> int:
        if not isinstance(self.reader, TerminalReader):
            self.notice("/multiline is for the terminal; piped input is one message a line")
            return 0
        self.reader.multiline = not self.reader.multiline
        self.notice("multi-line on: Enter starts a new line, Alt-Enter (or Esc Enter) sends"
                    if self.reader.multiline else
                    "multi-line off: Enter sends, Alt-Enter (or Esc Enter) starts a new line")
        return 0

    def cmd_params(self, args: tuple[str, ...]) -> int:
        params = self.session.params
        if args == ("reset",):
            params.reset()
            self.notice("sampling settings: back to the persona's and llama.cpp's defaults")
            return 0
        if args:
            for note in params.update(args):
                self.notice(note)
            now = ", ".join(f"{name}={value}" for name, value in params.values.items())
            self.notice(f"this session sends: {now or 'nothing (the defaults apply)'}")
            return 0
        persona, persona_params, is_default = self._persona_in_force()
        rows = params.rows(persona, persona_params, is_default)
        width = max(len(name) for name, _, _ in rows)
        self.say(f"settings in force (persona {persona or '?'}; this session's win over the "
                 "persona's, the persona's over llama.cpp's):")
        for name, value, source in rows:
            self.say(f"  {name:<{width}}  {value!s:<8}  {source}")
        return 0

    def _persona_in_force(self) -> tuple[str | None, dict[str, object], bool]:
        """(the persona answering, its settings, whether it is the configured default)."""
        try:
            personas = self.session.personas()
        except NotSupported:
            return self.session.persona, {}, False
        name = self.session.chosen_persona or self.session.persona or personas.default
        persona = personas.get(name)
        return name, dict(persona.params) if persona else {}, name == personas.default


def _home_as_tilde(path: str) -> str:
    home = str(Path.home())
    return "~" + path[len(home):] if path.startswith(home + "/") else path
