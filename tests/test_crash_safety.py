"""Crash safety: resume after an interruption, divergence rollback, no partial files."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from nexlify.agent.dqn import read_checkpoint
from nexlify.data.sources import synthetic_market
from nexlify.errors import ConfigError, InterruptedRunError, TrainingError
from nexlify.pipeline import auto_retrain
from nexlify.pipeline.auto_retrain import SUMMARY_FILE, run_pipeline
from nexlify.pipeline.data_choice import split_market
from nexlify.pipeline.runs import OUTCOME_FILE
from nexlify.train.resume import RESUME_FILE, ResumePoint
from nexlify.train.trainer import Trainer
from tests.test_pipeline import TINY, tiny_config

VOLATILE = {"timings", "resumed", "seconds", "pid"}
"""Summary keys that differ between two runs with the same seeds (clock and process ids)."""


def comparable(summary: dict[str, Any], out_dir: Path) -> Any:
    """The summary without clock/pid fields, with paths relative to the run folder."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, str):
            return value.replace(str(out_dir), "<run>")
        return value

    return strip(json.loads(json.dumps(summary, default=str, allow_nan=True)))


def same_checkpoint(a: Path, b: Path) -> bool:
    """Whether two checkpoint files hold equal values and bit-identical tensors."""

    def equal(x: Any, y: Any) -> bool:
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
        if isinstance(x, dict):
            return (
                isinstance(y, dict) and x.keys() == y.keys() and all(equal(x[k], y[k]) for k in x)
            )
        if isinstance(x, (list, tuple)):
            return type(x) is type(y) and len(x) == len(y) and all(map(equal, x, y))
        return bool(x == y)

    return equal(read_checkpoint(a), read_checkpoint(b))


def _market(config: Any) -> Any:
    return synthetic_market(config.data.pairs, "1h", seed=0, days=config.data.synthetic_days)


def _run(config: Any, resume: bool = False) -> dict[str, Any]:
    out = Path(config.pipeline.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return run_pipeline(config, _market(config), logging.getLogger("test"), out, resume=resume)


def _saved_summary(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / SUMMARY_FILE).read_text()))


def test_resume_after_ctrl_c_reuses_finished_units_and_matches_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    whole = tiny_config(tmp_path / "whole")
    _run(whole)
    expected = comparable(_saved_summary(tmp_path / "whole" / "out"), tmp_path / "whole" / "out")

    config = tiny_config(tmp_path / "cut")
    out = Path(config.pipeline.output_dir)
    real_train_unit = auto_retrain.train_unit
    calls: list[str] = []

    def ctrl_c_in_the_second_iteration(task: Any, progress: Any = None) -> dict[str, Any]:
        calls.append(task.label)
        if task.label == "iteration_2":
            raise KeyboardInterrupt
        return real_train_unit(task, progress)

    monkeypatch.setattr(auto_retrain, "train_unit", ctrl_c_in_the_second_iteration)
    with pytest.raises(InterruptedRunError, match="--resume"):
        _run(config)
    assert not _saved_summary(out)["pipeline_complete"]
    assert (out / "retraining" / "iteration_1" / OUTCOME_FILE).is_file()

    calls.clear()

    def recording(task: Any, progress: Any = None) -> dict[str, Any]:
        calls.append(task.label)
        return real_train_unit(task, progress)

    monkeypatch.setattr(auto_retrain, "train_unit", recording)
    with caplog.at_level(logging.INFO, logger="test"):
        resumed = _run(config, resume=True)
    assert calls == ["iteration_2"]  # the two initial runs and iteration 1 were not redone
    assert resumed["resumed"]["units_reused"] == ["run_1", "run_2", "iteration_1"]
    assert "run_1: finished before" in caplog.text
    assert comparable(_saved_summary(out), out) == expected
    assert same_checkpoint(out / "final_model.pt", tmp_path / "whole" / "out" / "final_model.pt")


