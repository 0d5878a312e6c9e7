"""Hyperparameter optimisation with Optuna.

Each trial trains one run with sampled settings and returns its best validation score (the
pipeline's score on the held-out window). Intermediate validation scores are reported to the
trial so the median pruner can stop weak trials early. Studies live in a database (SQLite file by
default, any SQLAlchemy URL otherwise), so an interrupted study resumes where it stopped and
several processes can run trials at once. The best settings are written as a config file the
pipeline accepts (``--config``), and every trial's validation Sharpe is kept so the deflated
Sharpe ratio can account for how many configurations were tried.

Search space (``SEARCH_SPACE``): learning rate (log-uniform 1e-5..3e-3), gamma (0.9..0.999),
batch size (64, 128, 256), network width (64..512, two layers), n-step (1..5), PER alpha
(0.3..0.9), exploration end and decay fraction; with ``tune_risk`` also stop-loss, take-profit,
trailing stop and position cap.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nexlify.config import bars_per_year
from nexlify.data.market_data import MarketData
from nexlify.errors import ConfigError
from nexlify.evaluation.stats import deflated_sharpe_ratio
from nexlify.io import atomic_write_text
from nexlify.pipeline.runs import set_threads
from nexlify.train.config import RunConfig, run_config_from_dict
from nexlify.train.trainer import Trainer

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
    """Everything a tuning worker process needs."""

    base: dict[str, Any]
    train_data: MarketData
    val_data: MarketData
    storage: str
    study_name: str
    episodes: int
    trials: int
    tune_risk: bool
    seed: int


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


def _objective(job: TuneJob) -> Any:
    import optuna

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial, job.base, job.tune_risk)
        trainer = Trainer(
            job.train_data, job.val_data, config.market, config.agent,
            num_envs=config.train.num_envs, eval_every=config.train.eval_every,
            seed=job.seed + trial.number, device="cpu",
            logger=logging.getLogger("nexlify.tune"), label=f"trial_{trial.number}",
        )  # fmt: skip

        def report(episode: int, score: float) -> None:
            trial.report(score, episode)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at episode {episode} (score {score:.3f})")

        result = trainer.train(job.episodes, on_validation=report)
        trial.set_user_attr("val_sharpe", result.best_metrics.get("avg_sharpe", 0.0))
        trial.set_user_attr("val_return", result.best_metrics.get("avg_return", 0.0))
        return result.best_score

    return objective


def tune_worker(job: TuneJob) -> int:
    """Run ``job.trials`` trials of the shared study (in this process); returns trials done."""
    import optuna

    set_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=job.study_name, storage=job.storage,
        sampler=optuna.samplers.TPESampler(seed=job.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )  # fmt: skip
    study.optimize(_objective(job), n_trials=job.trials, catch=())
    return job.trials


def run_tuning(job: TuneJob, workers: int, out_dir: Path) -> dict[str, Any]:
    """Create or resume the study, run the trials, write the best config; return a summary."""
    import optuna

    if job.trials < 1:
        raise ConfigError(f"tune: --trials {job.trials} is invalid (an integer >= 1)")
    optuna.create_study(study_name=job.study_name, storage=job.storage, direction="maximize",
                        load_if_exists=True)  # fmt: skip
    if workers <= 1:
        tune_worker(job)
    else:
        shares = [job.trials // workers + (k < job.trials % workers) for k in range(workers)]
        jobs = [_with(job, trials=n, seed=job.seed + 7919 * k) for k, n in enumerate(shares) if n]
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(len(jobs), mp_context=ctx) as pool:
            list(pool.map(tune_worker, jobs))
    study = optuna.load_study(study_name=job.study_name, storage=job.storage)
    return summarise_study(study, job, out_dir)


def _with(job: TuneJob, **changes: Any) -> TuneJob:
    from dataclasses import replace

    return replace(job, **changes)


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
        "search_space": SEARCH_SPACE,
        "cpu_count": os.cpu_count(),
    }
