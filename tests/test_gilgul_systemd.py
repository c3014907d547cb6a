"""gilgul under a real ``systemd --user``: the rendered units, faults, and what comes back.

One stack for the module (keeper, splinfer on the tiny model, the demo daemon as a test
subject, gilgul), started with ``systemctl --user start runa.target`` from units rendered by
``runa.gilgul.units`` and run with this checkout's ``runa`` (the harness drop-in). The tests
run in file order and share it, as a person's stack would live through these faults; each
asserts gilgul's journal events (reasons, incarnations, order) and that the bus kept its
contents. Deadlines are generous; the numbers that matter are in docs/gilgul.md.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import SURVIVOR, write_fault_stack
from support import WHISPER_OFF, remove_segments, runa, wait_for

from runa import registry
from runa.gilgul import units
from runa.testing.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.real_systemd

RUNA = str(Path(sys.executable).with_name("runa"))
WATCHED = ("splinter", "splinfer", "demo")
NO_TIETO = f"""
# tieto's own restart test is tests/tieto/test_tieto_systemd.py.
[components.tieto]
enabled = false

# whisper's is tests/whisper/test_stack.py: this stack has no embedding model.
{WHISPER_OFF}
# coven's is tests/coven/test_daemon_systemd.py.
[components.coven]
enabled = false

# alethia's is tests/alethia/test_daemon_systemd.py.
[components.alethia]
enabled = false

