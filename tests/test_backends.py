"""Execution backends: the same outcomes on every backend, clear unit failures, clean stops,
worker sizing and GPU placement (with a faked GPU count), and the Ray backend on a local
cluster (marked ``ray``; skipped only where Ray is not installed)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from nexlify.agent.dqn import read_checkpoint
from nexlify.commands.options import add_train_options, overrides_from_args
from nexlify.data.sources import synthetic_market
from nexlify.errors import ConfigError
from nexlify.pipeline import backends, placement
from nexlify.pipeline.auto_retrain import run_initial_phase
from nexlify.pipeline.backends import UnitError, make_backend
from nexlify.pipeline.data_choice import split_market
from nexlify.pipeline.placement import (
    default_workers,
    phase_time,
    place_devices,
    plan_devices,
    units_at_once,
)
from nexlify.pipeline.runs import UnitTask
from nexlify.train.config import PipelineConfig, RunConfig, load_run_config, run_config_from_dict

TINY: dict[str, dict[str, Any]] = {
    "data": {"pairs": ["BTC/USDT"], "validation_days": 10, "synthetic_days": 60},
    "market": {"env": {"episode_length": 48}},
    "agent": {"hidden_sizes": [32], "batch_size": 32, "learning_starts": 64,
              "buffer_size": 4000, "target_update_interval": 50},
    "train": {"num_envs": 4, "eval_every": 4, "device": "cpu", "torch_threads": 1},
    "pipeline": {"initial_runs": 2, "initial_episodes": 8},
}  # fmt: skip


class RecordingProgress:
    def __init__(self) -> None:
        self.updates: list[tuple[str, int, int]] = []

    def update(self, label: str, done: int, total: int) -> None:
        self.updates.append((label, done, total))


def tiny_tasks(out: Path, n: int = 2, **pipeline: Any) -> list[UnitTask]:
    config = run_config_from_dict({**TINY, "pipeline": {**TINY["pipeline"], **pipeline}})
    market = synthetic_market(config.data.pairs, "1h", seed=0, days=config.data.synthetic_days)
    train, val, _ = split_market(market, config.data)
    return [
        UnitTask(label=f"run_{k + 1}", seed=config.pipeline.seed_of_run(k), episodes=8,
                 config=config, train_data=train, val_data=val,
                 model_dir=str(out / f"run_{k + 1}"), threads=1, logger_name="test.backends")
        for k in range(n)
    ]  # fmt: skip


def weights(outcome: dict[str, Any]) -> dict[str, torch.Tensor]:
    checkpoint = read_checkpoint(Path(outcome["model_path"]))
    state: dict[str, torch.Tensor] = checkpoint["model_state_dict"]
    return state


def assert_same_outcomes(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert [o["label"] for o in a] == [o["label"] for o in b]
    assert [o["val_score"] for o in a] == [o["val_score"] for o in b]
    assert json.dumps([o["history"] for o in a]) == json.dumps([o["history"] for o in b])
    for x, y in zip(a, b, strict=True):
        wx, wy = weights(x), weights(y)
        assert wx.keys() == wy.keys()
        assert all(torch.equal(wx[k], wy[k]) for k in wx)


# ---- units used by the failure and interrupt tests (top level: workers import them) -------------


def fail_on_second(task: UnitTask) -> str:
    if task.label == "run_2":
        raise ValueError("the replay buffer is on fire")
    return task.label


def bad_setting(task: UnitTask) -> str:
    raise ConfigError("train.device: 'tpu' is invalid")


def quick_or_stuck(task: UnitTask) -> int:
    if task.label == "run_1":
        return os.getpid()
    time.sleep(120)  # stopped by the backend long before this ends
    return os.getpid()


# ---- same outcomes on every backend -------------------------------------------------------------


@pytest.mark.slow
def test_inprocess_and_process_backends_give_identical_runs(tmp_path: Path) -> None:
    inline = run_initial_phase(tiny_tasks(tmp_path / "a"), 1, lambda o: None,
                               backend="inprocess")  # fmt: skip
    progress = RecordingProgress()
    done: list[str] = []
    spawned = run_initial_phase(tiny_tasks(tmp_path / "b"), 2, lambda o: done.append(o["label"]),
                                progress, backend="process")  # fmt: skip
    assert_same_outcomes(inline, spawned)
    assert len({o["pid"] for o in spawned}) == 2 and os.getpid() not in {o["pid"] for o in spawned}
    assert sorted(done) == ["run_1", "run_2"]
    assert ("run_1", 8, 8) in progress.updates and ("run_2", 8, 8) in progress.updates
    # The saved models are the same files, byte for byte.
    for x, y in zip(inline, spawned, strict=True):
        assert Path(x["model_path"]).name == Path(y["model_path"]).name
        assert Path(x["model_path"]).read_bytes() == Path(y["model_path"]).read_bytes()


@pytest.mark.parametrize("name", ["inprocess", "process"])
def test_a_failing_unit_is_named_and_stops_the_phase(name: str, tmp_path: Path) -> None:
    tasks = tiny_tasks(tmp_path, n=3)
    with make_backend(name, 2) as runner, pytest.raises(UnitError) as caught:
        runner.map_units(fail_on_second, tasks)
    assert "run_2 failed: ValueError: the replay buffer is on fire" in str(caught.value)
    assert caught.value.label == "run_2"
    assert caught.value.exit_code == 5  # a training error


def test_a_unit_error_keeps_the_exit_code_of_a_nexlify_error(tmp_path: Path) -> None:
    with make_backend("process", 2) as runner, pytest.raises(UnitError) as caught:
        runner.map_units(bad_setting, tiny_tasks(tmp_path))
    assert "failed: ConfigError: train.device: 'tpu' is invalid" in str(caught.value)
    assert caught.value.label in ("run_1", "run_2")  # whichever failed first
    assert caught.value.exit_code == ConfigError.exit_code


def test_an_interrupt_stops_the_workers(tmp_path: Path) -> None:
    """Ctrl-C in the parent (here: raised from on_done) stops running units within the grace
    period instead of waiting for them, and leaves no worker behind."""
    runner = backends.ProcessBackend(2)

    def interrupt(pid: int) -> None:
        raise KeyboardInterrupt

    started = time.monotonic()
    with runner, pytest.raises(KeyboardInterrupt):
        runner.map_units(quick_or_stuck, tiny_tasks(tmp_path), interrupt)
    assert time.monotonic() - started < 60  # the stuck unit sleeps 120 s
    assert runner._pool is None


def threads_after_training_steps(threads: int) -> tuple[int, int]:
    """In a worker: set a unit's threads, step the (numba-parallel) env and the optimizer."""
    import numba
    import numpy as np

    from nexlify.config import MarketConfig
    from nexlify.market.env import VecMarketEnv
    from nexlify.pipeline.runs import set_threads

    set_threads(threads)
    env = VecMarketEnv(synthetic_market(["BTC/USDT"], "1h", seed=0, days=60), MarketConfig(), 4)
    env.reset(seed=0)
    params = [torch.nn.Parameter(torch.ones(64, 64))]
    optimizer = torch.optim.Adam(params, fused=True)
    params[0].grad = torch.ones(64, 64)
    for _ in range(5):
        env.step(np.zeros(4, dtype=np.int64))
        optimizer.step()
    return torch.get_num_threads(), numba.get_num_threads()


