"""More units than cores take turns on the cores (nexlify.system.core_share): whose turn it is,
waiting with a fake clock, the worker pool's wiring, and results that do not depend on it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from nexlify.commands.preflight_checks import check_cores
from nexlify.pipeline import backends
from nexlify.pipeline.runs import train_unit
from nexlify.system import core_share
from nexlify.system.core_share import CoreShare, has_turn
from nexlify.train.config import run_config_from_dict
from tests.test_backends import assert_same_outcomes, tiny_tasks

# ---- whose turn ---------------------------------------------------------------------------------


def test_has_turn_by_hand() -> None:
    running = [0, 1, 2]
    # Slice 0: positions 0 and 1; slice 1: 1 and 2; slice 2: 2 and 0 (wrapping); then again.
    assert [has_turn(s, running, 2, 0) for s in running] == [True, True, False]
    assert [has_turn(s, running, 2, 1) for s in running] == [False, True, True]
    assert [has_turn(s, running, 2, 2) for s in running] == [True, False, True]
    assert [has_turn(s, running, 2, 3) for s in running] == [True, True, False]
    # Positions, not slot numbers: slots 1 and 4 of a pool of 5.
    assert [has_turn(s, [1, 3, 4], 2, 1) for s in (1, 3, 4)] == [False, True, True]
    # No more units than cores: nobody waits.
    assert all(has_turn(s, [0, 2], 2, k) for s in (0, 2) for k in range(5))
    assert has_turn(0, [0], 1, 7)


@pytest.mark.parametrize(("n", "cores"), [(3, 2), (5, 2), (4, 3), (7, 4), (2, 1)])
def test_every_slice_has_exactly_cores_units_and_turns_are_fair(n: int, cores: int) -> None:
    running = list(range(n))
    turns = dict.fromkeys(running, 0)
    for k in range(3 * n):
        having = [s for s in running if has_turn(s, running, cores, k)]
        assert len(having) == cores
        for s in having:
            turns[s] += 1
    assert set(turns.values()) == {3 * cores}  # each unit: cores/n of the slices


# ---- waiting, with a fake clock -----------------------------------------------------------------


class FakeTime:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def views(n: int, cores: int, fake: FakeTime) -> list[CoreShare]:
    """``n`` workers' views of one share (as each worker process would rebuild it)."""
    flags, next_slot, cores, _ = CoreShare.create(n, cores).handles()
    shares = [CoreShare(flags, next_slot, cores, slice_seconds=0.5, clock=fake.clock,
                        sleep=fake.sleep) for _ in range(n)]  # fmt: skip
    assert [s.claim() for s in shares] == list(range(n))
    return shares


def test_a_unit_waits_until_its_slice() -> None:
    fake = FakeTime(0.1)  # slice 0
    a, b, c = views(3, 2, fake)
    for s in (a, b, c):
        s.running(True)
    a.wait_for_turn()
    b.wait_for_turn()
    assert fake.sleeps == [] and fake.now == 0.1
    c.wait_for_turn()  # not in slice 0: sleeps to the start of slice 1, where it has the turn
    assert fake.now == pytest.approx(0.5, abs=1e-3)
    assert c.waited_seconds == pytest.approx(0.4, abs=1e-3)
    a.wait_for_turn()  # slice 1 is b's and c's: a waits for slice 2
    assert fake.now == pytest.approx(1.0, abs=1e-3)
    assert a.summary()["waited_seconds"] == pytest.approx(0.5, abs=1e-2)


def test_a_unit_that_had_its_turn_checks_again_only_in_the_next_slice() -> None:
    fake = FakeTime(0.0)
    a, b, c = views(3, 2, fake)
    for s in (a, b, c):
        s.running(True)
    a.wait_for_turn()  # slice 0: a's
    fake.now = 0.49
    a.wait_for_turn()  # same slice: no wait
    assert fake.sleeps == []
    fake.now = 0.51  # slice 1: b and c
    a.wait_for_turn()
    assert fake.now == pytest.approx(1.0, abs=1e-3)


def test_when_units_finish_the_others_stop_waiting() -> None:
    fake = FakeTime(0.1)
    a, b, c = views(3, 2, fake)
    for s in (a, b, c):
        s.running(True)
    b.running(False)  # two left on two cores
    c.wait_for_turn()
    a.wait_for_turn()
    assert fake.sleeps == []
    idle = views(4, 1, fake)
    idle[3].running(True)  # alone on one core: slots 0-2 idle do not count
    for k in range(4):
        fake.now = 0.5 * k + 0.1
        idle[3].wait_for_turn()
    assert fake.sleeps == []


def test_misuse_is_refused() -> None:
    flags, next_slot, _, _ = CoreShare.create(1, 1).handles()
    share = CoreShare(flags, next_slot, 1)
    with pytest.raises(RuntimeError, match="before claim"):
        share.running(True)
    share.claim()
    with pytest.raises(RuntimeError, match="more worker processes than its 1 slots"):
        CoreShare(flags, next_slot, 1).claim()
    with pytest.raises(ValueError, match="cores must be at least 1"):
        CoreShare(flags, next_slot, 0)
    with pytest.raises(ValueError, match="slice_seconds must be positive"):
        CoreShare(flags, next_slot, 1, slice_seconds=0)


# ---- in a worker pool ---------------------------------------------------------------------------


def share_seen(task: Any) -> dict[str, Any]:
    """What a unit sees of its worker's share (runs in a worker process)."""
    share = core_share.current()
    if share is None:
        return {"share": None}
    share.wait_for_turn()
    return {"share": share.cores, "slot": share.slot, "running": share.running_slots(),
            "pid": os.getpid()}  # fmt: skip