# threadwell's is tests/threadwell/test_systemd.py (its key needs coven).
[components.threadwell]
enabled = false
"""


class Stack:
    """The running test stack: how to reach it and look at it."""

    def __init__(self, root: Path, env: dict[str, str], systemd_env: dict[str, str],
                 unit_dir: Path) -> None:
        self.root = root
        self.env = env  # for `runa` clients
        self.systemd_env = systemd_env
        self.unit_dir = unit_dir
        self.since = time.time()

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["systemctl", "--user", *args], env=self.systemd_env,
                              capture_output=True, text=True, check=check, timeout=30)

    def show(self, name: str, prop: str) -> str:
        return self.systemctl("show", registry.unit_name(name), "-p", prop,
                              "--value").stdout.strip()

    def main_pid(self, name: str) -> int:
        return int(self.show(name, "MainPID") or 0)

    def active(self, name: str) -> bool:
        return self.show(name, "ActiveState") == "active"

    def wait_replaced(self, name: str, old_pid: int, timeout: float = 30) -> int:
        """Wait until ``name`` is active again under a new main process; its pid."""
        def back() -> int:
            pid = self.main_pid(name)
            return pid if pid and pid != old_pid and self.active(name) else 0

        return int(wait_for(back, timeout, f"{name} to be active under a new pid"))  # type: ignore[arg-type]

    def ask(self) -> subprocess.CompletedProcess[str]:
        return runa("ask", "--temp", "0", "-n", "4", "--timeout", "20", "hello", env=self.env)

    def survivor(self) -> str:
        return runa("bus", "get", SURVIVOR[0], env=self.env).stdout.strip()

    def events(self, *, identifier: str = "runa-gilgul", since: float | None = None,
               **matches: str) -> list[dict[str, object]]:
        """Journal records of ``identifier`` since ``since`` (default: the stack's start)."""
        from systemd import journal

        reader = journal.Reader()
        reader.add_match(SYSLOG_IDENTIFIER=identifier)
        for key, value in matches.items():
            reader.add_match(**{key: value})
        reader.seek_realtime(self.since if since is None else since)
        return list(reader)

    def event_names(self, component: str, since: float) -> list[tuple[str, str]]:
        return [(str(r["RUNA_EVENT"]), str(r.get("RUNA_REASON", "")))
                for r in self.events(RUNA_COMPONENT=component, since=since)]

    def write_dropin(self, name: str, text: str) -> Path:
        path = self.unit_dir / f"{registry.unit_name(name)}.d/20-test.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.systemctl("daemon-reload")
        return path

    def remove_dropin(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.systemctl("daemon-reload")


@pytest.fixture(scope="module")
def stack(user_manager) -> Iterator[Stack]:
    root = user_manager.runtime_dir / f"runa-gilgul-test-{os.getpid()}"  # outside PrivateTmp=
    shutil.rmtree(root, ignore_errors=True)
    write_fault_stack(root, splinfer_extra="idle_unload_s = 2.0\n",
                      components_extra=NO_TIETO)
    model = write_tiny_gguf(root / "tiny.gguf")
    common = {"RUNA_STACK": f"g{os.getpid()}", "RUNA_SYSCONFDIR": str(root / "etc"),
              "XDG_CONFIG_HOME": str(root / "home/.config"),
              "XDG_DATA_HOME": str(root / "home/.local/share"),
              "XDG_STATE_HOME": str(root / "home/.local/state"),
              "RUNA_SPLINFER_MODEL": str(model)}
    unit_dir = user_manager.unit_dir
    rendered = units.render(registry.load(root / "etc"))
    for name in rendered:  # what an interrupted earlier run may have left
        shutil.rmtree(unit_dir / f"{name}.d", ignore_errors=True)
    shutil.rmtree(user_manager.runtime_dir / "runa/gilgul", ignore_errors=True)
    units.write(rendered, unit_dir)
    # A PYTHONPATH naming a checkout reaches the units too: they run the code under test.
    passed = {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}
    user_manager.use_runa(RUNA, {**common, **passed, "RUNA_LOG_TARGET": "journal"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNA_")}
    stack = Stack(root, {**env, **common, "HOME": str(root / "home")},
                  {**os.environ, **user_manager.env}, unit_dir)
    try:
        stack.systemctl("daemon-reload")
        stack.systemctl("start", "runa.target")
        wait_for(lambda: all(stack.active(n) for n in (*WATCHED, "gilgul")), 60,
                 "every unit of runa.target to be active")
        yield stack
    finally:
        stack.systemctl("stop", "runa.target", check=False)
        for name in rendered:
            stack.systemctl("reset-failed", name, check=False)
            (unit_dir / name).unlink(missing_ok=True)
            shutil.rmtree(unit_dir / f"{name}.d", ignore_errors=True)
        user_manager.forget_runa()
        stack.systemctl("daemon-reload", check=False)
        remove_segments(common)
        shutil.rmtree(root, ignore_errors=True)


def test_the_target_brings_up_the_stack_and_runa_ask_answers(stack: Stack) -> None:
    answer = stack.ask()
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip()
    assert runa("bus", "set", *SURVIVOR, env=stack.env).returncode == 0
    reconciled = wait_for(lambda: stack.events(RUNA_EVENT="reconciled"), 10,
                          "gilgul's reconciliation")
    # gilgul starts first (the components are ordered after it), finds their start jobs
    # queued and leaves them to systemd.
    assert reconciled[0]["RUNA_QUEUED"] == "splinter,splinfer,demo"  # type: ignore[index]
    assert reconciled[0]["RUNA_STARTING"] == ""  # type: ignore[index]
    # The configured WatchdogSec= reached the unit as gilgul's drop-in.
    assert stack.show("splinfer", "WatchdogUSec") == "2s"
    assert "50-runa-limits.conf" in stack.show("splinfer", "DropInPaths")


def test_sigkill_of_splinfer_is_restarted_at_once_with_the_next_incarnation(
        stack: Stack) -> None:
    since = time.time()
    pid = stack.main_pid("splinfer")
    os.kill(pid, signal.SIGKILL)
    # Asked at once: the question waits in splinfer's queue for the next incarnation.
    asked = subprocess.Popen([sys.executable, "-m", "runa", "ask", "--temp", "0", "-n", "4",
                              "--timeout", "30", "hello"], env=stack.env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stack.wait_replaced("splinfer", pid)
    out, err = asked.communicate(timeout=60)
    assert (asked.returncode, err) == (0, "") and out.strip(), err
    events = stack.event_names("splinfer", since)
    assert events[:3] == [("failed", "signal"), ("restart", "signal"), ("running", "")]
    failed, restart = (stack.events(RUNA_COMPONENT="splinfer", RUNA_EVENT=e, since=since)[0]
                       for e in ("failed", "restart"))
    assert float(failed["RUNA_DELAY_S"]) == 0 and failed["RUNA_DECISION"] == "restart"  # type: ignore[arg-type]
    incarnation = int(restart["RUNA_INCARNATION"])  # type: ignore[arg-type]
    assert incarnation == int(failed["RUNA_INCARNATION"]) + 1  # type: ignore[arg-type]
    # The new process knows its incarnation (gilgul's environment file) and heartbeats it.
    starting = stack.events(identifier="runa-splinfer", RUNA_EVENT="starting", since=since)
    assert starting[-1]["RUNA_INCARNATION"] == str(incarnation)
    assert stack.survivor() == SURVIVOR[1]


def test_sigstop_is_a_watchdog_kill_then_a_backed_off_restart(stack: Stack) -> None:
    since = time.time()
    pid = stack.main_pid("splinfer")
    os.kill(pid, signal.SIGSTOP)
    stack.wait_replaced("splinfer", pid)
    assert stack.ask().returncode == 0
    assert stack.event_names("splinfer", since)[:3] == [
        ("failed", "watchdog"), ("restart", "watchdog"), ("running", "")]
    failed = stack.events(RUNA_COMPONENT="splinfer", RUNA_EVENT="failed", since=since)[0]
    # The second failure in the window: the first backoff step.
    assert failed["RUNA_FAILURES"] == "2" and float(failed["RUNA_DELAY_S"]) == 0.5  # type: ignore[arg-type]
    assert stack.survivor() == SURVIVOR[1]


def test_the_keeper_killed_comes_back_and_the_bus_keeps_its_contents(stack: Stack) -> None:
    since = time.time()
    pid = stack.main_pid("splinter")
    os.kill(pid, signal.SIGKILL)
    stack.wait_replaced("splinter", pid)
    assert stack.event_names("splinter", since)[:2] == [("failed", "signal"),
                                                        ("restart", "signal")]
    assert stack.survivor() == SURVIVOR[1]
    assert stack.ask().returncode == 0


def test_a_component_alive_but_silent_is_restarted_for_no_heartbeat(stack: Stack) -> None:
    # This incarnation of the demo stops writing demo:health one second after READY while
    # its loop (and the systemd watchdog) carry on; the drop-in is gone before gilgul
    # restarts it, so the next incarnation is healthy.
    dropin = stack.write_dropin(
        "demo", "[Service]\nEnvironment=RUNA_DEMO_HEARTBEAT_STOP_AFTER_S=1\n")
    stack.systemctl("restart", registry.unit_name("demo"))
    mute_pid = stack.main_pid("demo")
    stack.remove_dropin(dropin)
    since = time.time()
    stack.wait_replaced("demo", mute_pid)
    # gilgul logs "running" once the new incarnation is active, a moment after the new pid.
    def four_events() -> list | None:
        found = stack.event_names("demo", since)
        return found if len(found) >= 4 else None

    events = wait_for(four_events, 30, "gilgul to log the restarted demo as running")
    assert events[:4] == [("no_heartbeat", "no-heartbeat"), ("failed", "no-heartbeat"),
                          ("restart", "no-heartbeat"), ("running", "")]
    silent = stack.events(identifier="runa-demo", RUNA_EVENT="heartbeat_stopped",
                          since=since - 10)
    assert silent and str(silent[-1]["_PID"]) == str(mute_pid)
    assert stack.survivor() == SURVIVOR[1]


def test_gilgul_killed_is_restarted_by_systemd_and_reconciles(stack: Stack) -> None:
    since = time.time()
    gilgul = stack.main_pid("gilgul")
    splinfer = stack.main_pid("splinfer")
    os.kill(gilgul, signal.SIGKILL)
    os.kill(splinfer, signal.SIGKILL)  # dies while nobody watches
    stack.wait_replaced("gilgul", gilgul)
    stack.wait_replaced("splinfer", splinfer)
    reconciled = wait_for(lambda: stack.events(RUNA_EVENT="reconciled", since=since), 10,
                          "the new gilgul's reconciliation")
    assert reconciled[0]["RUNA_STARTING"] == "splinfer"  # type: ignore[index]
    assert stack.event_names("splinfer", since)[:2] == [("failed", "signal"),
                                                        ("restart", "signal")]
    # systemd's restart counter is gilgul's own incarnation, in its events and heartbeat.
    incarnation = int(stack.show("gilgul", "NRestarts"))
    assert incarnation >= 1
    assert reconciled[0]["RUNA_INCARNATION"] == str(incarnation)  # type: ignore[index]
    wait_for(lambda: f'"incarnation": {incarnation}' in runa("bus", "get", "gilgul:health",
                                                            env=stack.env).stdout,
             10, "gilgul's heartbeat with its incarnation")
    assert stack.ask().returncode == 0
    assert stack.survivor() == SURVIVOR[1]


def test_a_crash_loop_backs_off_then_escalates_to_the_policy_script(stack: Stack) -> None:
    # Every new demo incarnation now dies at start-up on a bad setting (exit 78).
    dropin = stack.write_dropin("demo", "[Service]\nEnvironment=RUNA_DEMO_TICK_S=0\n")
    since = time.time()
    os.kill(stack.main_pid("demo"), signal.SIGKILL)
    escalated = wait_for(lambda: stack.events(RUNA_COMPONENT="demo", RUNA_EVENT="escalated",
                                              since=since), 30, "the escalation")
    failed = stack.events(RUNA_COMPONENT="demo", RUNA_EVENT="failed", since=since)
    assert [f["RUNA_REASON"] for f in failed] == ["signal", "exit-code", "exit-code",
                                                  "exit-code"]
    assert [float(f["RUNA_DELAY_S"]) for f in failed] == [0, 0.5, 1, 0]  # type: ignore[arg-type]
    assert [f["RUNA_DECISION"] for f in failed] == ["restart"] * 3 + ["hold"]
    gaps = [b["__REALTIME_TIMESTAMP"] - a["__REALTIME_TIMESTAMP"]  # type: ignore[operator]
            for a, b in itertools.pairwise(failed)]
    assert gaps[1].total_seconds() >= 0.5 and gaps[2].total_seconds() >= 1.0
    record = escalated[0]  # type: ignore[index]
    assert record["RUNA_REASON"] == "exit-code" and record["RUNA_FAILURES"] == "4"
    assert record["PRIORITY"] == 3  # error
    wait_for(lambda: (stack.root / "escalations").exists(), 10, "the policy script")
    assert (stack.root / "escalations").read_text() == \
        f"demo exit-code {record['RUNA_INCARNATION']}\n"
    time.sleep(1.0)  # held: gilgul does not try again
    assert stack.show("demo", "ActiveState") == "failed"
    # A person fixes it and starts it by hand; gilgul watches it again.
    stack.remove_dropin(dropin)
    stack.systemctl("start", registry.unit_name("demo"))
    wait_for(lambda: stack.events(RUNA_COMPONENT="demo", RUNA_EVENT="running", since=since),
             10, "gilgul to see the demo running again")


def test_runa_audit_lists_the_fault_tests_incarnations_with_their_reasons(
        stack: Stack) -> None:
    # The faults above, read back as a person would: SIGKILL, SIGSTOP (watchdog), the keeper
    # killed, the silent demo, and the crash loop with its escalation.
    out = runa("audit", "--json", "--mode", "systemd", "--since", f"@{stack.since}",
               env=stack.env)
    assert out.returncode == 0, out.stderr
    items = json.loads(out.stdout)["incarnations"]
    assert all(i["mode"] == "systemd" for i in items)

    def reasons(component: str, field: str) -> list[str]:
        return [i[field] for i in items if i["component"] == component and i[field]]

    assert reasons("splinfer", "start_reason")[-3:] == ["signal", "watchdog", "signal"]
    assert "signal" in reasons("splinter", "start_reason")
    assert reasons("demo", "end_reason")[-5:] == ["no-heartbeat", "signal", "exit-code",
                                                  "exit-code", "exit-code"]
    held = [i for i in items if i["component"] == "demo" and i["decision"] == "hold"]
    assert held and held[-1]["escalated"]


def test_a_memory_max_from_the_configuration_is_applied_and_enforced(stack: Stack) -> None:
    limit = stack.root / "etc/conf.d/50-memory.toml"
    limit.parent.mkdir(exist_ok=True)
    limit.write_text('[components.splinfer]\nmemory_max = "8M"\n')
    since = time.time()
    stack.systemctl("reload", registry.unit_name("gilgul"))
    wait_for(lambda: stack.show("splinfer", "MemoryMax") == str(8 << 20), 15,
             "MemoryMax=8M on runa-splinfer.service")
    pid = stack.main_pid("splinfer")
    os.kill(pid, signal.SIGKILL)
    # A new incarnation cannot even import llama.cpp in 8 MiB: the kernel kills it.
    wait_for(lambda: len(stack.events(RUNA_COMPONENT="splinfer", RUNA_EVENT="failed",
                                      since=since)) >= 2, 30, "splinfer killed under 8M")
    failed = stack.events(RUNA_COMPONENT="splinfer", RUNA_EVENT="failed", since=since)
    assert failed[1]["RUNA_REASON"] in ("signal", "oom-kill")
    assert failed[1]["RUNA_EXIT_STATUS"] == str(int(signal.SIGKILL))
    limit.unlink()
    stack.systemctl("reload", registry.unit_name("gilgul"))
    wait_for(lambda: stack.show("splinfer", "MemoryMax") == str(512 << 20), 15,
             "MemoryMax back to 512M")
    if not stack.active("splinfer"):
        stack.systemctl("start", registry.unit_name("splinfer"), check=False)
    wait_for(lambda: stack.active("splinfer"), 30, "splinfer back under 512M")
    assert stack.ask().returncode == 0


def test_a_malformed_configuration_or_registry_is_refused_whole(stack: Stack) -> None:
    dropin = stack.unit_dir / "runa-splinfer.service.d/50-runa-limits.conf"
    before = dropin.read_text()
    bad = stack.root / "etc/conf.d/60-bad.toml"
    bad.write_text('[components.splinfer]\nmemory_max = "lots"\n[components.splinter]\n'
                   'memory_max = "64M"\n')
    since = time.time()
    stack.systemctl("reload", registry.unit_name("gilgul"))
    refused = wait_for(lambda: stack.events(RUNA_EVENT="reload_refused", since=since), 10,
                       "gilgul to refuse the reload")
    message = str(refused[0]["MESSAGE"])  # type: ignore[index]
    assert str(bad) in message and "components.splinfer.memory_max" in message
    assert dropin.read_text() == before  # nothing half-applied: splinter's 64M neither
    assert stack.show("splinter", "MemoryMax") == str(512 << 20)
    assert stack.active("gilgul")
    bad.unlink()

    broken = stack.root / "etc/components.d/60-bad.toml"
    broken.write_text("[components.splinfer.hardening]\nProtectSytem = 'strict'\n")
    since = time.time()
    gilgul = stack.main_pid("gilgul")
    stack.systemctl("restart", registry.unit_name("gilgul"), check=False)
    wait_for(lambda: stack.show("gilgul", "ActiveState") == "failed", 20,
             "gilgul to stop on the bad registry (exit 78, not restarted)")
    assert stack.show("gilgul", "ExecMainStatus") == "78"
    lines = subprocess.run(["journalctl", "--no-pager", "-o", "cat", f"_PID={gilgul}",
                            "+", "_SYSTEMD_USER_UNIT=runa-gilgul.service", "--since",
                            f"@{since:.0f}"], capture_output=True, text=True).stdout
    assert str(broken) in lines and "components.splinfer.hardening.ProtectSytem" in lines
    assert dropin.read_text() == before
    broken.unlink()
    stack.systemctl("start", registry.unit_name("gilgul"))
    wait_for(lambda: stack.active("gilgul"), 20, "gilgul back with the fixed registry")


def test_the_idle_stack_uses_at_most_one_percent_of_a_core(stack: Stack) -> None:
    wait_for(lambda: "unloaded" in stack.show("splinfer", "StatusText"), 30,
             "splinfer to unload its idle model")
    pids = [stack.main_pid(name) for name in ("splinter", "splinfer", "gilgul")]
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu_seconds() -> float:
        total = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / ticks

    start_cpu, start = cpu_seconds(), time.monotonic()
    time.sleep(10)
    share = (cpu_seconds() - start_cpu) / (time.monotonic() - start)
    print(f"idle stack: {share * 100:.2f}% of one core over 10 s")
    assert share <= 0.01


def test_the_secrets_broker_knows_a_unit_s_process_from_a_person_s(stack: Stack) -> None:
    """gilgul's broker names a requester by its cgroup: the same 'runa secret set' is the
    person's from a shell (allowed; this stack has no coven) and demo's once the kernel puts
    it in runa-demo.service (refused NOT_AUTHORIZED, and logged)."""
    # the session's runtime directory, where the stack's bus key is, as in a login session
    env = {**stack.env, "XDG_RUNTIME_DIR": stack.systemd_env["XDG_RUNTIME_DIR"]}
    person = subprocess.run([sys.executable, "-m", "runa", "secret", "set", "x"], input=b"v",
                            env=env, capture_output=True, timeout=30)
    assert person.returncode == 69 and b"coven is not running" in person.stderr, person.stderr
    since = time.time()
    asking = subprocess.Popen([sys.executable, "-m", "runa", "secret", "set", "x"],
                              env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    demo = Path(f"/proc/{stack.main_pid('demo')}/cgroup").read_text().splitlines()
    where = next(line.split(":", 2)[2] for line in demo if ":name=systemd:" in line)
    Path(f"/sys/fs/cgroup/systemd{where}/cgroup.procs").write_text(str(asking.pid))
    _, err = asking.communicate(b"v", timeout=30)
    assert asking.returncode == 77 and b"only a person" in err, err
    refused = wait_for(lambda: stack.events(RUNA_EVENT="secret_refused", since=since), 10,
                       "the refusal in gilgul's journal")
    assert refused[0]["RUNA_REQUESTER"] == "demo"  # type: ignore[index]
    assert int(refused[0]["RUNA_REQUESTER_PID"]) == asking.pid  # type: ignore[index,arg-type]