def test_resume_retrains_a_unit_whose_model_is_corrupt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tiny_config(tmp_path, pipeline={"max_iterations": 0, "ensemble_size": 0})
    out = Path(config.pipeline.output_dir)
    first = _run(config)
    model = Path(first["initial_runs"][1]["model_path"])
    good = model.read_bytes()
    model.write_bytes(good[: len(good) // 2])  # a disk that lost the tail of the file
    summary = _saved_summary(out)
    summary["pipeline_complete"] = False  # as if the run had stopped right after it
    (out / SUMMARY_FILE).write_text(json.dumps(summary))
    with caplog.at_level(logging.INFO, logger="test"):
        again = _run(config, resume=True)
    assert again["resumed"]["units_reused"] == ["run_1"]
    assert "run_2: " in caplog.text and "training the unit again" in caplog.text
    assert model.read_bytes() == good  # retrained to the same bytes: same seed, same result


def test_resume_refuses_other_data_and_leaves_a_complete_run_alone(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, pipeline={"max_iterations": 0, "ensemble_size": 0})
    out = Path(config.pipeline.output_dir)
    done = _run(config)

    def stamps() -> dict[Path, int]:  # the log gains a line saying there is nothing to do
        return {p: p.stat().st_mtime_ns for p in out.rglob("*")
                if p.is_file() and p.name != "training.log"}  # fmt: skip

    before = stamps()
    assert _run(config, resume=True)["pipeline_complete"] == done["pipeline_complete"]
    assert stamps() == before
    assert "already complete" in (out / "training.log").read_text()

    other = synthetic_market(config.data.pairs, "1h", seed=1, days=config.data.synthetic_days)
    with pytest.raises(ConfigError, match="the data differ"):
        run_pipeline(config, other, logging.getLogger("test"), out, resume=True)


def test_stale_temp_files_of_a_cut_write_are_removed_on_resume(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, pipeline={"max_iterations": 0, "ensemble_size": 0})
    out = Path(config.pipeline.output_dir)
    _run(config)
    summary = _saved_summary(out)
    summary["pipeline_complete"] = False
    (out / SUMMARY_FILE).write_text(json.dumps(summary))
    stale = out / "initial_runs" / "run_1" / ".model_return0.00.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    _run(config, resume=True)
    assert not stale.exists()


def _trainer(tmp_path: Path, **train: Any) -> tuple[Trainer, Any]:
    config = tiny_config(tmp_path, train=train)
    train_data, val_data, _ = split_market(_market(config), config.data)
    trainer = Trainer(train_data, val_data, config.market, config.agent, num_envs=4,
                      eval_every=4, seed=0, practices=config.train)  # fmt: skip
    return trainer, config


def _poison(monkeypatch: pytest.MonkeyPatch, at_steps: set[int]) -> list[int]:
    """Make the online weights NaN right after the given gradient steps."""
    from nexlify.agent.dqn import DQNAgent

    real = DQNAgent.update_no_sync
    steps: list[int] = []

    def update(self: DQNAgent, batch: Any) -> torch.Tensor:
        stats = real(self, batch)
        steps.append(len(steps) + 1)
        if len(steps) in at_steps or (at_steps == {-1} and len(steps) > 60):
            with torch.no_grad():
                next(self.online.parameters()).fill_(math.nan)
        return stats

    monkeypatch.setattr(DQNAgent, "update_no_sync", update)
    return steps


@pytest.mark.parametrize("per", [True, False])
def test_a_diverging_learner_is_rolled_back_with_a_lower_learning_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, per: bool
) -> None:
    trainer, config = _trainer(tmp_path)
    trainer.agent_config = dataclasses.replace(config.agent, prioritized_replay=per)
    _poison(monkeypatch, {70})
    with caplog.at_level(logging.WARNING):
        result = trainer.train(8)
    assert len(result.rollbacks) == 1
    event = result.rollbacks[0]
    # With PER the NaN TD errors are seen at the next step; without, at the next loss check
    # or, sooner, the weight check before a validation.
    assert event["gradient_step"] == 71 if per else 70 <= event["gradient_step"] <= 100
    assert event["learning_rate"] == pytest.approx(config.agent.learning_rate * 0.5)
    assert result.agent.lr_schedule.learning_rate == pytest.approx(config.agent.learning_rate / 2)
    assert all(torch.isfinite(p).all() for p in result.agent.online.parameters())
    assert math.isfinite(result.best_score)
    assert "rolled back to the last good weights" in caplog.text


def test_repeated_divergence_gives_up_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer, _ = _trainer(tmp_path, divergence_rollbacks=2)
    _poison(monkeypatch, {-1})  # every step after the 60th
    with pytest.raises(TrainingError, match=r"diverged .* after 2 rollback\(s\)"):
        trainer.train(8)


# ----------------------------------------------------------------- the command line


def _tiny_yaml(path: Path, **pipeline: Any) -> Path:
    values = {k: dict(v) for k, v in TINY.items()}
    values["data"]["source"] = "synthetic"
    values["pipeline"].update(pipeline)
    path.write_text(yaml.safe_dump(values))
    return path


def test_resume_refuses_flags_that_would_change_the_results(tmp_path: Path) -> None:
    from nexlify.cli import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("pipeline: {initial_runs: 2}\n")
    code = main(["train", "--resume", str(tmp_path / "run"), "--automated", "--seed", "7"])
    assert code == ConfigError.exit_code
    assert main(["train", "--resume", str(tmp_path / "none"), "--automated"]) == 2


@contextlib.contextmanager
def _terminal_sigint() -> Iterator[None]:
    """Processes started inside get SIGINT as a terminal gives it: not ignored.

    A shell starts a background job (``cmd &``) with SIGINT ignored, its children inherit that
    across exec, and Python then installs no KeyboardInterrupt handler: Ctrl-C is meant not to
    reach such a job, so the pipeline rightly ran on (exit 0) when this test ran that way. Exec
    resets a handled signal to its default, so a handler here gives the child what a terminal
    gives it.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_every_file(out: Path) -> None:
    """Every finished file in the run folder is whole: JSON parses, checkpoints load."""
    for path in out.rglob("*"):
        if not path.is_file() or path.name.endswith(".tmp"):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".pt":
            read_checkpoint(path)
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_reaches_the_uninterrupted_result(
    tmp_path: Path,
) -> None:
    """Ctrl-C once, then kill the pipeline process hard (SIGKILL) three times, resuming after
    each; the final result equals an uninterrupted run's."""
    config = _tiny_yaml(tmp_path / "tiny.yaml", initial_episodes=16, retrain_episodes=8,
                        max_iterations=3, patience=3, workers=2)  # fmt: skip
    command = [sys.executable, "-m", "nexlify.cli", "train", "--automated"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    whole = tmp_path / "whole"
    subprocess.run([*command, "--config", str(config), "--output-dir", str(whole)], env=env,
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    log_lines = len((whole / "training.log").read_text().splitlines())

    # Each attempt is killed after a random number of new log lines (a random point of the
    # work, wherever the startup time falls) plus a random fraction of a second.
    out = tmp_path / "killed"
    rng = random.Random(20261122)
    args = [*command, "--config", str(config), "--output-dir", str(out)]
    kills = 0
    ctrl_c_exit = None
    for attempt in range(4):
        seen = _lines(out / "training.log")
        trigger = seen + rng.randint(3, max(4, log_lines // 3))
        with (tmp_path / f"attempt{attempt}.stderr").open("wb") as stderr, _terminal_sigint():
            proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                    start_new_session=True)  # fmt: skip
        while proc.poll() is None and _lines(out / "training.log") < trigger:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None and attempt == 0:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole group
            ctrl_c_exit = proc.wait(timeout=120)
        elif proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # the main process only, like the OOM killer
            kills += 1
        proc.wait(timeout=60)
        _wait_for_orphans(proc.pid)
        _check_every_file(out)
        if (out / SUMMARY_FILE).is_file() and _saved_summary(out)["pipeline_complete"]:
            break
        args = [*command, "--resume", str(out)]
    if not (out / SUMMARY_FILE).is_file() or not _saved_summary(out)["pipeline_complete"]:
        subprocess.run(args, env=env, check=True, capture_output=True, timeout=300)
    ctrl_c_stderr = (tmp_path / "attempt0.stderr").read_text(errors="replace")[-3000:]
    assert ctrl_c_exit == InterruptedRunError.exit_code, (
        f"Ctrl-C stops cleanly, exit 130; its stderr ended with:\n{ctrl_c_stderr}"
    )
    assert kills >= 2, "the kills should land while the pipeline works"
    _check_every_file(out)
    assert not [p for p in out.rglob("*.tmp")], "a partial file was left behind"
    assert comparable(_saved_summary(out), out) == comparable(_saved_summary(whole), whole)
    # Same content (pickle bytes may differ where equal strings are or are not one object).
    assert same_checkpoint(out / "final_model.pt", whole / "final_model.pt")


def _lines(path: Path) -> int:
    try:
        return len(path.read_bytes().splitlines())
    except OSError:
        return 0


def _wait_for_orphans(session_leader: int, timeout: float = 20.0) -> None:
    """Worker processes die with their parent (PR_SET_PDEATHSIG): wait until the session's
    pipeline processes are gone, so nothing writes into the folder during the resume."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == session_leader and fields[0] != "Z":  # session id
                alive.append(proc.name)
        if not alive:
            return
        time.sleep(0.2)
    os.killpg(session_leader, signal.SIGKILL)
    pytest.fail(f"worker processes {alive} outlived the killed pipeline")


# ----------------------------------------------------------------- resume points inside a unit


class _StopHereError(Exception):
    pass


def _interrupted_then_resumed(
    tmp_path: Path, replay: bool, **train: Any
) -> tuple[Any, Any, ResumePoint]:
    """An uninterrupted run, and the same run stopped at its third validation then resumed."""
    whole, _ = _trainer(tmp_path / "whole", **train)
    expected = whole.train(24)

    trainer, _ = _trainer(tmp_path / "cut", **train)
    point = ResumePoint(tmp_path / RESUME_FILE, "unit-1", replay=replay,
                        log=logging.getLogger("test"), label="unit")  # fmt: skip
    validations: list[int] = []

    def stop_at_the_third(episode: int, score: float) -> None:
        validations.append(episode)
        if len(validations) == 3:
            raise _StopHereError  # before the third resume point is written: the second one is used

    with pytest.raises(_StopHereError):
        trainer.train(24, on_validation=stop_at_the_third, resume=point)
    assert point.saves == 2 and point.path.is_file()
    again, _ = _trainer(tmp_path / "again", **train)
    return expected, again.train(24, resume=point), point


@pytest.mark.parametrize(
    "train",
    [{}, {"curriculum": False, "augment": False}],
    ids=["curriculum-and-augmentation", "one-market"],
)
def test_a_unit_resumed_from_its_last_validation_equals_the_uninterrupted_unit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, train: dict[str, Any]
) -> None:
    with caplog.at_level(logging.INFO):
        expected, resumed, _ = _interrupted_then_resumed(tmp_path, replay=True, **train)
    assert "run | resumed at episode 8/24" in caplog.text
    assert json.dumps(resumed.history) == json.dumps(expected.history)  # NaN-safe
    assert resumed.best_score == expected.best_score
    assert (resumed.transitions, resumed.gradient_steps) == (
        expected.transitions,
        expected.gradient_steps,
    )
    for name, tensor in expected.agent.online.state_dict().items():
        assert torch.equal(resumed.agent.online.state_dict()[name], tensor), name
    groups = resumed.agent.optimizer.state_dict()["param_groups"]
    assert groups == expected.agent.optimizer.state_dict()["param_groups"]


def test_a_resume_point_without_the_replay_buffer_refills_it_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        expected, resumed, point = _interrupted_then_resumed(tmp_path, replay=False)
    assert "refilling it first; results differ" in caplog.text
    assert resumed.episodes == expected.episodes
    assert resumed.gradient_steps < expected.gradient_steps  # no learning while refilling
    assert point.path.stat().st_size < 2_000_000


def test_a_damaged_or_foreign_resume_point_starts_the_unit_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("test")
    point = ResumePoint(tmp_path / RESUME_FILE, "unit-1", replay=True, log=log, label="u")
    point.save({"array": np.arange(5, dtype=np.uint32), "n": np.int64(3), "rng": {"s": 2**100}})
    loaded = point.load()
    assert loaded is not None
    assert loaded["array"].dtype == np.uint32 and loaded["array"].tolist() == [0, 1, 2, 3, 4]
    assert loaded["n"] == 3 and loaded["rng"]["s"] == 2**100
    other = ResumePoint(point.path, "unit-2", replay=True, log=log, label="u")
    with caplog.at_level(logging.WARNING):
        assert other.load() is None
        point.path.write_bytes(point.path.read_bytes()[:100])
        assert point.load() is None
    assert "belongs to other settings" in caplog.text and "is unreadable" in caplog.text
