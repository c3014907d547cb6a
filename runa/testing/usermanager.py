"""A real ``systemd --user`` manager and journald on a machine whose PID 1 is not systemd.

The recipe is the measured one (shared notes, platform-systemd-packaging §1a):

1. Clean up whatever an earlier run left behind (its processes and cgroups).
2. Start ``systemd-journald`` standalone if no journal socket answers.
3. Create ``user.slice/user-<uid>.slice/user@<uid>.service`` in *every* cgroup
   hierarchy and move the launcher there before it execs ``systemd --user``.
   This step is not optional: a user manager started from the root cgroup adopts
   the whole machine (PID 1 included) into its ``init.scope``. If the move fails
   the harness refuses to start.
4. ``mkdir /run/systemd/system`` only while the manager checks for it.
5. Create ``/run/systemd/inaccessible/{reg,dir,chr,blk,fifo,sock}`` as PID 1 would have:
   sandboxing directives (``ProtectKernelLogs=``, ``InaccessiblePaths=``, …) bind-mount these
   over what they hide, and without them every such unit fails with 226/NAMESPACE.
6. Make ``/run`` a mount point (a bind mount onto itself) where the host has it as a plain
   directory, as this VM does: a booted system mounts a tmpfs there. Otherwise any unit with
   an implied ``MountAPIVFS=`` (``ProtectKernelTunables=``, ``ProtectControlGroups=``, …) gets
   an empty tmpfs on ``/run`` and loses ``$NOTIFY_SOCKET``, the journal and D-Bus.
7. Tear everything down in ``stop()``, which ``with`` calls from a finally path.

Used by the test suite (the ``real_systemd`` marker), the benchmarks and the
packaging test; ``python -m runa.testing.usermanager start|stop|env`` drives it by hand.

The committed units run ``/usr/bin/runa``, which exists only once Runa is installed as a
package. ``use_runa()`` makes a checkout's ``runa`` (e.g. the venv's) reachable for them: one
prefix drop-in, ``runa-.service.d/10-harness.conf`` in the manager's runtime unit directory,
applies to every ``runa-*.service`` and replaces ``ExecStart=`` with that executable
(``%j`` is the part of the unit name after ``runa-``), plus any test environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypedDict

from runa.errors import RunaError
from runa.log import socket_answers

CGROUP_ROOT = Path("/sys/fs/cgroup")
JOURNALD = Path("/lib/systemd/systemd-journald")
SYSTEMD = Path("/lib/systemd/systemd")
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
BOOTED_MARKER = Path("/run/systemd/system")
INACCESSIBLE = Path("/run/systemd/inaccessible")
RUN = Path("/run")
STATE_DIR = Path("/run/runa-harness")
LOCK_FILE = STATE_DIR / "lock"


class _RunAs(TypedDict, total=False):
    """``subprocess`` arguments that run a command as the harness's user (empty: as us)."""

    user: int
    group: int


class HarnessError(RunaError):
    """The user manager could not be started safely."""


def _hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, name=systemd, the unified one)."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # pure cgroup v2
        return [CGROUP_ROOT]
    return sorted(p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink())


def _walk_bottom_up(path: Path) -> Iterator[Path]:
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        yield from _walk_bottom_up(child)
    yield path


class _MachineLock:
    """One harness at a time on this machine: journald, /run and the cgroup tree are shared.

    A second test run (another worker, a packaging test) waits here instead of killing the
    first one's manager. Re-entrant within a process, so one test session may start managers
    for several users; the kernel drops the lock if the holder dies.
    """

    def __init__(self, path: Path = LOCK_FILE) -> None:
        self.path = path
        self._fd: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        if self._depth == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"runa harness: waiting for another run to release {self.path}",
                      file=sys.stderr, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._fd = fd
        self._depth += 1

    def release(self) -> None:
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


_LOCK = _MachineLock()


