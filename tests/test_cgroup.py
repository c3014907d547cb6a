"""The memory limit the kernel enforces, read from cgroup v2 and v1 trees."""

from __future__ import annotations

from pathlib import Path

from runa.cgroup import memory_limit


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
