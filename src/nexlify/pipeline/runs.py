"""One unit of pipeline work (an initial run or a retraining iteration), runnable in any process.

``train_unit`` is a top-level function of plain inputs so the same code runs in-process or in a
worker process; it saves its model and returns a plain-dict outcome.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import torch

from nexlify.agent.dqn import DQNAgent, load_agent
from nexlify.data.market_data import MarketData
from nexlify.train.config import RunConfig
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


def model_file_name(avg_return_pct: float) -> str:
    """``model_return<R>.pt`` with R the validation average return in percent (2 decimals)."""
    return f"model_return{avg_return_pct:.2f}.pt"


def checkpoint_extra(task: UnitTask) -> dict[str, Any]:
    """What a saved model needs to rebuild its market: pairs, features, risk and costs."""
    data = task.train_data
    return {
        "market_config": dataclasses.asdict(task.config.market),
        "pairs": list(data.pairs),
        "timeframe": data.timeframe,
        "feature_names": list(data.feature_names),
        "seed": task.seed,
        "run": task.label,
        "data_source": data.source,
    }


def set_threads(threads: int) -> None:
    """Torch and numba threads for this process (one training unit per process)."""
    threads = max(1, threads)
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]


def train_unit(task: UnitTask, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Train one unit, save its best model, return a plain outcome dict."""
    log = logging.getLogger(task.logger_name)
    if task.log_path is not None and not log.handlers:  # a fresh worker process
        handler = logging.FileHandler(task.log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    set_threads(task.threads)
    cfg = task.config
    device = resolve_device(cfg.train.device)
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
    )
    if progress is None and task.progress_queue is not None:
        queue = task.progress_queue

        def progress(done: int, total: int) -> None:
            queue.put((task.label, done, total))

    result = trainer.train(task.episodes, agent=agent, eps_start=task.eps_start, progress=progress)
    metrics = {**result.best_metrics, "score": result.best_score}
    model_dir = Path(task.model_dir)
    path = model_dir / model_file_name(result.best_metrics.get("avg_return", 0.0))
    result.agent.save(path, metrics=metrics, extra=checkpoint_extra(task))
    return {
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
        "pid": os.getpid(),
    }
