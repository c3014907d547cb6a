"""gilgul's line to the systemd user manager: D-Bus calls and unit-state signals (jeepney).

One blocking connection to the session bus, where the user manager is
``org.freedesktop.systemd1``. After ``Subscribe()`` the manager pushes ``PropertiesChanged``
for the units gilgul watches (one match rule per unit object, so other units' traffic never
reaches gilgul) and ``JobRemoved``; gilgul waits on the socket and never polls unit state.
``UnitManager`` is the seam: the daemon's tests drive it with a fake.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from jeepney import (
    DBusAddress,
    HeaderFields,
    MatchRule,
    Message,
    MessageType,
    message_bus,
    new_method_call,
)
from jeepney.io.blocking import DBusConnection, open_dbus_connection
from jeepney.wrappers import DBusErrorResponse, Properties

from runa.errors import RunaError

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
SERVICE_IFACE = "org.freedesktop.systemd1.Service"
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
CALL_TIMEOUT_S = 25.0


class ManagerError(RunaError):
    """The user manager could not be reached, or refused a call."""

    exit_code = 69  # EX_UNAVAILABLE


@dataclass(frozen=True)
class UnitChanged:
    """Some properties of a watched unit changed (only the ones systemd sent)."""

    unit: str
    interface: str
    changed: Mapping[str, Any]


@dataclass(frozen=True)
class JobRemoved:
    unit: str
    job_id: int
    result: str  # done, canceled, timeout, failed, dependency, skipped


Event = UnitChanged | JobRemoved


class UnitManager(Protocol):
    """What gilgul needs from a service manager."""

    def watch(self, units: list[str]) -> None: ...

    def unit_state(self, unit: str) -> dict[str, Any]: ...

    def start(self, unit: str) -> None: ...

    def reset_failed(self, unit: str) -> None: ...

    def kill(self, unit: str, signal: int) -> None: ...

    def reload(self) -> None: ...

    def own_restarts(self, unit: str) -> int: ...

    def events(self, timeout: float) -> list[Event]: ...

    def close(self) -> None: ...


def session_bus_address(env: Mapping[str, str]) -> str:
    """``$DBUS_SESSION_BUS_ADDRESS``, else the user bus socket in ``$XDG_RUNTIME_DIR``."""
    address = env.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = env.get("XDG_RUNTIME_DIR")
    if not runtime:
        raise ManagerError("no D-Bus session bus: neither DBUS_SESSION_BUS_ADDRESS nor "
                           "XDG_RUNTIME_DIR is set")
    return f"unix:path={runtime}/bus"


def _unwrap(name: str, reply: Message) -> tuple[Any, ...]:
    if reply.header.message_type == MessageType.error:
        raise ManagerError(f"{name}: {DBusErrorResponse(reply)}")
    return reply.body


class SystemdUserManager:
    """``UnitManager`` over D-Bus to ``systemd --user``."""

    # Properties gilgul reads when a unit changes; all are sent with PropertiesChanged.
    STATE = (("ActiveState", UNIT_IFACE), ("SubState", UNIT_IFACE), ("Job", UNIT_IFACE),
             ("Result", SERVICE_IFACE), ("MainPID", SERVICE_IFACE),
             ("ExecMainStatus", SERVICE_IFACE), ("ExecMainCode", SERVICE_IFACE),
             ("WatchdogUSec", SERVICE_IFACE), ("MemoryMax", SERVICE_IFACE),
             ("ActiveEnterTimestampMonotonic", UNIT_IFACE))

    def __init__(self, connection: DBusConnection) -> None:
        self.conn = connection
        self.manager = DBusAddress(MANAGER_PATH, bus_name=SYSTEMD, interface=MANAGER_IFACE)
        self._signals: deque[Message] = deque()
        self._filter = connection.filter(MatchRule(type="signal"), queue=self._signals)
        self._paths: dict[str, str] = {}  # object path -> unit name

    @classmethod
    def connect(cls, env: Mapping[str, str] | None = None) -> SystemdUserManager:
        address = session_bus_address(os.environ if env is None else env)
        try:
            return cls(open_dbus_connection(address))
        except (OSError, TimeoutError, ValueError) as error:
            raise ManagerError(f"cannot reach the D-Bus session bus at {address}: {error}") \
                from error

    # -- calls ------------------------------------------------------------------------------

    def _call(self, member: str, signature: str = "", *args: Any) -> tuple[Any, ...]:
        message = new_method_call(self.manager, member, signature, args)
        try:
            reply = self.conn.send_and_get_reply(message, timeout=CALL_TIMEOUT_S)
        except TimeoutError:
            raise ManagerError(f"{member}: no answer from the user manager") from None
        return _unwrap(member, reply)

    def _path(self, unit: str) -> str:
        if unit not in self._paths.values():
            path = self._call("LoadUnit", "s", unit)[0]
            self._paths[path] = unit
        return next(p for p, u in self._paths.items() if u == unit)

    def watch(self, units: list[str]) -> None:
        """Subscribe to the manager's signals and to property changes of ``units``."""
        for rule in [MatchRule(type="signal", sender=SYSTEMD, interface=MANAGER_IFACE,
                               path=MANAGER_PATH, member="JobRemoved")] + [
                MatchRule(type="signal", sender=SYSTEMD, interface=PROPERTIES_IFACE,
                          member="PropertiesChanged", path=self._path(unit))
                for unit in units]:
            _unwrap("AddMatch", self.conn.send_and_get_reply(message_bus.AddMatch(rule),
                                                             timeout=CALL_TIMEOUT_S))
        self._call("Subscribe")

    def unit_state(self, unit: str) -> dict[str, Any]:
        """The properties in ``STATE`` of ``unit``, read now (a target has no Service ones)."""
        path = self._path(unit)
        out: dict[str, Any] = {}
        interfaces = (UNIT_IFACE, SERVICE_IFACE) if unit.endswith(".service") else (UNIT_IFACE,)
        for interface in interfaces:
            address = DBusAddress(path, bus_name=SYSTEMD, interface=interface)
            reply = self.conn.send_and_get_reply(Properties(address).get_all(),
                                                 timeout=CALL_TIMEOUT_S)
            values = _unwrap("GetAll", reply)[0]
            out.update({name: values[name][1] for name, iface in self.STATE
                        if iface == interface and name in values})
        return out

    def start(self, unit: str) -> None:
        self._call("StartUnit", "ss", unit, "replace")

    def reset_failed(self, unit: str) -> None:
        self._call("ResetFailedUnit", "s", unit)

    def kill(self, unit: str, signal: int) -> None:
        """Signal the unit's main process (the watchdog's way of ending a hung one)."""
        self._call("KillUnit", "ssi", unit, "main", signal)

    def reload(self) -> None:
        """``daemon-reload``; returns once the manager has re-read every unit."""
        self._call("Reload")

    def own_restarts(self, unit: str) -> int:
        """``NRestarts`` of ``unit``: how often systemd restarted it (gilgul's incarnation)."""
        address = DBusAddress(self._path(unit), bus_name=SYSTEMD, interface=SERVICE_IFACE)
        reply = self.conn.send_and_get_reply(Properties(address).get("NRestarts"),
                                             timeout=CALL_TIMEOUT_S)
        return int(_unwrap("Get", reply)[0][1])

    # -- signals ----------------------------------------------------------------------------

    def events(self, timeout: float) -> list[Event]:
        """Every signal that arrived, waiting up to ``timeout`` seconds for the first."""
        if not self._signals:
            try:
                self.conn.recv_messages(timeout=max(0.0, timeout))
            except TimeoutError:
                return []
        while True:  # drain what is already readable, without waiting
            try:
                self.conn.recv_messages(timeout=0)
            except TimeoutError:
                break
        events: list[Event] = []
        while self._signals:
            event = self._decode(self._signals.popleft())
            if event is not None:
                events.append(event)
        return events

    def _decode(self, message: Message) -> Event | None:
        fields = message.header.fields
        member = fields.get(HeaderFields.member)
        if member == "PropertiesChanged":
            unit = self._paths.get(fields.get(HeaderFields.path, ""))
            interface, changed, _invalidated = message.body
            if unit is None:
                return None
            return UnitChanged(unit, interface, {k: v[1] for k, v in changed.items()})
        if member == "JobRemoved":
            job_id, _path, unit, result = message.body
            return JobRemoved(unit, job_id, result) if unit in self._paths.values() else None
        return None

    def close(self) -> None:
        self._filter.close()
        self.conn.close()