def test_a_worker_process_keeps_the_units_thread_count() -> None:
    """Regression: numba's OpenMP pool, started in a fresh worker after torch's thread count
    was set, reset torch (same libgomp) to every core, so units on a core each ran their ops
    on all cores, spinning against each other (three seeds took 17x one seed's time)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=backends.worker_context()) as pool:
        assert pool.submit(threads_after_training_steps, 1).result() == (1, 1)


def test_process_backend_with_one_worker_runs_in_this_process() -> None:
    assert isinstance(make_backend("process", 1), backends.InProcessBackend)
    assert isinstance(make_backend("process", 2), backends.ProcessBackend)
    with pytest.raises(ConfigError, match=r"pipeline\.backend: 'gpu' is invalid"):
        make_backend("gpu", 2)


# ---- sizing -------------------------------------------------------------------------------------


def test_phase_time_by_hand() -> None:
    assert phase_time(3, 2, 2) == 2.0  # two at once, then the third alone
    assert phase_time(3, 3, 2) == 1.5  # three share two cores
    assert phase_time(4, 4, 2) == 2.0
    assert phase_time(1, 1, 2) == 1.0


def test_default_workers_finishes_equal_units_soonest() -> None:
    assert default_workers(1, 2) == 1
    assert default_workers(2, 2) == 2
    assert default_workers(3, 2) == 3  # 1.5 unit-times taking turns, against 2 (two, then one)
    assert default_workers(4, 2) == 2  # 2 either way: fewer processes
    assert default_workers(5, 2) == 3  # 2.5 against 3 (2 + 2 + 1) and 3 (4, then 1)
    assert default_workers(3, 8) == 3
    assert default_workers(50, 4) == 4  # 5 would predict 12.5 against 13: under 10%, not worth it
    assert default_workers(6, 4) == 6  # 1.5 against 2
    assert default_workers(3, 1) == 1  # one core: nothing to gain
    # Without turns, one per core (the OS scheduler alone made oversubscribed units slower).
    assert default_workers(3, 2, share_cores=False) == 2
    assert default_workers(5, 2, share_cores=False) == 2
    for n in range(1, 12):
        for cores in (1, 2, 3, 4, 8):
            w = default_workers(n, cores)
            assert min(n, cores) <= w <= max(min(n, 2 * cores), 1)
            fewest = phase_time(n, min(n, cores), cores)
            assert w == min(n, cores) or phase_time(n, w, cores) <= 0.9 * fewest


def test_units_at_once_per_backend() -> None:
    assert units_at_once("inprocess", 4, 3) == 1
    assert units_at_once("process", 2, 3) == 2
    assert units_at_once("process", 3, 3) == 3  # oversubscribing on request
    assert units_at_once("process", 8, 3) == 3
    assert units_at_once("ray", 0, 7) == 7
    assert units_at_once("ray", 2, 7) == 2
    assert units_at_once("process", 0, 1) == 1
    cores = os.cpu_count() or 1
    assert units_at_once("process", 0, 2 * cores + 1) == default_workers(2 * cores + 1, cores)
    assert units_at_once("process", 0, cores + 1, share_cores=False) == cores


# ---- placement ----------------------------------------------------------------------------------


def test_units_go_round_robin_over_the_gpus() -> None:
    assert place_devices(5, "auto", 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert place_devices(3, "cuda", 4) == ["cuda:0", "cuda:1", "cuda:2"]
    assert place_devices(2, "cuda:1", 4) == ["cuda:1", "cuda:1"]  # explicit: as asked
    assert place_devices(2, "cpu", 4) == ["cpu", "cpu"]
    assert place_devices(2, "auto", 0) == ["auto", "auto"]  # no GPU: as configured


def test_placement_with_faked_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = [t for t in tiny_tasks(tmp_path, n=3)]
    auto = [placement.on_device(t, "auto") for t in tasks]
    monkeypatch.setattr(placement, "cuda_device_count", lambda: 2)
    monkeypatch.setattr(placement, "smallest_gpu_bytes", lambda n: 3 * placement.UNIT_GPU_BYTES)
    placed, workers = plan_devices(auto, 8, "process")
    assert [t.config.train.device for t in placed] == ["cuda:0", "cuda:1", "cuda:0"]
    assert workers == 6  # 2 GPUs x 3 units that fit each
    monkeypatch.setattr(placement, "smallest_gpu_bytes", lambda n: placement.UNIT_GPU_BYTES)
    assert plan_devices(auto, 8, "process")[1] == 2  # one unit per GPU fits
    assert plan_devices(tasks, 8, "process") == (tasks, 8)  # device cpu: untouched
    assert plan_devices(auto, 8, "ray")[0] == auto  # Ray places GPU tasks itself
    monkeypatch.setattr(placement, "cuda_device_count", lambda: 0)
    assert plan_devices(auto, 2, "process") == (auto, 2)  # no GPU: degrade to as configured


# ---- configuration ------------------------------------------------------------------------------


def test_backend_settings_validate_and_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pipeline\.backend: 'threads' is invalid"):
        PipelineConfig(backend="threads")
    with pytest.raises(ConfigError, match=r"pipeline\.ray_address: 'nowhere' is invalid"):
        PipelineConfig(ray_address="nowhere")
    for address in ("local", "auto", "ray://head:10001", "10.0.0.1:6379", None):
        assert PipelineConfig(backend="ray", ray_address=address).ray_address == address
    with pytest.raises(ConfigError, match=r"pipeline\.share_cores: 'yes' is invalid"):
        PipelineConfig(share_cores="yes")  # type: ignore[arg-type]
    config = run_config_from_dict({"pipeline": {"backend": "ray", "ray_address": "auto",
                                                "workers": 3, "share_cores": False}})  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert load_run_config(path) == config
    assert RunConfig().pipeline.backend == "process"


def test_backend_flags() -> None:
    parser = argparse.ArgumentParser()
    add_train_options(parser)
    args = parser.parse_args(["--backend", "ray", "--ray-address", "auto", "--workers", "3"])
    assert overrides_from_args(args)["pipeline"] == {"backend": "ray", "ray_address": "auto",
                                                     "workers": 3}  # fmt: skip
    with pytest.raises(SystemExit):
        parser.parse_args(["--backend", "threads"])
    args = parser.parse_args(["--no-share-cores"])
    assert overrides_from_args(args)["pipeline"] == {"share_cores": False}


def test_ray_backend_without_ray_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'nexlify\[ray\]'"):
        make_backend("ray", 2)
    with pytest.raises(ConfigError, match=r"pip install 'nexlify\[ray\]'"):
        backends.require_backend("ray")


# ---- Ray ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray() -> Any:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_ray_runs_the_multi_start_phase_like_the_process_backend(
    local_ray: Any, tmp_path: Path
) -> None:
    progress = RecordingProgress()
    on_ray = run_initial_phase(tiny_tasks(tmp_path / "ray"), 2, lambda o: None, progress,
                               backend="ray")  # fmt: skip
    local = run_initial_phase(tiny_tasks(tmp_path / "process"), 2, lambda o: None,
                              backend="process")  # fmt: skip
    assert_same_outcomes(on_ray, local)
    assert os.getpid() not in {o["pid"] for o in on_ray}
    assert ("run_1", 8, 8) in progress.updates and ("run_2", 8, 8) in progress.updates
    assert local_ray.is_initialized()  # a connection made by the caller is left open

    with make_backend("ray", 2) as runner, pytest.raises(UnitError) as caught:
        runner.map_units(fail_on_second, tiny_tasks(tmp_path / "fail", n=2))
    assert "run_2 failed: ValueError: the replay buffer is on fire" in str(caught.value)


# ---- tuning: ask/tell batches give the same study on every backend ------------------------------


def tiny_tune_job(tmp_path: Path, backend: str) -> Any:
    from nexlify.pipeline.tune import TuneJob

    config = run_config_from_dict(TINY)
    market = synthetic_market(config.data.pairs, "1h", seed=0, days=config.data.synthetic_days)
    train, val, _ = split_market(market, config.data)
    return TuneJob(base=config.to_dict(), train_data=train, val_data=val,
                   storage=f"sqlite:///{tmp_path / backend}.db", study_name="s", episodes=4,
                   trials=4, tune_risk=False, seed=7, backend=backend)  # fmt: skip


@pytest.mark.slow
def test_a_tuning_study_is_the_same_on_every_backend(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    from nexlify.pipeline.tune import run_tuning

    studies = {}
    for backend in ("inprocess", "process"):
        job = tiny_tune_job(tmp_path, backend)
        summary = run_tuning(job, 2, tmp_path / backend)
        assert summary["trials"] == 4
        studies[backend] = optuna.load_study(study_name="s", storage=job.storage)
    a, b = (studies[k].trials for k in ("inprocess", "process"))
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.value for t in a] == [t.value for t in b]
    assert [t.intermediate_values for t in a] == [t.intermediate_values for t in b]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in a)
