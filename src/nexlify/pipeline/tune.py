"""Hyperparameter optimisation with Optuna.

Each trial trains one run with sampled settings and returns its best validation score (the
pipeline's score on the held-out window), or with ``--validation walk-forward`` one run per
walk-forward fold and the mean of their scores (the pipeline's walk-forward selection).
Intermediate validation scores are reported to the trial so the median pruner can stop weak
trials early. Studies live in a database (SQLite file by
default, any SQLAlchemy URL otherwise), so an interrupted study resumes where it stopped. The
driver asks Optuna's sampler for a batch of trials, runs them on an execution backend (in
process, local processes or Ray: :mod:`nexlify.pipeline.backends`) and tells the study their
results, so a study holds the same trials whatever ran them. The best settings are written as
a config file the pipeline accepts (``--config``), and every trial's validation Sharpe is kept
so the deflated Sharpe ratio can account for how many configurations were tried.

Search space (``SEARCH_SPACE``): learning rate (log-uniform 1e-5..3e-3), gamma (0.9..0.999),
batch size (64, 128, 256), network width (64..512, two layers), n-step (1..5), PER alpha
(0.3..0.9), exploration end and decay fraction; with ``tune_risk`` also stop-loss, take-profit,
trailing stop and position cap.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nexlify.config import bars_per_year
from nexlify.data.market_data import MarketData
from nexlify.errors import ConfigError
from nexlify.evaluation.stats import deflated_sharpe_ratio
from nexlify.io import atomic_write_text
from nexlify.pipeline.backends import Backend, make_backend
from nexlify.pipeline.placement import plan_devices
from nexlify.pipeline.runs import set_threads
from nexlify.system import core_share
from nexlify.train.config import RunConfig, run_config_from_dict
from nexlify.train.trainer import Trainer, resolve_device

SEARCH_SPACE = {
    "agent.learning_rate": "log-uniform [1e-5, 3e-3]",
    "agent.gamma": "uniform [0.9, 0.999]",
    "agent.batch_size": "one of 64, 128, 256",
    "agent.hidden_sizes": "two layers of one width in 64..512 (log)",
    "agent.n_step": "integer [1, 5]",
    "agent.per_alpha": "uniform [0.3, 0.9]",
    "agent.eps_end": "log-uniform [0.01, 0.2]",
    "agent.eps_decay_fraction": "uniform [0.1, 0.8]",
    "market.risk.stop_loss (opt-in)": "uniform [0.01, 0.05]",
    "market.risk.take_profit (opt-in)": "stop-loss + uniform [0.01, 0.1]",
    "market.risk.trailing_stop (opt-in)": "uniform [0.0, 0.06]",
    "market.risk.max_position (opt-in)": "uniform [0.02, 0.2]",
}
"""What ``nexlify tune`` searches (section.field: distribution)."""

BEST_CONFIG = "best_config.yaml"


@dataclass(frozen=True)
class TuneJob:
    """A tuning study: its data, budget, storage and where its trials run."""

    base: dict[str, Any]
    train_data: MarketData
    val_data: MarketData
    storage: str
    study_name: str
    episodes: int
    trials: int
    tune_risk: bool
    seed: int
    backend: str = "process"
    """Execution backend of the trials (inprocess, process or ray)."""
    ray_address: str | None = None
    """Ray cluster address for backend ray (see PipelineConfig.ray_address)."""
    folds: tuple[tuple[MarketData, MarketData], ...] = ()
    """Walk-forward (train, window) pairs: when given, a trial trains once per fold and its
    value is the mean of the folds' best scores (the pipeline's ``--validation walk-forward``)."""


@dataclass(frozen=True)
class TrialTask:
    """One trial's unit of work: sampled settings, data, and the study as its batch began."""

    label: str
    number: int
    config: RunConfig
    train_data: MarketData
    val_data: MarketData
    episodes: int
    seed: int
    completed: tuple[Any, ...] = ()
    """Trials completed before this batch (optuna FrozenTrials): what the pruner compares with."""
    threads: int = 1
    folds: tuple[tuple[MarketData, MarketData], ...] = ()
    """Walk-forward folds (see TuneJob.folds); empty: train on train_data, score on val_data."""