def test_workers_beyond_the_cores_get_a_share() -> None:
    with backends.ProcessBackend(3, cores=2) as runner:
        assert runner.shares_cores and runner.running_at_once == 2
        seen = runner.map_units(share_seen, list(range(6)))
    assert {s["share"] for s in seen} == {2}
    assert {s["slot"] for s in seen} <= {0, 1, 2}
    for s in seen:
        assert s["slot"] in s["running"]  # its own flag is up while it runs
    slots_by_pid: dict[int, set[int]] = {}
    for s in seen:
        slots_by_pid.setdefault(s["pid"], set()).add(s["slot"])
    assert all(len(slots) == 1 for slots in slots_by_pid.values())  # one slot per worker
    assert len({next(iter(v)) for v in slots_by_pid.values()}) == len(slots_by_pid)


@pytest.mark.parametrize(
    ("workers", "cores", "threads", "share"), [(2, 2, 1, True), (3, 2, 1, False), (2, 4, 2, True)]
)
def test_no_share_when_the_cores_suffice_or_it_is_off(
    workers: int, cores: int, threads: int, share: bool
) -> None:
    runner = backends.ProcessBackend(workers, cores=cores, threads=threads, share_cores=share)
    with runner:
        assert not runner.shares_cores and runner.running_at_once == workers
        assert runner.map_units(share_seen, [0, 1]) == [{"share": None}] * 2
    # Threads count: 2 units of 2 threads fill 4 cores; 3 of them would share.
    assert backends.ProcessBackend(3, cores=4, threads=2).running_at_once == 2


@pytest.mark.slow
def test_units_taking_turns_give_the_same_results(tmp_path: Path) -> None:
    inline = [train_unit(t) for t in tiny_tasks(tmp_path / "a", n=3)]
    with backends.ProcessBackend(3, cores=2) as runner:
        shared = runner.map_units(train_unit, tiny_tasks(tmp_path / "b", n=3))
    assert_same_outcomes(inline, shared)
    assert all(o["core_share"]["cores"] == 2 for o in shared)
    assert all(o["core_share"]["waited_seconds"] >= 0 for o in shared)
    assert all("core_share" not in o for o in inline)


def test_preflight_reports_units_taking_turns() -> None:
    cores = os.cpu_count() or 1
    many = {"pipeline": {"initial_runs": cores + 1, "workers": cores + 1}}
    shared = check_cores(run_config_from_dict(many))
    assert shared.status == "pass" and "taking turns" in shared.detail
    alone = run_config_from_dict({"pipeline": {**many["pipeline"], "share_cores": False}})
    assert check_cores(alone).status == "warn"
    assert "compete for CPU" in check_cores(alone).detail


# ---- the worker fork server starts before the data is loaded ------------------------------------


def test_train_starts_its_worker_processes_early_only_when_it_uses_them() -> None:
    from nexlify.commands.train import uses_worker_processes

    def config(**pipeline: Any) -> Any:
        return run_config_from_dict({"pipeline": pipeline})

    assert uses_worker_processes(config(initial_runs=3))
    assert not uses_worker_processes(config(initial_runs=1))
    assert uses_worker_processes(config(initial_runs=1, validation="walk-forward"))
    assert not uses_worker_processes(config(initial_runs=3, workers=1))
    assert not uses_worker_processes(config(initial_runs=3, backend="inprocess"))
    assert not uses_worker_processes(config(initial_runs=3, backend="ray"))


@pytest.mark.skipif(
    "forkserver" not in __import__("multiprocessing").get_all_start_methods(),
    reason="no fork server on this platform (workers are spawned)",
)
def test_prestarted_workers_fork_from_the_same_server() -> None:
    from multiprocessing import forkserver

    assert backends.prestart_workers()
    server = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    assert server is not None
    with backends.ProcessBackend(2, cores=2) as runner:
        parents = runner.map_units(parent_pid, [0, 1])
    assert set(parents) == {server}
    assert forkserver._forkserver._forkserver_pid == server  # type: ignore[attr-defined]


def parent_pid(task: Any) -> int:
    return os.getppid()


def test_the_command_guesses_from_its_arguments_whether_to_start_workers_first() -> None:
    from nexlify.cli import may_train_in_workers

    assert may_train_in_workers(["train"])
    assert may_train_in_workers(["train", "--quick-test", "--workers", "2"])
    assert may_train_in_workers(["train", "--resume", "out"])  # the saved config decides later
    assert not may_train_in_workers([])
    assert not may_train_in_workers(["backtest", "--model", "m.pt"])
    assert not may_train_in_workers(["train", "--help"])
    assert not may_train_in_workers(["train", "--backend", "inprocess"])
    assert not may_train_in_workers(["train", "--backend=ray"])
    assert not may_train_in_workers(["train", "--workers", "1"])
    assert not may_train_in_workers(["train", "--initial-runs=1"])


def test_one_rule_decides_who_takes_turns() -> None:
    from nexlify.pipeline.placement import cores_at_once, takes_turns

    assert cores_at_once(1, 2) == 2 and cores_at_once(2, 4) == 2 and cores_at_once(4, 2) == 1
    assert takes_turns("process", 3, 1, True, cores=2)
    assert not takes_turns("process", 2, 1, True, cores=2)
    assert takes_turns("process", 2, 2, True, cores=2)  # 2 units of 2 threads on 2 cores
    assert not takes_turns("process", 3, 1, False, cores=2)
    assert not takes_turns("ray", 3, 1, True, cores=2)
    for workers, threads, cores in [(3, 1, 2), (2, 2, 2), (2, 1, 2), (5, 2, 8)]:
        runner = backends.ProcessBackend(workers, threads=threads, cores=cores)
        assert runner.shares_cores == takes_turns("process", workers, threads, True, cores)
