"""Secrets: what a ``get`` through gilgul's broker to coven costs, and an unlock (issue 21).

One private stack under ``runa up`` (splinter, coven, and the supervisor with gilgul's
secrets broker; splinfer, tieto and whisper disabled in the isolated sysconfdir's
``components.d``), a 32-byte secret in a key-file vault, then:

1. ``secret_get``: ``get`` through the broker with ``runa.secret_client`` (what ``runa
   secret`` uses) in this process, after a warm-up: sealed query on the main bus, the
   kernel naming the requester (this process: the person, not a component), policy, sealed
   forward to coven on the coven bus, the vault read and decrypted, the sealed answer back.
   Baselines: ``vault_get`` — ``Vault.get`` in this process on a copy of the vault (the
   floor the bus path adds to) — and ``cli_get`` — ``runa secret get`` as a subprocess
   (Python's start-up included: what a shell script pays).
2. ``unlock``: the vault moved to a passphrase (``rotate --passphrase``, Argon2id with the
   shipped parameters), then ``lock`` and the client's ``unlock`` through the stack, timed;
   baseline ``vault_unlock`` — ``Vault.unlock`` in this process on a copy. Coven's
   ``VmHWM`` after the unlocks is ``unlock_peak_rss_mib``.

    python bench/secrets_bench.py [--quick]

Writes bench/results/secrets.json and prints the table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from cleanup import guarded, stop_stack  # noqa: E402
from common import Result, Target, median, percentile, report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runa import registry, stackbus  # noqa: E402
from runa.components import load_config  # noqa: E402
from runa.coven import SHIPPED_ARGON2, Location, Vault  # noqa: E402
from runa.crypto.sealed import BusKey, key_path  # noqa: E402
from runa.paths import Paths  # noqa: E402
from runa.protocol import secret_wire as wire  # noqa: E402
from runa.secret_client import BrokerUnavailable, SecretFault, SecretsClient  # noqa: E402
from runa.supervisor import state as state_file  # noqa: E402

NAME = "bench.key"
VALUE = bytes(range(32))
PASSPHRASE = b"correct horse battery staple"
WARMUP = 50
#: What the path of a secret needs: the keeper, coven and gilgul (under ``runa up``, the
#: supervisor, which runs the broker). Every other shipped component is disabled.
KEEP = ("splinter", "coven", "gilgul")
QUICK = {"gets": 300, "cli_gets": 10, "unlocks": 3}
FULL = {"gets": 2000, "cli_gets": 30, "unlocks": 7}


def disabled(shipped: registry.Registry) -> str:
    """A ``components.d`` file disabling every component of ``shipped`` not in KEEP."""
    return "".join(f"[components.{name}]\nenabled = false\n"
                   for name in shipped.names if name not in KEEP)


def stack_env(root: Path) -> dict[str, str]:
    """An isolated ``runa`` environment under ``root``: its own stack name and layers, and
    only the components a secret's path needs."""
    (root / "etc/components.d").mkdir(parents=True)
    (root / "etc/components.d/10-bench-off.toml").write_text(disabled(registry.load()))
    (root / "run").mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNA_")}
    return env | {"RUNA_STACK": f"s{os.getpid()}", "RUNA_SYSCONFDIR": str(root / "etc"),
                  "HOME": str(root / "home"), "XDG_CONFIG_HOME": str(root / "home/.config"),
                  "XDG_DATA_HOME": str(root / "home/.local/share"),
                  "XDG_STATE_HOME": str(root / "home/.local/state"),
                  "XDG_RUNTIME_DIR": str(root / "run")}


def start_stack(cleanups: ExitStack) -> dict[str, str]:
    """``runa up`` of a private stack, stopped and removed by ``cleanups``."""
    root = Path(tempfile.mkdtemp(prefix="runa-bench-secrets-"))
    cleanups.callback(shutil.rmtree, root, ignore_errors=True)
    env = stack_env(root)
    cleanups.callback(stop_stack, env)
    up = subprocess.run([sys.executable, "-m", "runa", "up", "--detach"], env=env,
                        capture_output=True, text=True, timeout=120)
    if up.returncode != 0:
        raise RuntimeError(f"runa up failed: {up.stderr}")
    return env


@contextmanager
def secrets_client(env: dict[str, str]) -> Iterator[SecretsClient]:
    """A client of the stack's broker, as ``runa secret`` opens one."""
    paths = Paths.for_stack(env["RUNA_STACK"], env)
    with stackbus.connect(load_config(paths, env), env["RUNA_STACK"]) as bus:
        key = BusKey.load_or_create(key_path(paths.runtime))
        try:
            with SecretsClient(bus, key, client_name="bench-secrets") as client:
                yield client
        finally:
            key.close()


