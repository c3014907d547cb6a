"""threadwell's settings, the [threadwell] section: where the API listens and what it takes."""

from __future__ import annotations

from runa.config import Setting, in_range

SETTINGS: tuple[Setting, ...] = (
    Setting("threadwell.port", int, 8411,
            "TCP port of the OpenAI-compatible API, on 127.0.0.1 and ::1 only (the "
            "runa-threadwell.socket unit listens on it; without systemd the supervisor binds it).",
            in_range(1, 65535)),
    Setting("threadwell.max_body_bytes", int, 1024 * 1024,
            "Largest request body the API reads; a larger one is refused with 413.",
            in_range(1024, 64 * 1024 * 1024)),
    Setting("threadwell.timeout_s", float, 120.0,
            "How long a request waits while splinfer or tieto is silent before it fails.",
            in_range(1, 86400)),
)

#: The unit's limits: Python, Starlette and uvicorn, a thread per request in flight; the
#: model runs in splinfer, so a quarter of a core carries the streams.
RESOURCES = {"cpu_quota": "50%", "memory_max": "192M"}
