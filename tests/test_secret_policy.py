"""Who asks for a secret and what it may do: plain functions of /proc and the registry."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from runa import registry
from runa.gilgul.requesters import (
    UNKNOWN,
    Requester,
    Running,
    children_identify,
    systemd_identify,
)
from runa.gilgul.secret_policy import ReadPolicy
from runa.protocol.secrets import PERSON
from runa.registry import Component, Registry, RegistryError

USER = "/user.slice/user-1000.slice/user@1000.service"


def fake_proc(root: Path, pid: int, cgroup: str) -> None:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "cgroup").write_text(cgroup)


@pytest.mark.parametrize("cgroup, who", [
    (f"0::{USER}/app.slice/runa-alethia.service\n", "alethia"),  # v2, the main process
    (f"0::{USER}/app.slice/runa-alethia.service/helper\n", "alethia"),  # a sub-cgroup
    # v1/hybrid as under the test harness: the name=systemd line names the unit
    (f"4:memory:/x\n1:name=systemd:{USER}/app.slice/runa-splinfer.service\n0::/\n",
     "splinfer"),
    (f"0::{USER}/session.slice/session-3.scope\n", PERSON),  # a person's shell
    (f"0::{USER}/app.slice/runa-x.service.d/other.service\n", PERSON),  # innermost counts
    (f"0::{USER}/init.scope\n", PERSON),  # the user manager itself
])
def test_under_systemd_the_unit_of_the_cgroup_names_the_component(tmp_path: Path, cgroup: str,
                                                                   who: str) -> None:
    fake_proc(tmp_path, 4242, cgroup)
    assert systemd_identify(tmp_path)(4242) == Requester(who, 4242)
    assert systemd_identify(tmp_path)(4243).name == PERSON  # gone: nobody's component


def test_under_the_supervisor_a_child_and_its_descendants_are_the_component() -> None:
    parents = {300: 200, 200: 100, 100: 1, 500: 1}
    started = {200: 7, 300: 9, 100: 1, 500: 3}
    identify = children_identify(lambda: {200: Running("alethia", 7)}, None, parents.get,
                                 started.get)
    assert identify(200) == Requester("alethia", 200)
    assert identify(300) == Requester("alethia", 300)  # runs 'runa secret' as a subprocess
    assert identify(100).is_person and identify(500).is_person


def test_a_dead_child_s_reused_pid_is_not_the_component() -> None:
    """The table keeps (pid, start time): a later process given the pid is someone else."""
    parents = {200: 100, 300: 200, 100: 1}
    started = {200: 8, 300: 9, 100: 1}  # 200 started at 8, not at 7 as the child did
    identify = children_identify(lambda: {200: Running("coven", 7)}, None, parents.get,
                                 started.get)
    assert identify(200).is_person and identify(300).is_person
    gone = children_identify(lambda: {200: Running("coven", 7)}, None, parents.get,
                             {}.get)  # no /proc entry at all: gone, or a zombie
    assert gone(200).is_person


def test_what_a_component_left_behind_with_the_supervisor_is_unknown_and_refused() -> None:
    """The supervisor (pid 100) adopts a component's double-forked process (400): its
    ancestry reaches the supervisor through no running child."""
    parents = {200: 100, 300: 200, 400: 100, 100: 50, 50: 1, 600: 50}
    started = dict.fromkeys(parents, 5)
    identify = children_identify(lambda: {200: Running("alethia", 5)}, 100, parents.get,
                                 started.get)
    assert identify(300) == Requester("alethia", 300)
    assert identify(400) == Requester(UNKNOWN, 400) and identify(400).is_unknown
    assert identify(600).is_person  # the shell that ran 'runa up' has another child
    policy = ReadPolicy(REG)
    for op, name in (("get", "alethia.memory_key"), ("create", "alethia.memory_key"),
                     ("list", None), ("status", None), ("rm", "alethia.memory_key")):
        refused = policy.decide(identify(400), op, name)
        assert not refused.allowed and "left behind by a component" in refused.why


# A process that, as the supervisor does, becomes a subreaper and starts a "component" that
# double-forks; it prints the orphan's pid once the orphan has been re-parented to it.
SUBREAPER = """
import os, sys, time
from runa.supervisor.orphans import become_subreaper
become_subreaper()
read, write = os.pipe()
component = os.fork()
if component == 0:
    if os.fork() == 0:
        os.setsid()
        time.sleep(30)
        os._exit(0)
    os._exit(0)
