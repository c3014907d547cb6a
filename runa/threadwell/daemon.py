"""``runa daemon threadwell``: the OpenAI-compatible API, served by uvicorn in a thread of
its own while the service base's loop keeps the watchdog and the heartbeat.

The listening sockets are handed over (socket activation: ``activation.inherited``); run by hand,
outside any manager, it binds loopback itself. The API key comes from coven through gilgul's
broker before READY: no request is answered without it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable

import uvicorn

from runa import activation, log
from runa import stackbus as bus_mod
from runa.config import Config
from runa.crypto.process import Prctl, libc_prctl, undumpable
from runa.crypto.sealed import BusKey, key_path
from runa.paths import Paths
from runa.secret_client import SecretFault, SecretsClient
from runa.service import ServiceContext
from runa.threadwell import apikey
from runa.threadwell.app import Api, Backend
from runa.threadwell.bus import BusBackend

NAME = "threadwell"
#: How long start waits for uvicorn to be serving.
SERVE_WAIT_S = 30.0
#: Between two asks for the key while the vault is locked.
LOCKED_RETRY_S = 1.0


class Threadwell:
    name = NAME

    def __init__(self, config: Config, stack: str, logger: logging.Logger, *,
                 backend: Backend | None = None, key_loader: Callable[[], str] | None = None,
                 sockets: Callable[[], list[socket.socket]] | None = None,
                 prctl: Prctl = libc_prctl) -> None:
        self.config = config
        self._prctl = prctl
        self.stack = stack
        self.logger = logger
        self._backend = backend
        self._key_loader = key_loader
        self._sockets = sockets
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._bus_key: BusKey | None = None
        self._secrets: SecretsClient | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self, ctx: ServiceContext) -> None:
        undumpable(self._prctl)  # before the API key or anyone's prompt is in memory
        sockets = (self._sockets or self._default_sockets)()
        if self._backend is None:
            self._backend = BusBackend(lambda: bus_mod.connect(self.config, self.stack),
                                       self.config["threadwell.timeout_s"])
        ctx.status("asking coven for the API key")
        keys = apikey.KeyHolder(self._wait_for_key(ctx))
        api = Api(self._backend, keys, self.config["threadwell.max_body_bytes"])
        server = uvicorn.Server(uvicorn.Config(
            api.app(), log_config=None, access_log=False, lifespan="off",
            server_header=False, date_header=False))
        self._server = server
        self._thread = threading.Thread(target=self._serve, args=(server, sockets),
                                        name="threadwell-http", daemon=True)
        self._thread.start()
        waited = 0.0
        while not server.started and self._thread.is_alive() and waited < SERVE_WAIT_S:
            ctx.stopping.wait(0.05)
            waited += 0.05
        if not server.started:
            raise RuntimeError(f"the API did not start serving: {self._failure!r}")
        where = ", ".join(_address(sock) for sock in sockets)
        ctx.status(f"serving the API on {where}")
        log.event(self.logger, "api_serving", f"threadwell serves the API on {where}")

    def step(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        if not self._thread.is_alive():
            raise RuntimeError(f"the API server stopped: {self._failure!r}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10.0)
        if isinstance(self._backend, BusBackend):
            self._backend.close()
        if self._secrets is not None:
            self._secrets.bus.close()
            self._secrets.close()
        if self._bus_key is not None:
            self._bus_key.close()

    # -- what it starts with -------------------------------------------------------------

    def _serve(self, server: uvicorn.Server, sockets: list[socket.socket]) -> None:
        try:
            asyncio.run(server.serve(sockets=sockets))
        except BaseException as error:  # reported by step, which ends the service
            self._failure = error

    def _default_sockets(self) -> list[socket.socket]:
        """The sockets handed over; run by hand (no manager) it binds loopback itself."""
        try:
            return activation.inherited(os.environ)
        except activation.NoSockets:
            return activation.bind_loopback(self.config["threadwell.port"])

    def _wait_for_key(self, ctx: ServiceContext) -> Callable[[], str]:
        """The key's loader, once it has loaded the key (a locked vault is waited for)."""
        loader = self._key_loader or self._broker_key
        while True:
            try:
                loader()
                return loader
            except SecretFault as fault:
                if not fault.locked:
                    raise
            ctx.status("waiting for the vault to be unlocked ('runa secret unlock')")
            ctx.keepalive()
            ctx.extend_timeout(LOCKED_RETRY_S + 5.0)
            if ctx.stopping.wait(LOCKED_RETRY_S):
                raise SystemExit(0)

    def _broker_key(self) -> str:
        if self._secrets is None:
            self._bus_key = BusKey.load_or_create(key_path(Paths.for_stack(self.stack).runtime))
            self._secrets = SecretsClient(bus_mod.connect(self.config, self.stack),
                                          self._bus_key, client_name=NAME)
        return apikey.fetch(self._secrets)


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def create(config: Config, logger: logging.Logger, stack: str) -> Threadwell:
    return Threadwell(config, stack, logger)