def pruner() -> Any:
    """The median pruner: after 3 completed trials, stop a trial below their median."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


def suggest(trial: Any, base: dict[str, Any], tune_risk: bool) -> RunConfig:
    """A RunConfig with this trial's sampled values over ``base`` (the YAML layout)."""
    agent_fields = set(base.get("agent", {}))
    width = trial.suggest_int("width", 64, 512, log=True)
    agent: dict[str, Any] = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        "gamma": trial.suggest_float("gamma", 0.9, 0.999),
        "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256]),
        "hidden_sizes": [width, width],
        "eps_end": trial.suggest_float("eps_end", 0.01, 0.2, log=True),
        "eps_decay_fraction": trial.suggest_float("eps_decay_fraction", 0.1, 0.8),
    }
    if "n_step" in agent_fields:
        agent["n_step"] = trial.suggest_int("n_step", 1, 5)
    if "per_alpha" in agent_fields:
        agent["per_alpha"] = trial.suggest_float("per_alpha", 0.3, 0.9)
    values: dict[str, Any] = {"agent": agent}
    if tune_risk:
        stop = trial.suggest_float("stop_loss", 0.01, 0.05)
        values["market"] = {"risk": {
            "stop_loss": stop,
            "take_profit": stop + trial.suggest_float("take_profit_margin", 0.01, 0.1),
            "trailing_stop": trial.suggest_float("trailing_stop", 0.0, 0.06),
            "max_position": trial.suggest_float("max_position", 0.02, 0.2),
        }}  # fmt: skip
    return run_config_from_dict(values, run_config_from_dict(base))


def run_trial(task: TrialTask) -> dict[str, Any]:
    """Train one trial; prune it against the trials completed before its batch.

    Runs in any process: the study's storage is only touched by the driver, which records the
    intermediate scores and the result (:func:`run_tuning`). Pruning sees the same completed
    trials on every backend, so a study is the same whatever runs its trials.
    """
    import optuna

    set_threads(task.threads)
    snapshot = optuna.create_study(direction="maximize", pruner=pruner())
    snapshot.add_trials(task.completed)
    trial = snapshot.ask()
    intermediate: list[tuple[int, float]] = []
    config = task.config
    folds = task.folds or ((task.train_data, task.val_data),)
    # With folds, reports go at fold * episodes + episode: every trial walks the same folds in
    # the same order, so the pruner compares like with like.
    offset = 0

    def report(episode: int, score: float) -> None:
        intermediate.append((offset + episode, score))
        trial.report(score, offset + episode)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {offset + episode} (score {score:.3f})")

    outcome: dict[str, Any] = {"label": task.label, "number": task.number}
    results = []
    try:
        for k, (train_data, val_data) in enumerate(folds):
            offset = k * task.episodes
            trainer = Trainer(
                train_data, val_data, config.market, config.agent,
                num_envs=config.train.num_envs, eval_every=config.train.eval_every,
                seed=task.seed, device=str(resolve_device(config.train.device)),
                logger=logging.getLogger("nexlify.tune"),
                label=task.label if len(folds) == 1 else f"{task.label}_fold_{k + 1}",
                core_share=core_share.current(),
            )  # fmt: skip
            results.append(trainer.train(task.episodes, on_validation=report))
    except optuna.TrialPruned:
        return {**outcome, "state": "pruned", "value": None, "intermediate": intermediate,
                "user_attrs": {}}  # fmt: skip
    attrs: dict[str, Any] = {
        "val_sharpe": float(np.mean([r.best_metrics.get("avg_sharpe", 0.0) for r in results])),
        "val_return": float(np.mean([r.best_metrics.get("avg_return", 0.0) for r in results])),
    }
    if len(results) > 1:
        attrs["fold_scores"] = [r.best_score for r in results]
    value = float(np.mean([r.best_score for r in results]))
    return {**outcome, "state": "complete", "value": value,
            "intermediate": intermediate, "user_attrs": attrs}  # fmt: skip