os.waitpid(component, 0)
print(os.getpid(), flush=True)
time.sleep(30)
"""


def test_a_real_double_fork_under_a_subreaper_is_unknown() -> None:
    import subprocess
    import sys

    from runa.gilgul.requesters import parent_pid

    reaper = subprocess.Popen([sys.executable, "-c", SUBREAPER], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert reaper.stdout is not None
        supervisor = int(reaper.stdout.readline())
        orphans = [int(p) for p in
                   (Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split())]
        assert len(orphans) == 1 and parent_pid(orphans[0]) == supervisor
        assert children_identify(dict, supervisor)(orphans[0]).is_unknown
        assert children_identify(dict)(orphans[0]).is_person  # what a subreaper alone gives
    finally:
        for pid in Path(f"/proc/{reaper.pid}/task/{reaper.pid}/children").read_text().split():
            os.kill(int(pid), signal.SIGKILL)
        reaper.kill()
        reaper.wait()


REG = Registry((Component("alethia", "a", secrets=("alethia.*", "api.key")),
                Component("splinfer", "s")))


@pytest.mark.parametrize("who, op, name, allowed", [
    (PERSON, "set", "anything", True),
    (PERSON, "rotate", None, True),
    (PERSON, "create", "anything.at_all", True),
    ("alethia", "get", "alethia.memory_key", True),
    ("alethia", "get", "api.key", True),
    ("alethia", "get", "api.key2", False),  # an exact name is not a prefix
    ("alethia", "get", "alethiax", False),
    ("alethia", "create", "alethia.signing_key", True),  # a component makes its own keys
    ("alethia", "create", "api.key", True),
    ("alethia", "create", "api.key2", False),  # it creates exactly what it may read
    ("alethia", "create", "alethiax", False),
    ("alethia", "list", None, True),
    ("alethia", "status", None, True),
    ("alethia", "set", "alethia.memory_key", False),
    ("alethia", "unlock", None, False),
    ("splinfer", "get", "alethia.memory_key", False),
    ("splinfer", "create", "alethia.memory_key", False),
    ("stranger", "get", "alethia.memory_key", False),  # runa-stranger.service: no entry
    ("stranger", "create", "alethia.memory_key", False),
])
def test_the_person_may_do_everything_a_component_only_read_its_own(
        who: str, op: str, name: str | None, allowed: bool) -> None:
    assert ReadPolicy(REG).decide(Requester(who, 7), op, name).allowed is allowed


def test_a_refused_create_says_the_name_is_not_the_component_s() -> None:
    refused = ReadPolicy(REG).decide(Requester("splinfer", 7), "create", "alethia.memory_key")
    assert refused.why == ("splinfer may not create the secret 'alethia.memory_key': its "
                           "registry entry does not name it in 'secrets'")


def test_a_list_shows_a_component_only_what_it_may_read() -> None:
    entries = [{"name": n} for n in ("alethia.a", "api.key", "other")]
    policy = ReadPolicy(REG)
    assert [e["name"] for e in policy.readable(Requester("alethia", 7), entries)] == \
        ["alethia.a", "api.key"]
    assert policy.readable(Requester("splinfer", 7), entries) == []
    assert policy.readable(Requester(PERSON, 7), entries) == entries


def test_the_registry_declares_what_a_component_may_read(tmp_path: Path) -> None:
    override = tmp_path / "components.d/50-alethia.toml"
    override.parent.mkdir()
    override.write_text('[components.splinfer]\nsecrets = ["splinfer.*"]\n')
    loaded = registry.load(tmp_path)
    assert loaded.get("splinfer").secrets == ("splinfer.*",)
    assert loaded.get("splinter").secrets == ()  # none unless declared
    for bad in ('"*"', '"Alethia.*"', '"a*b"', "3"):
        override.write_text(f"[components.splinfer]\nsecrets = [{bad}]\n")
        with pytest.raises(RegistryError) as raised:
            registry.load(tmp_path)
        assert "components.splinfer.secrets" in str(raised.value)
        assert str(override) in str(raised.value)


class _Broken:
    closed = False

    def serve(self, timeout: float) -> bool:
        raise OSError("the bus went away")

    def close(self) -> None:
        self.closed = True


def test_a_broker_thread_that_dies_stops_gilgul_s_loop() -> None:
    import logging
    import time

    from runa.gilgul import BrokerThread

    broken = _Broken()
    thread = BrokerThread(broken, logging.getLogger("test.broker"), poll_s=0.01)  # type: ignore[arg-type]
    thread.start()
    deadline = time.monotonic() + 5
    while thread.failure is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(RuntimeError, match="the secrets broker stopped"):
        thread.check()
    thread.stop()
    assert broken.closed
