"""One unit of pipeline work (an initial run or a retraining iteration), runnable in any process.

``train_unit`` is a top-level function of plain inputs so the same code runs in-process or in a
worker process; it saves its model, then records its outcome in ``outcome.json`` next to it.
The outcome file is written last and atomically, so its presence (with a matching fingerprint
and a readable model) is what marks a unit as finished: ``finished_outcome`` is how a resumed
pipeline skips work that was already done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch

from nexlify.agent.dqn import DQNAgent, load_agent, read_checkpoint
from nexlify.data.features import feature_config_to_dict
from nexlify.data.market_data import MarketData
from nexlify.errors import CheckpointError
from nexlify.io import atomic_write_json
from nexlify.system import core_share
from nexlify.system.devices import configure_device
from nexlify.system.lifetime import die_with_parent
from nexlify.system.thermal import ThermalGuard
from nexlify.train.batch_size import BatchPlanner
from nexlify.train.config import RunConfig
from nexlify.train.resume import RESUME_FILE, ResumePoint
from nexlify.train.tensorboard import TensorBoardLogger
from nexlify.train.trainer import ProgressCallback, Trainer, resolve_device


@dataclass(frozen=True)
class UnitTask:
    """Everything one training unit needs."""

    label: str
    seed: int
    episodes: int
    config: RunConfig
    train_data: MarketData
    val_data: MarketData
    model_dir: str
    init_model: str | None = None
    eps_start: float | None = None
    threads: int = 1
    log_path: str | None = None
    logger_name: str = "nexlify.pipeline"
    progress_queue: Any = None
    """A multiprocessing queue that receives (label, done, total) from a worker process."""
    output_dir: str | None = None
    """The run's output folder (TensorBoard curves go under it)."""
    concurrent_units: int = 1
    """Units sharing this machine (or GPU) at once: automatic batch sizing splits memory."""
    fingerprint: str = ""
    """What the unit's result depends on (config, data, seed, episodes, starting model); a
    recorded outcome is reused only when its fingerprint matches."""


OUTCOME_FILE = "outcome.json"


def market_fingerprint(data: MarketData) -> str:
    """SHA-256 of the bars a model sees (times, prices, volumes, features, fill flags)."""
    digest = hashlib.sha256()
    for array in (data.time, data.prices, data.volume, data.features, data.filled):
        contiguous = np.ascontiguousarray(array)
        digest.update(str((contiguous.dtype.str, contiguous.shape)).encode())
        digest.update(contiguous.tobytes())
    return digest.hexdigest()


def unit_fingerprint(run_key: str, task: UnitTask) -> str:
    """The fingerprint of ``task`` within the run whose config and data hash to ``run_key``."""
    start = Path(task.init_model).name if task.init_model else None
    parts = [run_key, task.label, task.seed, task.episodes, start, task.eps_start]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def finished_outcome(task: UnitTask, log: logging.Logger) -> dict[str, Any] | None:
    """The recorded outcome of ``task`` if it finished before (matching fingerprint, model
    readable), else None; every reason to train it again is logged."""
    path = Path(task.model_dir) / OUTCOME_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        outcome = dict(record["outcome"])
        fingerprint = record["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: %s is unreadable (%s); training the unit again", task.label, path, exc)
        return None
    if fingerprint != task.fingerprint:
        log.warning("%s: %s was made with other settings or data; training the unit again",
                    task.label, path)  # fmt: skip
        return None
    model = Path(task.model_dir) / Path(str(outcome.get("model_path", ""))).name
    try:
        read_checkpoint(model)
    except CheckpointError as exc:
        log.warning("%s: %s; training the unit again", task.label, exc)
        return None
    outcome["model_path"] = str(model)  # the folder may have moved since
    if outcome.get("val_score") is None:  # JSON holds -inf (never validated) as null
        outcome["val_score"] = -math.inf
    return outcome


def model_file_name(avg_return_pct: float) -> str:
    """``model_return<R>.pt`` with R the validation average return in percent (2 decimals)."""
    return f"model_return{avg_return_pct:.2f}.pt"


def checkpoint_extra(task: UnitTask) -> dict[str, Any]:
    """What a saved model needs to rebuild its market (pairs, features, risk and costs) and to
    be fine-tuned as it was trained (``train_config``: paper trading's ``--retrain-every``)."""
    data = task.train_data
    return {
        "market_config": dataclasses.asdict(task.config.market),
        # rebuilt from JSON: fresh objects, so the file's bytes do not depend on which strings
        # the config happens to share in this process (pickle writes shared ones by reference)
        "train_config": json.loads(json.dumps(dataclasses.asdict(task.config.train))),
        "pairs": list(data.pairs),
        "timeframe": data.timeframe,
        "feature_names": list(data.feature_names),
        "feature_config": feature_config_to_dict(data.feature_config),
        "seed": task.seed,
        "run": task.label,
        "data_source": data.source,
    }