def run_tuning(job: TuneJob, workers: int, out_dir: Path) -> dict[str, Any]:
    """Create or resume the study, run the trials, write the best config; return a summary.

    The driver asks Optuna's TPE sampler for ``workers`` trials at a time, runs them on the
    job's backend, then tells the study their results in trial order. The batch size, not the
    backend, shapes the search: the same seed and ``workers`` give the same study on every
    backend. A resumed study seeds its sampler past the trials it already holds.
    """
    import optuna

    if job.trials < 1:
        raise ConfigError(f"tune: --trials {job.trials} is invalid (an integer >= 1)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=job.study_name, storage=job.storage,
                                direction="maximize", load_if_exists=True)  # fmt: skip
    study = optuna.load_study(
        study_name=job.study_name, storage=job.storage, pruner=pruner(),
        sampler=optuna.samplers.TPESampler(seed=job.seed + len(study.trials)),
    )  # fmt: skip
    workers = max(1, min(workers, job.trials))
    base = run_config_from_dict(job.base)
    log = logging.getLogger("nexlify.tune")
    with make_backend(job.backend, workers, ray_address=job.ray_address,
                      threads=base.train.torch_threads,
                      share_cores=base.pipeline.share_cores) as backend:  # fmt: skip
        left = job.trials
        while left > 0:
            batch = min(workers, left)
            _run_batch(study, job, backend, batch, log)
            left -= batch
    study = optuna.load_study(study_name=job.study_name, storage=job.storage)
    return summarise_study(study, job, out_dir)


def _run_batch(study: Any, job: TuneJob, backend: Backend, size: int, log: logging.Logger) -> None:
    """Ask ``size`` trials, train them on ``backend``, tell their results in trial order."""
    import optuna

    completed = tuple(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    asked = [study.ask() for _ in range(size)]
    try:
        tasks = [_trial_task(trial, job, completed) for trial in asked]
        tasks, _ = plan_devices(tasks, size, job.backend)

        def done(outcome: dict[str, Any]) -> None:
            value = outcome["value"]
            log.info("%s: %s", outcome["label"],
                     f"score {value:.3f}" if value is not None else outcome["state"])  # fmt: skip

        outcomes = backend.map_units(run_trial, tasks, done)
    except BaseException:
        for trial in asked:  # none of them ran to the end: recorded as failed, never RUNNING
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    for trial, outcome in zip(asked, outcomes, strict=True):
        for step, score in outcome["intermediate"]:
            trial.report(score, step)
        for key, value in outcome["user_attrs"].items():
            trial.set_user_attr(key, value)
        if outcome["state"] == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, outcome["value"])


def _trial_task(trial: Any, job: TuneJob, completed: tuple[Any, ...]) -> TrialTask:
    config = suggest(trial, job.base, job.tune_risk)
    return TrialTask(label=f"trial_{trial.number}", number=trial.number, config=config,
                     train_data=job.train_data, val_data=job.val_data, episodes=job.episodes,
                     seed=job.seed + trial.number, completed=completed,
                     threads=config.train.torch_threads, folds=job.folds)  # fmt: skip


def summarise_study(study: Any, job: TuneJob, out_dir: Path) -> dict[str, Any]:
    """Best trial, its config file, and the deflated Sharpe over every completed trial."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise ConfigError(f"tune: study {job.study_name!r} has no completed trial")
    best = study.best_trial
    best_config = suggest(optuna.trial.FixedTrial(best.params), job.base, job.tune_risk)
    atomic_write_text(out_dir / BEST_CONFIG, best_config.to_yaml())
    sharpes = np.array([t.user_attrs.get("val_sharpe", 0.0) for t in done])
    per_bar = sharpes / np.sqrt(bars_per_year(job.val_data.timeframe))  # the DSR is per bar
    n_obs = job.val_data.n_bars
    dsr = None
    if len(done) >= 2:
        dsr = deflated_sharpe_ratio(float(per_bar.max()), len(done),
                                    float(per_bar.var(ddof=1)), n_obs)  # fmt: skip
    return {
        "study": job.study_name,
        "storage": job.storage,
        "trials": len(study.trials),
        "completed": len(done),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "best_score": best.value,
        "best_params": best.params,
        "best_config": str(out_dir / BEST_CONFIG),
        "deflated_sharpe_of_best": dsr,
        "objective": f"mean best validation score over {len(job.folds)} walk-forward folds"
        if job.folds
        else "best validation score on the held-out window",
        "search_space": SEARCH_SPACE,
        "cpu_count": os.cpu_count(),
    }
