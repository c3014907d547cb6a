"""splinfer: llama.cpp inference, many conversations at once, independent of the bus.

``engine.Engine`` loads one model (after ``fit.check_fit`` says it fits) into one
context with several sequences and decodes every running answer in one batch
(``generation`` holds the per-answer loop; the inference options under llama.cpp's
names are the wire contract's, ``runa.protocol.params``); ``prompt`` turns messages
into tokens safely and keeps long conversations inside the context, ``turnplan``
extends a conversation's tokens turn by turn; ``conversations`` keeps histories and
saved model states on disk (``statefile``, ``storage``, ``modelid``); ``personas``
reads the persona files.
The daemon that puts this on the bus (``daemon``, with ``requests`` and ``stream``)
is the only module that knows about envelopes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runa.surface import lazy

if TYPE_CHECKING:
    from runa.splinfer.fit import configured_context, configured_limit, estimate_memory
    from runa.splinfer.personas import PersonaLibrary, configured_persona, persona_dirs

__all__ = [
    "PersonaLibrary",
    "configured_context",
    "configured_limit",
    "configured_persona",
    "estimate_memory",
    "persona_dirs",
]
if not TYPE_CHECKING:  # mypy reads the imports above; an unknown name stays an error
    __getattr__ = lazy(__name__, {
        "fit": ("configured_context", "configured_limit", "estimate_memory"),
        "personas": ("PersonaLibrary", "configured_persona", "persona_dirs"),
    })
