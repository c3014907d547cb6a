"""``runa chat``: the terminal REPL on top of splinfer's conversations and personas.

``commands`` reads what was typed, ``params`` keeps and checks this session's sampling
settings, ``session`` speaks splinfer's protocol for one conversation, ``repl`` is the
loop (terminal or piped lines) and ``files`` the person's own chat files. Each takes its
collaborators as arguments, so the tests drive the REPL without any process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runa.surface import lazy

if TYPE_CHECKING:
    from runa.chat.files import ChatFiles, valid_conversation_id
    from runa.chat.params import SessionParams
    from runa.chat.policy_notes import intervention_summary, whisper_lines
    from runa.chat.rag import Retrieval
    from runa.chat.remember import PastTurns
    from runa.chat.repl import LineReader, Repl, StreamReader, TerminalReader
    from runa.chat.session import ChatSession, NotSupported, Start, new_conversation_id
    from runa.chat.typeahead import TypeAhead
    from runa.chat.upload import in_pieces

__all__ = [
    "ChatFiles",
    "ChatSession",
    "LineReader",
    "NotSupported",
    "PastTurns",
    "Repl",
    "Retrieval",
    "SessionParams",
    "Start",
    "StreamReader",
    "TerminalReader",
    "TypeAhead",
    "conversations",
    "in_pieces",
    "intervention_summary",
    "new_conversation_id",
    "valid_conversation_id",
    "whisper_lines",
]
if not TYPE_CHECKING:  # mypy reads the imports above; an unknown name stays an error
    __getattr__ = lazy(__name__, {
        "files": ("ChatFiles", "valid_conversation_id"),
        "params": ("SessionParams",),
        "policy_notes": ("intervention_summary", "whisper_lines"),
        "rag": ("Retrieval",),
        "remember": ("PastTurns",),
        "repl": ("LineReader", "Repl", "StreamReader", "TerminalReader"),
        "session": ("ChatSession", "NotSupported", "Start", "new_conversation_id"),
        "typeahead": ("TypeAhead",),
        "upload": ("in_pieces",),
    })