class UserManager:
    """Start and stop a user manager for ``uid`` (default: the caller, who must be root)."""

    def __init__(self, uid: int | None = None, boot_timeout: float = 30.0) -> None:
        if os.geteuid() != 0:
            raise HarnessError("the systemd harness needs root (it creates cgroups and "
                               "starts journald)")
        self.uid = os.getuid() if uid is None else uid
        self.user = pwd.getpwuid(self.uid)
        self.boot_timeout = boot_timeout
        self.runtime_dir = Path(f"/run/user/{self.uid}")
        self.cgroup_rel = Path(f"user.slice/user-{self.uid}.slice/user@{self.uid}.service")
        self.state_file = STATE_DIR / f"{self.uid}.json"
        self.manager: subprocess.Popen[bytes] | None = None
        self.journald: subprocess.Popen[bytes] | None = None
        self._created_marker = False
        self._created_inaccessible = False
        self._mounted_run = False
        self._locked = False

    # -- public --------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """The variables a client needs to reach this manager (systemctl --user, D-Bus)."""
        return {
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={self.runtime_dir}/bus",
        }

    @property
    def unit_dir(self) -> Path:
        """The manager's runtime unit directory (``$XDG_RUNTIME_DIR/systemd/user``)."""
        return self.runtime_dir / "systemd/user"

    def use_runa(self, executable: Path | str,
                 environment: Mapping[str, str] | None = None) -> Path:
        """Run every ``runa-*.service`` with ``executable`` (and ``environment``); no reload.

        Returns the drop-in written; ``forget_runa()`` removes it.
        """
        lines = ["# Written by runa.testing.usermanager: the units run this checkout's runa.",
                 "[Service]", "ExecStart=", f"ExecStart={executable} daemon %j"]
        # The checkout may live under /tmp, which PrivateTmp= hides: bind its venv back in.
        venv = Path(executable).parent.parent
        lines.append(f"BindReadOnlyPaths={venv}")
        checkout = venv.parent
        if (checkout / "runa").is_dir():  # an editable install imports from the checkout
            lines.append(f"BindReadOnlyPaths={checkout / 'runa'}")
        for key, value in sorted((environment or {}).items()):
            quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
            lines.append(f'Environment="{key}={quoted}"')
        path = self.unit_dir / "runa-.service.d/10-harness.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path

    def forget_runa(self) -> None:
        path = self.unit_dir / "runa-.service.d/10-harness.conf"
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()

    def start(self) -> UserManager:
        _LOCK.acquire()
        self._locked = True
        self.cleanup_leftovers()
        try:
            self._ensure_journald()
            self._prepare_runtime_dir()
            self._make_inaccessible_nodes()
            self._make_run_a_mount()
            self._prepare_cgroups()
            self._launch()
            self._save_state()
            self._wait_running()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the manager and journald (if we started it); remove our cgroups."""
        if self.manager is not None and self.manager.poll() is None:
            subprocess.run(["systemctl", "--user", "exit"], env=self._client_env(),
                           capture_output=True, timeout=10, check=False,
                           **self._as_user())
            try:
                self.manager.wait(10)
            except subprocess.TimeoutExpired:
                self.manager.kill()
                self.manager.wait()
        self._kill_cgroup_members()
        if self.journald is not None and self.journald.poll() is None:
            self.journald.terminate()
            try:
                self.journald.wait(5)
            except subprocess.TimeoutExpired:
                self.journald.kill()
                self.journald.wait()
        self._remove_cgroups()
        self._remove_booted_marker()
        self._remove_inaccessible_nodes()
        self._unmount_run()
        self.state_file.unlink(missing_ok=True)
        self.manager = self.journald = None
        if self._locked:
            self._locked = False
            _LOCK.release()

    def cleanup_leftovers(self) -> None:
        """Kill processes an earlier, interrupted run left and remove its cgroups."""
        try:
            old = json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            old = {}
        for key in ("manager_pid", "journald_pid"):
            pid = old.get(key)
            if pid and _is_process(pid, {"systemd", "systemd-journal"}):
                _kill_and_wait(pid)
        self._kill_cgroup_members()
        self._remove_cgroups()
        self.state_file.unlink(missing_ok=True)

    def __enter__(self) -> UserManager:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- steps ---------------------------------------------------------------------------

    def _ensure_journald(self) -> None:
        if socket_answers(JOURNAL_SOCKET):
            return
        self.journald = subprocess.Popen([str(JOURNALD)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not socket_answers(JOURNAL_SOCKET):
            if self.journald.poll() is not None or time.monotonic() > deadline:
                raise HarnessError("systemd-journald did not start")
            time.sleep(0.02)

    def _prepare_runtime_dir(self) -> None:
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.runtime_dir, self.uid, self.user.pw_gid)
        os.chmod(self.runtime_dir, 0o700)

    def _make_inaccessible_nodes(self) -> None:
        """What PID 1 creates at boot (``make_inaccessible_nodes()``); mode 0 on every node."""
        if INACCESSIBLE.exists():
            return
        INACCESSIBLE.mkdir(parents=True, mode=0o755)
        self._created_inaccessible = True
        (INACCESSIBLE / "dir").mkdir(mode=0)
        (INACCESSIBLE / "reg").touch(mode=0)
        for name, kind in (("chr", stat.S_IFCHR), ("blk", stat.S_IFBLK),
                           ("fifo", stat.S_IFIFO), ("sock", stat.S_IFSOCK)):
            os.mknod(INACCESSIBLE / name, kind, os.makedev(0, 0))
        for entry in INACCESSIBLE.iterdir():
            os.chmod(entry, 0)

    def _remove_inaccessible_nodes(self) -> None:
        if not self._created_inaccessible:
            return
        for entry in INACCESSIBLE.iterdir():
            with contextlib.suppress(OSError):
                entry.rmdir() if entry.is_dir() else entry.unlink()
        with contextlib.suppress(OSError):
            INACCESSIBLE.rmdir()
        self._created_inaccessible = False

    def _make_run_a_mount(self) -> None:
        if _is_mount_point(RUN):
            return
        subprocess.run(["mount", "--bind", str(RUN), str(RUN)], check=True, capture_output=True)
        self._mounted_run = True

    def _unmount_run(self) -> None:
        """Detach our bind mount lazily: files others hold open under /run stay valid."""
        if self._mounted_run:
            subprocess.run(["umount", "--lazy", str(RUN)], check=False, capture_output=True)
            self._mounted_run = False

    def _prepare_cgroups(self) -> None:
        for hierarchy in _hierarchies():
            path = hierarchy
            for part in self.cgroup_rel.parts:
                parent, path = path, path / part
                path.mkdir(exist_ok=True)
                if hierarchy.name == "cpuset":
                    for name in ("cpuset.cpus", "cpuset.mems"):
                        (path / name).write_text((parent / name).read_text())
            if self.uid != 0:  # the manager must be able to create its own children
                for entry in [path, *path.iterdir()]:
                    os.chown(entry, self.uid, self.user.pw_gid)

    def _launch(self) -> None:
        procs = [str(h / self.cgroup_rel / "cgroup.procs") for h in _hierarchies()]
        uid, gid, name = self.uid, self.user.pw_gid, self.user.pw_name

        def enter_cgroups_then_drop_privileges() -> None:  # runs in the child, before exec
            pid = str(os.getpid())
            for path in procs:
                with open(path, "w") as handle:
                    handle.write(pid)
            if uid != 0:
                os.initgroups(name, gid)
                os.setgid(gid)
                os.setuid(uid)

        if not BOOTED_MARKER.exists():
            BOOTED_MARKER.mkdir(parents=True)
            self._created_marker = True
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.user.pw_dir,
               "USER": name, "LOGNAME": name, **self.env}
        try:
            self.manager = subprocess.Popen(
                [str(SYSTEMD), "--user"], env=env, cwd=self.user.pw_dir,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=enter_cgroups_then_drop_privileges)
        except subprocess.SubprocessError as error:
            raise HarnessError(f"refusing to start the user manager: moving it into its own "
                               f"cgroup failed ({error})") from error
        self._verify_cgroups(self.manager.pid)

    def _verify_cgroups(self, pid: int) -> None:
        """The manager must sit in our subtree in every hierarchy, or it would adopt the host."""
        want = "/" + str(self.cgroup_rel)
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        wrong = [line for line in lines if not line.split(":", 2)[2].startswith(want)]
        if wrong:
            self.manager.kill()  # type: ignore[union-attr]
            raise HarnessError(f"refusing to run the user manager outside its cgroup: {wrong}")

    def _wait_running(self) -> None:
        deadline = time.monotonic() + self.boot_timeout
        state = ""
        while time.monotonic() < deadline:
            if self.manager is not None and self.manager.poll() is not None:
                raise HarnessError(f"systemd --user exited with {self.manager.returncode}")
            result = subprocess.run(["systemctl", "--user", "is-system-running"],
                                    env=self._client_env(), capture_output=True, text=True,
                                    check=False, **self._as_user())
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                self._remove_booted_marker()
                return
            time.sleep(0.05)
        raise HarnessError(f"the user manager did not reach 'running' (last: {state!r})")

    # -- helpers -------------------------------------------------------------------------

    def _client_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def _as_user(self) -> _RunAs:
        return {} if self.uid == os.getuid() else {"user": self.uid, "group": self.user.pw_gid}

    def _save_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({
            "manager_pid": self.manager.pid if self.manager else None,
            "journald_pid": self.journald.pid if self.journald else None,
        }))

    def _our_cgroups(self) -> list[Path]:
        return [h / self.cgroup_rel for h in _hierarchies() if (h / self.cgroup_rel).is_dir()]

    def _kill_cgroup_members(self) -> None:
        for _ in range(50):
            pids: set[int] = set()
            for top in self._our_cgroups():
                for group in _walk_bottom_up(top):
                    with contextlib.suppress(OSError):
                        pids.update(int(p) for p in (group / "cgroup.procs").read_text().split())
            pids.discard(os.getpid())
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def _remove_cgroups(self) -> None:
        for top in self._our_cgroups():
            for group in _walk_bottom_up(top):
                with contextlib.suppress(OSError):
                    group.rmdir()
        for hierarchy in _hierarchies():  # then user-<uid>.slice and user.slice, if empty
            for parent in (self.cgroup_rel.parent, self.cgroup_rel.parent.parent):
                with contextlib.suppress(OSError):
                    (hierarchy / parent).rmdir()

    def _remove_booted_marker(self) -> None:
        """The marker only has to fool the manager's start-up check; don't leave it behind."""
        if self._created_marker:
            with contextlib.suppress(OSError):
                BOOTED_MARKER.rmdir()
            self._created_marker = False


def _is_mount_point(path: Path) -> bool:
    """From the mount table: ``os.path.ismount`` misses a bind mount within one file system."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    return any(line.split()[4] == str(path) for line in lines if len(line.split()) > 4)


def _is_process(pid: int, names: set[str]) -> bool:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return comm in names


def _kill_and_wait(pid: int, timeout: float = 5.0) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)


def main(argv: list[str]) -> int:
    """``start`` leaves a manager running (prints its env), ``stop`` tears it down."""
    uid = int(argv[2]) if len(argv) > 2 else None
    manager = UserManager(uid)
    if argv[1:2] == ["start"]:
        manager.start()
        # Detach: the manager outlives this process; `stop` finds it through the state file.
        for key, value in manager.env.items():
            print(f"export {key}={value}")
        return 0
    if argv[1:2] == ["stop"]:
        manager.cleanup_leftovers()
        return 0
    print("usage: python -m runa.testing.usermanager start|stop [UID]", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
