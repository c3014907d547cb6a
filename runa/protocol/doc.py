"""docs/protocol.md's request tables, rendered from the ops declared in this package.

Between a ``<!-- requests: SERVICE -->`` line and the next ``<!-- end requests -->`` the
document holds :func:`runa.protocol.payloads.field_table` of that service's ops; a test
renders them again and compares, so the doc and the types cannot drift. After changing an
op, run ``python -m runa.protocol.doc docs/protocol.md``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from runa.protocol import memory, secrets, splinfer, tieto, whisper
from runa.protocol.payloads import Op, field_table

SERVICES: Mapping[str, Mapping[str, Op]] = {"splinfer": splinfer.OPS, "tieto": tieto.OPS,
                                             "whisper": whisper.OPS,
                                             secrets.BROKER: secrets.BROKER_OPS,
                                             secrets.COVEN: secrets.COVEN_OPS,
                                             memory.SERVICE: memory.OPS}
_BLOCK = re.compile(r"(<!-- requests: ([\w.]+) -->\n).*?(<!-- end requests -->)", re.S)


def render(text: str) -> str:
    """``text`` with every request table rendered anew from the declarations."""
    return _BLOCK.sub(lambda m: f"{m[1]}{field_table(SERVICES[m[2]])}\n{m[3]}", text)


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        print("usage: python -m runa.protocol.doc docs/protocol.md", file=sys.stderr)
        return 64
    path = Path(args[0])
    path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
