"""What a typed line is: a question for the model, a /command, or nothing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A line that starts with ``/``: the command's name (lower case) and its words."""

    name: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Question:
    text: str


#: name -> (usage, what it does), in the order /help lists them.
HELP: dict[str, tuple[str, str]] = {
    "persona": ("/persona [NAME]", "list the personas, or switch this conversation to NAME"),
    "policy": ("/policy [NAME]",
               "list the policy sets, or run this conversation under NAME (docs/policy.md)"),
    "new": ("/new", "start a new conversation (the old one is kept by splinfer)"),
    "conversations": ("/conversations", "list the kept conversations, the latest used first"),
    "resume": ("/resume ID", "go on with conversation ID (any unique start of its id)"),
    "history": ("/history", "show this conversation so far"),
    "save": ("/save FILE", "write this conversation to FILE (Markdown; .json: JSON)"),
    "params": ("/params [name=value ...|reset]",
               "show the settings in force and where each comes from, or set them "
               "(llama.cpp names; name= unsets)"),
    "multiline": ("/multiline", "swap Enter and Alt-Enter: Enter starts a new line, "
                  "Alt-Enter sends"),
    "rag": ("/rag on TOPIC | /rag off",
            "answer from TOPIC's passages (tieto) and list the sources, or stop"),
    "remember": ("/remember WORDS",
                 "your past turns nearest in meaning to WORDS (alethia's memory search)"),
    "help": ("/help", "this list"),
    "quit": ("/quit", "leave (so does Ctrl-D); Ctrl-C stops an answer"),
}
ALIASES = {"exit": "quit", "q": "quit", "?": "help", "personas": "persona",
           "policies": "policy", "list": "conversations", "export": "save"}


def parse(line: str) -> Command | Question | None:
    """Read one line. ``//text`` sends ``/text`` as a question; blank lines are nothing."""
    stripped = line.strip()
    if not stripped:
        return None
    if stripped.startswith("//"):
        return Question(stripped[1:])
    if stripped.startswith("/"):
        name, *args = stripped[1:].split() or [""]
        name = name.lower()
        return Command(ALIASES.get(name, name), tuple(args))
    return Question(stripped)


def help_text() -> str:
    width = max(len(usage) for usage, _ in HELP.values())
    lines = [f"  {usage:<{width}}  {text}" for usage, text in HELP.values()]
    lines.append("  Anything else is sent to the model; start a line with // to send one "
                 "that begins with /.")
    return "\n".join(lines)
