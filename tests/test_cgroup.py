"""The memory limit the kernel enforces, and OOM kills, read from cgroup v2 and v1 trees."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from runa.cgroup import NoMemoryCgroup, memory_limit, own_memory_cgroup, read_cgroup, unit_of
from runa.supervisor.limits import CgroupLayout, MemoryLimiter, find_layout


def test_v2_limit_is_the_tightest_of_the_chain(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    leaf = root / "user.slice" / "runa-splinfer.service"
    leaf.mkdir(parents=True)
    (root / "user.slice" / "memory.max").write_text("1073741824\n")
    (leaf / "memory.max").write_text("max\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/user.slice/runa-splinfer.service\n")
    assert memory_limit(proc, root) == 1 << 30
    (leaf / "memory.max").write_text("536870912\n")
    assert memory_limit(proc, root) == 1 << 29
    (root / "user.slice" / "memory.max").write_text("max\n")
    (leaf / "memory.max").write_text("max\n")
    assert memory_limit(proc, root) is None


def test_v1_memory_controller_wins_on_a_hybrid_host(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    leaf = root / "memory/user.slice/runa-splinfer.service"
    leaf.mkdir(parents=True)
    (root / "memory/memory.limit_in_bytes").write_text("9223372036854771712\n")  # unlimited
    (leaf / "memory.limit_in_bytes").write_text("419430400\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("4:memory:/user.slice/runa-splinfer.service\n"
                    "0::/user.slice/runa-splinfer.service\n")
    assert memory_limit(proc, root) == 400 << 20
    (leaf / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory_limit(proc, root) is None


def test_no_memory_cgroup_says_why(tmp_path: Path) -> None:
    with pytest.raises(NoMemoryCgroup, match="cannot read"):
        own_memory_cgroup(tmp_path / "missing", tmp_path)
    (tmp_path / "proc-cgroup").write_text("1:cpu:/x\n")
    with pytest.raises(NoMemoryCgroup, match="no memory cgroup controller is mounted"):
        own_memory_cgroup(tmp_path / "proc-cgroup", tmp_path)
    assert memory_limit(tmp_path / "proc-cgroup", tmp_path) is None


@pytest.mark.parametrize(("version", "events", "kills"), [
    (1, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", 2),
    (2, "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n", 1),
])  # fmt: skip
def test_the_supervisor_reads_its_childrens_limits_and_oom_kills_through_the_same_reader(
        tmp_path: Path, version: int, events: str, kills: int) -> None:
    root = tmp_path / "cgroup"
    if version == 1:
        own = root / "memory/user.slice"
        proc = "4:memory:/user.slice\n0::/user.slice\n"
    else:
        own = root / "user.slice"
        proc = "0::/user.slice\n"
        root.mkdir()
        (root / "cgroup.controllers").write_text("cpu memory\n")
    own.mkdir(parents=True)
    (tmp_path / "proc-cgroup").write_text(proc)
    layout = find_layout("u1000", tmp_path / "proc-cgroup", root)
    assert isinstance(layout, CgroupLayout)
    assert (layout.base.path, layout.base.version) == (own / "runa-u1000", version)
    limiter = MemoryLimiter(layout, logging.getLogger("test"))
    assert limiter.prepare("splinfer", 400 << 20) is not None and limiter.mode == "cgroup"
    assert limiter.limit_of("splinfer") == 400 << 20
    assert limiter.oom_kills("splinfer") == 0
    name = "memory.oom_control" if version == 1 else "memory.events"
    (own / "runa-u1000/splinfer" / name).write_text(events)
    assert limiter.oom_kills("splinfer") == kills


# -- the unit a process runs in: one reading for coven and gilgul's secrets broker ----------

USER_MANAGER = "/user.slice/user-1000.slice/user@1000.service"


@pytest.mark.parametrize("path, unit", [
    (f"{USER_MANAGER}/app.slice/runa-gilgul.service", "runa-gilgul.service"),
    (f"{USER_MANAGER}/app.slice/runa-gilgul.service/helper", "runa-gilgul.service"),
    (f"{USER_MANAGER}/app.slice/runa-gilgul.service/helper.scope", "runa-gilgul.service"),
    (f"{USER_MANAGER}/app.slice/run-u12.scope", None),  # systemd-run --user --scope
    (f"{USER_MANAGER}/session.slice/vte-spawn-1234.scope", None),  # a terminal
    (f"{USER_MANAGER}/init.scope", None),  # the user manager itself
    (f"{USER_MANAGER}/app.slice/runa-x.service.d/other.service", None),
    ("/system.slice/runa-coven.service", "runa-coven.service"),  # no user manager
    ("/user.slice/user-1000.slice/session-3.scope", None),  # a login session
    ("/", None),
])
def test_the_unit_is_read_alike_from_either_hierarchy(path: str, unit: str | None) -> None:
    v2 = f"0::{path}\n"
    v1 = f"12:memory:/user.slice\n1:name=systemd:{path}\n0::/\n"  # hybrid: v1 names it
    assert unit_of(v2) == unit_of(v1) == unit
    assert unit_of("") is None


def test_coven_and_the_secrets_broker_read_a_unit_with_the_one_function() -> None:
    from runa.coven import identity
    from runa.gilgul import requesters

    assert identity.unit_of is unit_of and identity.read_cgroup is read_cgroup
    assert requesters.unit_of is unit_of and requesters.read_cgroup is read_cgroup


def test_the_cgroup_of_a_process_that_is_gone_is_none(tmp_path: Path) -> None:
    assert read_cgroup(1 << 30) is None
    (tmp_path / "42").mkdir()
    (tmp_path / "42/cgroup").write_text(f"0::{USER_MANAGER}/app.slice/runa-tieto.service\n")
    assert unit_of(read_cgroup(42, tmp_path) or "") == "runa-tieto.service"
