"""Who coven answers, decided from what the kernel says (runa.coven.identity), without
processes: the cgroup texts are what /proc/<pid>/cgroup shows on cgroup v2 and v1."""

from __future__ import annotations

import pytest

from runa.coven.identity import Mode, decide, mode_of, read_cgroup, unit_of

USER = "/user.slice/user-1000.slice/user@1000.service/app.slice"
V2 = "0::{}/{}\n"
V1 = "12:memory:/user.slice\n1:name=systemd:{}/{}\n0::/\n"


@pytest.mark.parametrize("text", [V2.format(USER, "runa-gilgul.service"),
                                  V1.format(USER, "runa-gilgul.service")])
def test_gilgul_s_unit_is_read_from_either_hierarchy(text: str) -> None:
    assert unit_of(text) == "runa-gilgul.service"


def test_a_cgroup_that_is_not_a_service_names_no_unit() -> None:
    assert unit_of(V2.format(USER, "vte-spawn-1234.scope")) is None
    assert unit_of("0::/\n") is None and unit_of("") is None


def test_the_mode_is_coven_s_own_unit_or_the_supervisor() -> None:
    assert mode_of(V2.format(USER, "runa-coven.service")) is Mode.SYSTEMD
    assert mode_of(V2.format(USER, "session-2.scope")) is Mode.SUPERVISOR
    assert mode_of("") is Mode.SUPERVISOR  # /proc unreadable: the stricter rule (the parent)


def test_under_systemd_only_gilgul_s_unit_is_answered() -> None:
    gilgul = decide(311, mode=Mode.SYSTEMD, ppid=1,
                    holder_cgroup=V2.format(USER, "runa-gilgul.service"))
    assert gilgul.allowed and "runa-gilgul.service" in gilgul.why
    tieto = decide(312, mode=Mode.SYSTEMD, ppid=1,
                   holder_cgroup=V2.format(USER, "runa-tieto.service"))
    assert not tieto.allowed and "runa-tieto.service, not runa-gilgul.service" in tieto.why
    gone = decide(313, mode=Mode.SYSTEMD, ppid=1, holder_cgroup=None)
    assert not gone.allowed
    parent = decide(1, mode=Mode.SYSTEMD, ppid=1, holder_cgroup=V2.format(USER, "init.scope"))
    assert not parent.allowed  # the user manager is coven's parent there, and not gilgul


def test_without_systemd_only_the_parent_is_answered() -> None:
    supervisor = decide(500, mode=Mode.SUPERVISOR, ppid=500, holder_cgroup=None)
    assert supervisor.allowed
    sibling = decide(501, mode=Mode.SUPERVISOR, ppid=500,
                     holder_cgroup=V2.format(USER, "runa-gilgul.service"))
    assert not sibling.allowed and "not coven's parent (pid 500" in sibling.why


def test_nobody_holding_the_reply_queue_is_refused() -> None:
    for mode in Mode:
        assert not decide(None, mode=mode, ppid=500, holder_cgroup=None).allowed


def test_read_cgroup_of_a_process_that_is_gone() -> None:
    assert read_cgroup(1 << 30) is None
    assert read_cgroup(1) is not None
