"""splinfer uses fewer threads while other programs keep CPUs busy, and answers the same."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runa.protocol.params import ContextParams, SamplingParams
from runa.splinfer.cpushare import CpuShare, machine_busy_seconds
from runa.splinfer.engine import Engine
from runa.testing import FakeClock


class Counters:
    """The two clocks CpuShare reads, moved by the test: machine-wide busy and our own."""

    def __init__(self) -> None:
        self.clock = FakeClock(0.0)
        self.machine = self.own = 0.0
        self.reads = 0

    def read_machine(self) -> float:
        self.reads += 1
        return self.machine

    def run(self, seconds: float, *, ours: float, others: float) -> None:
        """``seconds`` pass with us using ``ours`` CPUs and other programs ``others``."""
        self.clock.advance(seconds)
        self.own += ours * seconds
        self.machine += (ours + others) * seconds


def share(c: Counters, cpus: int = 2) -> CpuShare:
    return CpuShare(cpus, machine=c.read_machine, own=lambda: c.own, clock=c.clock)


def test_a_quiet_machine_gets_every_cpu() -> None:
    c = Counters()
    s = share(c)
    c.run(1.0, ours=2.0, others=0.1)
    assert s.threads() == 2


def test_another_busy_program_takes_a_thread_and_gives_it_back() -> None:
    c = Counters()
    s = share(c)
    c.run(1.0, ours=1.0, others=1.0)
    assert s.threads() == 1 and s.others == pytest.approx(1.0)
    c.run(1.0, ours=1.0, others=0.0)  # it ended
    assert s.threads() == 2


def test_our_own_threads_never_count_as_others() -> None:
    c = Counters()
    s = share(c)
    c.run(1.0, ours=2.0, others=0.0)  # both our threads spinning: the machine is full
    assert s.threads() == 2


def test_never_fewer_than_one_thread() -> None:
    c = Counters()
    s = share(c, cpus=4)
    c.run(1.0, ours=0.5, others=6.0)
    assert s.threads() == 1


def test_counters_are_read_once_per_interval() -> None:
    c = Counters()
    s = share(c)
    first = c.reads
    c.run(0.1, ours=1.0, others=1.0)
    assert s.threads() == 2 and c.reads == first  # too soon: the last answer
    c.run(0.5, ours=1.0, others=1.0)
    assert s.threads() == 1 and c.reads == first + 1


def test_sampled_while_idle_a_finished_build_no_longer_counts() -> None:
    c = Counters()
    s = share(c)
    c.run(600.0, ours=0.0, others=1.0)  # a build kept one CPU busy for ten minutes
    assert s.threads() == 1  # the idle daemon's sample (Engine.watch_cpu)
    c.run(1.0, ours=0.0, others=0.0)  # it ended; a question arrives a second later
    assert s.threads() == 2


def test_proc_stat_counts_only_the_given_cpus(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  300 0 100 900 50 0 0 0 0 0\n"
                    "cpu0 100 0 50 450 25 0 0 0 0 0\n"
                    "cpu1 200 0 50 450 25 5 5 10 30 5\n"  # guest time is inside user
                    "intr 12345\n")
    hz = os.sysconf("SC_CLK_TCK")
    assert machine_busy_seconds({0}, str(stat)) == pytest.approx(150 / hz)
    assert machine_busy_seconds({1}, str(stat)) == pytest.approx(270 / hz)
    assert machine_busy_seconds({0, 1}, str(stat)) == pytest.approx(420 / hz)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable CPUs")
def test_a_real_busy_process_is_seen() -> None:
    s = CpuShare.for_this_process(interval=0.0)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        s.threads()  # start the window with the hog already running
        time.sleep(1.0)
        assert s.threads() < s.cpus and s.others > 0.5, s.others
    finally:
        hog.kill()
        hog.wait()


class Alternating:
    """A CpuShare stand-in that changes its mind at every decode."""

    others = 0.0

    def __init__(self) -> None:
        self.counts = itertools.cycle([1, 2])
        self.asked = 0

    def threads(self) -> int:
        self.asked += 1
        return next(self.counts)


GREEDY = SamplingParams(temp=0.0, top_k=1, n_predict=40)
AUTO = ContextParams(ctx_size=512, batch_size=512, ubatch_size=512, threads=-1,
                     flash_attn=False)


def _answer(model: Path, **engine_args) -> list[int]:
    with Engine(model, AUTO, cpu_count=lambda: 2, **engine_args) as engine:
        prompt = engine.tokenize("Once upon a time, in a lighthouse by the sea,")
        return list(engine.generate(engine.new_sequence(), prompt, GREEDY).tokens)


def test_changing_thread_counts_mid_answer_changes_no_token(tiny_model: Path) -> None:
    fixed = _answer(tiny_model, adapt_threads=False)
    alternating = Alternating()
    changing = _answer(tiny_model, cpu_share=alternating)
    assert alternating.asked >= GREEDY.n_predict  # asked before every decode
    assert changing == fixed and len(fixed) == GREEDY.n_predict


def test_the_idle_engine_keeps_sampling(tiny_model: Path) -> None:
    alternating = Alternating()
    with Engine(tiny_model, AUTO, cpu_count=lambda: 2, cpu_share=alternating) as engine:
        engine.watch_cpu()
        assert alternating.asked == 1


def test_explicit_threads_are_kept(tiny_model: Path) -> None:
    alternating = Alternating()
    fixed = ContextParams(ctx_size=512, threads=2, flash_attn=False)
    with Engine(tiny_model, fixed, cpu_share=alternating) as engine:
        engine.generate(engine.new_sequence(), engine.tokenize("Hello"), GREEDY)
        assert alternating.asked == 0 and engine.threads_now == 2
