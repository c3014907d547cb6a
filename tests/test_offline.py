"""Runa works with no network at all, and its stack opens no network socket (issue 15).

A stack of this test's own (its own ``RUNA_STACK`` and runtime directory, beside any
other) is started by ``runa up --detach`` inside a fresh network namespace that holds only
the loopback interface, under ``strace -f``, so every ``socket(2)`` and ``connect(2)`` of
the supervisor and of every component it starts is recorded from the first to the last.
In that namespace the default model answers a question and an ingested folder is
recalled; the trace shows that the stack created no socket but ``AF_UNIX`` (loopback
``AF_INET``/``AF_INET6`` connections would be allowed, for a local web front end).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import isolated_env, remove_segments, wait_for

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

DOCS = {
    "insurance.md": "The car insurance renews every March. The insurer is Lähi-Vakuutus and "
                    "the yearly premium is 412 euros.",
    "boat.md": "The sailing boat is moored at the south harbour, pier 4. Its winter storage "
               "starts in October.",
}
SOCKET = re.compile(r"^(\d+)\s+socket\((\w+)")
CONNECT = re.compile(r"^(\d+)\s+connect\(\d+, \{sa_family=(\w+)(.*?)\}")
ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6?, "([^"]+)"')
LOOPBACK_FAMILIES = {"AF_INET", "AF_INET6"}


class OfflineStack:
    """The stack, started in its own network namespace under strace; commands run there."""

    def __init__(self, env: dict[str, str], root: Path) -> None:
        self.env = env
        self.trace = root / "socket.trace"
        self.up_output = root / "up.out"
        with open(self.up_output, "wb") as out:
            self.tracer = subprocess.Popen(
                ["unshare", "--net", "sh", "-c",
                 'ip link set lo up && exec strace -f --seccomp-bpf -qq '
                 '-e trace=socket,connect -e signal=none -o "$0" "$@"',
                 str(self.trace), sys.executable, "-m", "runa", "up", "--detach"],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        self.namespace = f"/proc/{self.tracer.pid}/ns/net"

    def wait_up(self, timeout: float) -> None:
        wait_for(lambda: "is up" in self.up_output.read_text()
                 or self.tracer.poll() is not None, timeout, "runa up in the namespace")
        log = self.env["XDG_RUNTIME_DIR"] + "/runa/supervisor.log"
        assert "is up" in self.up_output.read_text(), (
            self.up_output.read_text() + (Path(log).read_text() if Path(log).exists() else ""))

    def runa(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``runa ARGS`` inside the namespace, as a person there would run it."""
        return subprocess.run(["nsenter", f"--net={self.namespace}", sys.executable, "-m",
                               "runa", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def components(self) -> dict[str, int]:
        status = json.loads(self.runa("status", "--json").stdout)
        return {c["name"]: c["pid"] for c in status["components"]}

    def down(self) -> None:
        self.runa("down", timeout=120)
        try:
            self.tracer.wait(60)  # strace ends with the last process it traces
        except subprocess.TimeoutExpired:
            self.tracer.kill()
            self.tracer.wait()
        remove_segments(self.env)


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory, real_model: Path,
            minilm_gguf: Path) -> Iterator[OfflineStack]:
    if os.geteuid() != 0:
        pytest.skip("a network namespace needs root")
    missing = [tool for tool in ("unshare", "nsenter", "strace", "ip") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (tools/setup installs strace)")
    root = tmp_path_factory.mktemp("offline")
    env = {**isolated_env(root), "RUNA_SPLINFER_MODEL": str(real_model),
           "RUNA_SPLINFER_CTX_SIZE": "2048", "RUNA_TIETO_EMBEDDING_MODEL": str(minilm_gguf),
           "RUNA_LOG_TARGET": "stderr"}
    stack = OfflineStack(env, root)
    try:
        stack.wait_up(300)
        yield stack
    finally:
        stack.down()


def test_the_stack_runs_in_a_namespace_with_only_loopback(offline: OfflineStack) -> None:
    pids = offline.components()
    assert {"splinter", "splinfer", "tieto"} <= set(pids), pids
    ours = os.readlink("/proc/self/ns/net")
    theirs = os.readlink(f"/proc/{pids['splinfer']}/ns/net")
    assert theirs == os.readlink(offline.namespace) and theirs != ours
    interfaces = [line.split(":")[0].strip() for line in
                  Path(f"/proc/{pids['splinfer']}/net/dev").read_text().splitlines()[2:]]
    assert interfaces == ["lo"]


def test_it_chats_and_recalls_offline(offline: OfflineStack, tmp_path: Path) -> None:
    ask = offline.runa("ask", "--temp", "0", "-n", "12", "Say hello to the harbour.")
    assert ask.returncode == 0, ask.stderr
    assert ask.stdout.strip()

    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    ingest = offline.runa("ingest", "--topic", "home", str(docs))
    assert ingest.returncode == 0, ingest.stderr
    recall = offline.runa("recall", "--json", "--topic", "home",
                          "When does the car insurance renew?")
    assert recall.returncode == 0, recall.stderr
    hits = json.loads(recall.stdout)["hits"]
    assert hits and hits[0]["source"].endswith("insurance.md"), hits


def families(trace: str) -> tuple[dict[str, set[int]], list[str]]:
    """(socket families created, with the threads that created them; connections that
    left the machine's loopback, as trace lines)."""
    created: dict[str, set[int]] = {}
    outside = []
    for line in trace.splitlines():
        if match := SOCKET.match(line):
            created.setdefault(match[2], set()).add(int(match[1]))
        elif (match := CONNECT.match(line)) and match[2] in LOOPBACK_FAMILIES:
            address = ADDRESS.search(match[3])
            if address is None or not ipaddress.ip_address(address[1] or address[2]).is_loopback:
                outside.append(line)
    return created, outside


def test_the_stack_opens_no_socket_but_unix_ones(offline: OfflineStack) -> None:
    """Runs last in this module's order: the trace so far covers start-up, chat, ingest
    and recall; what the stack does while stopping is checked by reading it at the end."""
    threads = {name: {int(tid) for tid in os.listdir(f"/proc/{pid}/task")}
               for name, pid in offline.components().items()}
    offline.down()
    created, outside = families(offline.trace.read_text())
    assert created, "strace recorded no socket(2) call: the trace did not cover the stack"
    for name in ("splinter", "splinfer", "tieto"):  # each told its supervisor it was ready
        assert threads[name] & created.get("AF_UNIX", set()), (name, created)
    assert set(created) <= {"AF_UNIX", *LOOPBACK_FAMILIES}, created
    assert outside == []