def set_threads(threads: int) -> None:
    """Torch and numba threads for this process (one training unit per process)."""
    threads = max(1, threads)
    # numba first: starting its OpenMP thread pool (the first set_num_threads does) sets the
    # OpenMP thread count of the calling thread, which torch shares when both use the same
    # libgomp. Set the other way round, torch ran every op on NUMBA_NUM_THREADS threads in a
    # fresh worker process (spinning, several times slower with a unit per core).
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    torch.set_num_threads(threads)
    if torch.get_num_threads() != threads:
        logging.getLogger(__name__).warning(
            "torch runs on %d threads after set_num_threads(%d): training units may compete "
            "for cores", torch.get_num_threads(), threads,
        )  # fmt: skip


def train_unit(task: UnitTask, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Train one unit, save its best model and ``outcome.json``, return the outcome dict."""
    die_with_parent()
    log = logging.getLogger(task.logger_name)
    if task.log_path is not None and not log.handlers:  # a fresh worker process
        handler = logging.FileHandler(task.log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    set_threads(task.threads)
    cfg = task.config
    device = resolve_device(cfg.train.device)
    setup = configure_device(device)
    log.debug("%s | device %s", task.label, setup.describe())
    thermal = ThermalGuard.from_train_config(cfg.train, device, log, task.label)
    planner = (
        BatchPlanner.from_train_config(cfg.train, task.concurrent_units)
        if cfg.train.auto_batch
        else None
    )
    board = (
        TensorBoardLogger.for_unit(task.output_dir, task.label)
        if cfg.train.tensorboard and task.output_dir is not None
        else None
    )
    model_dir = Path(task.model_dir)
    resume = (
        ResumePoint(
            model_dir / RESUME_FILE,
            task.fingerprint,
            replay=cfg.train.resume_replay,
            log=log,
            label=task.label,
        )
        if cfg.train.resume_points and task.fingerprint
        else None
    )
    share = core_share.current()
    waited_before = share.waited_seconds if share is not None else 0.0
    agent: DQNAgent | None = None
    if task.init_model is not None:
        agent, _ = load_agent(task.init_model, device=device)
    trainer = Trainer(
        task.train_data,
        task.val_data,
        cfg.market,
        cfg.agent,
        num_envs=cfg.train.num_envs,
        eval_every=cfg.train.eval_every,
        seed=task.seed,
        device=str(device),
        logger=log,
        label=task.label,
        practices=cfg.train,
        thermal=thermal,
        batch_planner=planner,
        tensorboard=board,
        core_share=share,
    )
    if progress is None and task.progress_queue is not None:
        queue = task.progress_queue

        def progress(done: int, total: int) -> None:
            queue.put((task.label, done, total))

    try:
        result = trainer.train(task.episodes, agent=agent, eps_start=task.eps_start,
                               progress=progress, resume=resume)  # fmt: skip
    finally:
        if board is not None:
            board.close()
    metrics = {**result.best_metrics, "score": result.best_score}
    path = model_dir / model_file_name(result.best_metrics.get("avg_return", 0.0))
    result.agent.save(path, metrics=metrics, extra=checkpoint_extra(task))
    outcome = {
        "label": task.label,
        "seed": task.seed,
        "val_score": result.best_score,
        "val_metrics": result.best_metrics,
        "train_return": result.train_return_pct,
        "best_episode": result.best_episode,
        "episodes": result.episodes,
        "transitions": result.transitions,
        "gradient_steps": result.gradient_steps,
        "seconds": result.seconds,
        "model_path": str(path),
        "history": result.history,
        "stopped_early": result.stopped_early,
        "swa_score": result.swa_score,
        "swa_selected": result.swa_selected,
        "divergence_rollbacks": result.rollbacks,
        "device": setup.to_dict(),
        "oom_backoff": trainer.oom_backoff.to_dict(),
        **({"batch_plan": planner.last_plan.to_dict()} if planner and planner.last_plan else {}),
        **({"thermal": thermal.summary()} if thermal is not None else {}),
        **({"core_share": share.summary(waited_before)} if share is not None else {}),
        "pid": os.getpid(),
    }
    atomic_write_json(model_dir / OUTCOME_FILE, {"fingerprint": task.fingerprint,
                                                 "outcome": outcome})  # fmt: skip
    if resume is not None:
        resume.discard()  # the outcome and the model now hold the unit's result
    return outcome