def wait_for_coven(client: SecretsClient, timeout: float = 60.0) -> None:
    """Until coven answers the broker (``runa up`` returns before coven may be ready)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.call("status", timeout=2.0).wipe()
            return
        except (BrokerUnavailable, SecretFault):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def timed_ms(action: Callable[[], object], rounds: int) -> list[float]:
    """Wall time of each of ``rounds`` calls, in milliseconds."""
    out = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        action()
        out.append((time.perf_counter_ns() - start) / 1e6)
    return out


def broker_get(client: SecretsClient) -> None:
    answer = client.call("get", name=NAME)
    try:
        if bytes(answer.value) != VALUE:
            raise RuntimeError("the broker answered another value")
    finally:
        answer.wipe()


def vault_get(vault: Vault) -> None:
    with vault.get(NAME) as value:
        if len(value) != len(VALUE):
            raise RuntimeError("the vault answered another value")


def cli_get(env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "runa", "secret", "get", NAME], env=env,
                          capture_output=True, timeout=60)
    if done.returncode != 0 or done.stdout != VALUE:
        raise RuntimeError(f"runa secret get failed: {done.stderr.decode(errors='replace')}")


def vault_copy(env: dict[str, str], into: Path) -> Vault:
    """A copy of the stack's vault (file and keys) under ``into``, opened in this process."""
    source = Location.for_stack(Paths.for_stack(env["RUNA_STACK"], env))
    shutil.copytree(source.vault.parent, into)
    return Vault(Location.in_directory(into))


def coven_pid(env: dict[str, str]) -> int:
    current = state_file.read(Path(env["XDG_RUNTIME_DIR"]) / "runa/supervisor.json") or {}
    for component in current.get("components", []):
        if component["name"] == "coven" and component["state"] == "running":
            return int(component["pid"] or 0)
    raise RuntimeError("coven is not running under the supervisor")


def peak_rss_mib(pid: int) -> float:
    """``VmHWM`` of ``pid`` (its resident peak since it started), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmHWM for pid {pid}")


def latency_metrics(name: str, samples: list[float]) -> dict[str, float]:
    """``<name>_p50_ms``, ``_p90_ms`` and ``_p99_ms`` of millisecond samples."""
    return {f"{name}_p{q}_ms": round(percentile(samples, q), 3) for q in (50, 90, 99)}


def stack_unlocks(client: SecretsClient, rounds: int) -> list[float]:
    def unlock() -> None:
        client.call("lock").wipe()
        start = time.perf_counter_ns()
        client.call("unlock", value=bytearray(PASSPHRASE), timeout=60.0).wipe()
        out.append((time.perf_counter_ns() - start) / 1e6)

    out: list[float] = []
    for _ in range(rounds):
        unlock()
    return out


def vault_unlocks(vault: Vault, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        vault.lock()
        start = time.perf_counter_ns()
        vault.unlock(bytearray(PASSPHRASE))
        out.append((time.perf_counter_ns() - start) / 1e6)
    return out


def main(cleanups: ExitStack) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['gets']} gets, {QUICK['unlocks']} unlocks")
    args = parser.parse_args()
    rounds = QUICK if args.quick else FULL
    began = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="runa-bench-vault-"))
    cleanups.callback(shutil.rmtree, scratch, ignore_errors=True)
    result = Result("secrets", {
        "quick": args.quick, **rounds, "warmup": WARMUP, "value_bytes": len(VALUE),
        "argon2": {"opslimit": SHIPPED_ARGON2.opslimit, "memlimit": SHIPPED_ARGON2.memlimit},
        "stack": "runa up: splinter, coven, the supervisor running the broker; disabled: "
                 + ", ".join(n for n in registry.load().names if n not in KEEP),
        "requester": "the bench process: the person (the kernel holder of its reply queue "
                     "is no supervised child)",
        "loadavg_start": round(os.getloadavg()[0], 2)})
    env = start_stack(cleanups)
    with secrets_client(env) as client:
        wait_for_coven(client)
        client.call("set", name=NAME, value=bytearray(VALUE)).wipe()
        timed_ms(lambda: broker_get(client), WARMUP)
        gets = timed_ms(lambda: broker_get(client), rounds["gets"])
        vault = vault_copy(env, scratch / "keyfile")
        vault.unlock()
        timed_ms(lambda: vault_get(vault), WARMUP)
        floor = timed_ms(lambda: vault_get(vault), rounds["gets"])
        cli = timed_ms(lambda: cli_get(env), rounds["cli_gets"])
        pid = coven_pid(env)
        rss_before = peak_rss_mib(pid)
        client.call("rotate", value=bytearray(PASSPHRASE), extra={wire.MODE: wire.PASSPHRASE},
                    timeout=60.0).wipe()
        unlocks = stack_unlocks(client, rounds["unlocks"])
        broker_get(client)  # unlocked again, the same value
        rss_after = peak_rss_mib(pid)
        in_process = vault_unlocks(vault_copy(env, scratch / "passphrase"), rounds["unlocks"])
    result.metrics.update(latency_metrics("secret_get", gets))
    result.metrics["unlock_ms"] = round(median(unlocks), 1)
    result.metrics["unlock_peak_rss_mib"] = rss_after
    result.baselines.update(latency_metrics("vault_get", floor))
    result.baselines["cli_get_p50_ms"] = round(median(cli), 1)
    result.baselines["vault_unlock_ms"] = round(median(in_process), 1)
    result.params.update({
        "coven_peak_rss_mib_before_argon2": rss_before,
        "unlock_samples_ms": [round(v, 1) for v in unlocks],
        "vault_unlock_samples_ms": [round(v, 1) for v in in_process],
        "cli_get_samples_ms": [round(v, 1) for v in cli],
        "loadavg_end": round(os.getloadavg()[0], 2),
        "duration_s": round(time.monotonic() - began, 1)})
    result.targets = [Target("secret_get_p50_ms", "<=", 5)]
    return report(result)


if __name__ == "__main__":
    with guarded("bench/secrets_bench.py") as cleanups:
        sys.exit(main(cleanups))
