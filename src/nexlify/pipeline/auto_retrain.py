"""The main job: multi-start training, selection on validation data, auto-retraining to a plateau.

Phase 1: ``initial_runs`` independent runs (seeds 42, 1042, 2042, ...) of ``initial_episodes``
each; the best by validation score is kept. Phase 2: from the best model, iterations of
``retrain_episodes``; after each, validate, and stop when (checked in this order)

- the iteration found a new best whose improvement is below ``improvement_threshold`` percent
  (a plateau: ``improvement_below_threshold``),
- ``patience`` iterations in a row found no new best (``patience``),
- ``max_iterations`` iterations have run (``max_iterations``).

Every iteration starts from the best model so far. Improvement is
``(score - best) / |best| * 100``.

Ensemble: with ``ensemble_size`` K >= 2, the K best models of both phases (by validation score)
are combined (``ensemble_method``: Q-averaging or voting), validated on the same window and saved
as ``ensemble_model.pt``; when the ensemble scores higher than the best single model, it becomes
``final_model.pt`` (``final_model_kind`` "ensemble"; its ``model_state_dict`` is still the best
member's weights). ``final_best_score`` stays the best single model's score (the one the stopping
rules used); ``final_model_score`` is the score of what ``final_model.pt`` holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nexlify.agent.dqn import load_agent
from nexlify.agent.ensemble import EnsembleAgent
from nexlify.data.market_data import MarketData
from nexlify.errors import ConfigError, InterruptedRunError
from nexlify.evaluation.edge import (
    describe_edge,
    excess_of_returns,
    format_excess,
    run_edge_gate,
    window_daily_returns,
    write_model_edge,
)
from nexlify.io import atomic_write, atomic_write_json, atomic_write_text
from nexlify.market.baselines import run_baselines
from nexlify.pipeline.backends import make_backend
from nexlify.pipeline.data_choice import SYNTHETIC_WARNING, split_market
from nexlify.pipeline.placement import plan_devices, takes_turns, units_at_once
from nexlify.pipeline.report import write_report
from nexlify.pipeline.runs import (
    UnitTask,
    finished_outcome,
    market_fingerprint,
    train_unit,
    unit_fingerprint,
)
from nexlify.train.config import PipelineConfig, RunConfig
from nexlify.train.trainer import validate

SUMMARY_FILE = "complete_training_summary.json"
LOG_FILE = "training.log"
FINAL_MODEL = "final_model.pt"


class ProgressSink(Protocol):
    """Receives training progress of each unit (e.g. a progress bar)."""

    def update(self, label: str, done: int, total: int) -> None: ...


@dataclass(frozen=True)
class RetrainDecision:
    """Outcome of one retraining iteration under the stopping rules."""

    new_best: bool
    improvement_pct: float
    without_best: int
    stop_reason: str | None


def improvement_pct(best: float, score: float) -> float:
    """Percent change of ``score`` over ``best``, relative to ``|best|``."""
    return (score - best) / max(abs(best), 1e-9) * 100.0


def retrain_decision(
    best: float, score: float, without_best: int, iteration: int, config: PipelineConfig
) -> RetrainDecision:
    """Apply the stopping rules (module docstring) after iteration ``iteration`` (1-based)."""
    change = improvement_pct(best, score)
    reason: str | None = None
    if score > best:
        without_best = 0
        if change < config.improvement_threshold:
            reason = "improvement_below_threshold"
    else:
        without_best += 1
        if without_best >= config.patience:
            reason = "patience"
    if reason is None and iteration >= config.max_iterations:
        reason = "max_iterations"
    return RetrainDecision(score > best, change, without_best, reason)


ENSEMBLE_MODEL = "ensemble_model.pt"


def build_ensemble(
    summary: dict[str, Any],
    pcfg: PipelineConfig,
    val_data: MarketData,
    config: RunConfig,
    out_dir: Path,
    log: logging.Logger,
) -> dict[str, Any] | None:
    """Combine the best ``ensemble_size`` models of both phases, validate and save the ensemble."""
    candidates = [(r["val_score"], r["model_path"]) for r in summary["initial_runs"]]
    candidates += [(it["score"], it["model_path"]) for it in summary["retraining_iterations"]]
    candidates = [c for c in candidates if math.isfinite(c[0])]
    top = sorted(candidates, key=lambda c: -c[0])[: pcfg.ensemble_size]
    if len(top) < 2:
        return None
    loaded = [load_agent(path) for _, path in top]
    ensemble = EnsembleAgent([agent for agent, _ in loaded], pcfg.ensemble_method)
    result = validate(ensemble, val_data, config.market)
    score, metrics = result.score(), result.average()
    path = out_dir / ENSEMBLE_MODEL
    ensemble.save(path, metrics={**metrics, "score": score}, extra=loaded[0][1]["extra"],
                  member_metrics=[info["metrics"] for _, info in loaded])  # fmt: skip
    log.info("ensemble of %d (%s): val score %.3f (best member %.3f) -> %s", len(top),
             pcfg.ensemble_method, score, top[0][0], path)  # fmt: skip
    return {
        "members": [path_ for _, path_ in top],
        "member_scores": [s for s, _ in top],
        "method": pcfg.ensemble_method,
        "val_score": score,
        "val_metrics": metrics,
        "model_path": str(path),
    }


def pipeline_workers(config: PipelineConfig, n_units: int | None = None) -> int:
    """Units trained at once: 1 in-process; for processes ``workers``, or with 0 one per core;
    for Ray ``workers``, or with 0 every unit at once (the cluster schedules them)."""
    units = config.initial_runs if n_units is None else n_units
    return units_at_once(config.backend, config.workers, units, config.share_cores)


def _unit_progress(sink: ProgressSink | None, label: str) -> Callable[[int, int], None] | None:
    if sink is None:
        return None
    return lambda done, total: sink.update(label, done, total)


def run_initial_phase(
    tasks: list[UnitTask],
    workers: int,
    on_done: Callable[[dict[str, Any]], None],
    progress: ProgressSink | None = None,
    *,
    backend: str | None = None,
    ray_address: str | None = None,
) -> list[dict[str, Any]]:
    """Train independent units (initial runs, folds, variants) on an execution backend.

    ``backend`` (inprocess, process or ray; default: the tasks' ``pipeline.backend``) runs
    ``workers`` units at once; with CUDA GPUs the units are placed round-robin on them
    (:mod:`nexlify.pipeline.backends`). Outcomes come back in task order whatever order the
    units finish in, and are the same on every backend. A unit that fails stops the others and
    raises :class:`~nexlify.pipeline.backends.UnitError` naming it.
    """
    if not tasks:
        return []
    pcfg = tasks[0].config.pipeline
    name = backend or pcfg.backend
    address = ray_address if ray_address is not None else pcfg.ray_address
    placed, workers = plan_devices(tasks, workers, name)
    threads = max(task.threads for task in placed)
    with make_backend(name, workers, ray_address=address, threads=threads,
                      share_cores=pcfg.share_cores) as runner:  # fmt: skip
        return runner.map_units(train_unit, placed, on_done, progress)


def _versions() -> dict[str, str]:
    import gymnasium
    import numba
    import torch

    import nexlify

    return {
        "nexlify": nexlify.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "gymnasium": gymnasium.__version__,
        "platform": platform.platform(),
    }


def attach_run_log(log: logging.Logger, out_dir: Path) -> logging.Handler | None:
    """Send ``log`` to ``out_dir/training.log`` (flushed per line) unless it already goes there."""
    path = (out_dir / LOG_FILE).resolve()
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path:
            return None
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    return handler


def _write_html_report(
    summary: dict[str, Any], out_dir: Path, market: MarketData, log: logging.Logger
) -> None:
    """report.html next to the summary; a failure here is reported, and the run's files stay."""
    from nexlify.report.html import build_run_report

    try:
        path = build_run_report(out_dir, summary, market)
    except Exception as exc:  # the models and summary are already safe on disk
        summary["report_error"] = f"{type(exc).__name__}: {exc}"
        atomic_write_json(out_dir / SUMMARY_FILE, summary)
        log.error("the HTML report could not be built (%s); rebuild it with: nexlify report %s",
                  summary["report_error"], out_dir)  # fmt: skip
        return
    log.info("report: %s", path)


EXECUTION_ONLY = {"pipeline": ("workers", "share_cores", "backend", "ray_address", "output_dir")}
"""Settings that change how a run executes but not its results: a resume may change them."""


def run_key(config: RunConfig, market: MarketData) -> str:
    """Hash of everything a run's results depend on: its config (less execution-only settings)
    and the data's bars."""
    plain = config.to_dict()
    for section, keys in EXECUTION_ONLY.items():
        for key in keys:
            plain.get(section, {}).pop(key, None)
    text = json.dumps(plain, sort_keys=True, default=str) + market_fingerprint(market)
    return hashlib.sha256(text.encode()).hexdigest()


def remove_stale_temp_files(out_dir: Path) -> list[Path]:
    """Delete the temp files of writes a crash cut short (never a finished file)."""
    stale = [p for p in out_dir.rglob(".*.tmp") if p.is_file()]
    stale += [p for p in out_dir.rglob("*.pt.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def check_resumable(out_dir: Path, market: MarketData) -> dict[str, Any] | None:
    """The summary of the interrupted run in ``out_dir`` (None when it never wrote one).

    Raises ConfigError when the folder holds no run or the data differ from the run's.
    """
    path = out_dir / SUMMARY_FILE
    if not path.is_file():
        if not (out_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume {out_dir}: no pipeline run here (no config.yaml)")
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume {out_dir}: {path.name} is unreadable: {exc}") from exc
    recorded = summary.get("data", {}).get("sha256")
    if recorded is not None and recorded != market_fingerprint(market):
        raise ConfigError(
            f"--resume {out_dir}: the data differ from the data this run started on "
            f"({summary['data'].get('source')}, {summary['data'].get('start')} .. "
            f"{summary['data'].get('end')}); resume with the same data or start a new run"
        )
    return dict(summary)


def run_pipeline(
    config: RunConfig,
    market: MarketData,
    log: logging.Logger,
    out_dir: Path,
    progress: ProgressSink | None = None,
    *,
    resume: bool = False,
) -> dict[str, Any]:
    """Run both phases on ``market`` and write every artefact under ``out_dir``.

    Every finished unit leaves its model and ``outcome.json`` behind, so a run stopped at any
    point (crash, SIGKILL, Ctrl-C) continues with ``resume=True``: finished units are reused,
    the rest are trained, and the result equals an uninterrupted run's. Ctrl-C raises
    :class:`InterruptedRunError` once the summary is saved.
    """
    handler = attach_run_log(log, out_dir)
    try:
        return _run_pipeline(config, market, log, out_dir, progress, resume)
    except KeyboardInterrupt:
        log.warning("interrupted: finished runs are saved in %s; continue with "
                    "`nexlify train --resume %s`", out_dir, out_dir)  # fmt: skip
        raise InterruptedRunError(
            f"interrupted; finished runs are saved in {out_dir}; continue with: "
            f"nexlify train --resume {out_dir}"
        ) from None
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


@dataclass(frozen=True)
class ValidationFold:
    """Where one unit of a candidate trains and where it is scored."""

    train: MarketData
    val: MarketData


def validation_folds(market: MarketData, config: RunConfig) -> list[ValidationFold]:
    """The folds every candidate (initial run or retraining iteration) is scored on.

    holdout: one fold, trained before the last ``validation_days`` and scored on them.
    walk-forward: the validation days are cut into ``validation_folds`` consecutive windows;
    fold k trains on every bar before its window less ``validation_embargo_bars`` (anchored)
    and is scored on its window, so each score is out of sample and the folds together cover
    several market periods instead of one.
    """
    pcfg, data = config.pipeline, config.data
    train, val, _ = split_market(market, data)
    if pcfg.validation == "holdout":
        return [ValidationFold(train, val)]
    dev_bars = train.n_bars + val.n_bars
    k, embargo = pcfg.validation_folds, pcfg.validation_embargo_bars
    episode = config.market.env.episode_length
    window = val.n_bars // k
    if window < episode:
        raise ConfigError(
            f"pipeline.validation_folds: {k} walk-forward windows of the {val.n_bars} validation "
            f"bars are {window} bars each, shorter than an episode ({episode} bars); use fewer "
            "folds or more data.validation_days"
        )
    folds = []
    for i in range(k):
        start = train.n_bars + i * window
        stop = dev_bars if i == k - 1 else start + window
        if start - embargo < episode:
            raise ConfigError(
                f"pipeline.validation_folds: walk-forward fold {i + 1} would train on "
                f"{max(start - embargo, 0)} bars, fewer than an episode ({episode})"
            )
        folds.append(ValidationFold(market.slice(0, start - embargo), market.slice(start, stop)))
    return folds


def combine_folds(outcomes: list[dict[str, Any]], folds: list[ValidationFold]) -> dict[str, Any]:
    """One candidate's record from its fold units: the mean score and metrics over the folds,
    the newest fold's model (trained on the most data) and each fold's own figures."""
    if len(outcomes) == 1:
        return outcomes[0]
    last = outcomes[-1]
    return {
        **last,
        **_means([o["val_score"] for o in outcomes], [o["val_metrics"] for o in outcomes]),
        "train_return": float(np.mean([o["train_return"] for o in outcomes])),
        "seconds": float(sum(o["seconds"] for o in outcomes)),
        "folds": [
            {
                "fold": i + 1,
                "train_end": fold.train.span()[1].isoformat(),
                "val_start": fold.val.span()[0].isoformat(),
                "val_end": fold.val.span()[1].isoformat(),
                "val_score": o["val_score"],
                "val_metrics": o["val_metrics"],
                "model_path": o["model_path"],
            }
            for i, (o, fold) in enumerate(zip(outcomes, folds, strict=True))
        ],
    }


def _means(scores: list[float], metrics: list[dict[str, float]]) -> dict[str, Any]:
    """``val_score`` and ``val_metrics`` averaged over folds (metrics every fold has)."""
    keys = [k for k in metrics[-1] if all(k in m for m in metrics)]
    return {
        "val_score": float(np.mean(scores)),
        "val_metrics": {k: float(np.mean([m[k] for m in metrics])) for k in keys},
    }


def _run_pipeline(
    config: RunConfig,
    market: MarketData,
    log: logging.Logger,
    out_dir: Path,
    progress: ProgressSink | None,
    resume: bool,
) -> dict[str, Any]:
    started = time.perf_counter()
    pcfg = config.pipeline
    if resume:
        previous = check_resumable(out_dir, market)
        if previous is not None and previous.get("pipeline_complete"):
            log.info("%s: this run is already complete; nothing to resume", out_dir)
            return previous
        stale = remove_stale_temp_files(out_dir)
        log.info("resuming the run in %s (%d unfinished write%s removed)", out_dir, len(stale),
                 "" if len(stale) == 1 else "s")  # fmt: skip
    key = run_key(config, market)
    reused: list[str] = []
    folds = validation_folds(market, config)
    n_folds = len(folds)
    train_data, val_data, test_data = split_market(market, config.data)
    last_val = folds[-1].val
    atomic_write_text(out_dir / "config.yaml", config.to_yaml())
    log.info(
        "data: %s | %s | train %d bars, validation %d bars (%s .. %s)%s",
        market.source, ", ".join(market.pairs), train_data.n_bars, val_data.n_bars,
        *(t.isoformat() for t in val_data.span()),
        f", test {test_data.n_bars} bars held out" if test_data is not None else "",
    )  # fmt: skip
    for note in market.notes:
        log.info("data note: %s", note)
    if market.source == "synthetic":
        log.warning(SYNTHETIC_WARNING)
    if n_folds > 1:
        log.info("validation: walk-forward over %d folds (each candidate trains %d times; its "
                 "score is the mean over the folds)", n_folds, n_folds)  # fmt: skip

    summary: dict[str, Any] = {
        "pipeline_complete": False,
        "data_source": "synthetic" if market.source == "synthetic" else market.source,
        "data": {**market.describe(), "sha256": market_fingerprint(market)},
        "validation_window": {
            "start": val_data.span()[0].isoformat(),
            "end": val_data.span()[1].isoformat(),
            "bars": val_data.n_bars,
        },
        "validation": {"method": pcfg.validation, "folds": _fold_table(folds)},
        "config": config.to_dict(),
        "versions": _versions(),
        "initial_runs": [],
        "retraining_iterations": [],
    }
    per_fold = [run_baselines(f.val, config.market, seed=pcfg.base_seed, history=market)
                for f in folds]  # fmt: skip
    summary["baselines"] = {}
    for name in per_fold[0]:
        scores = [results[name].score() for results in per_fold]
        entry = _means(scores, [results[name].average() for results in per_fold])
        if n_folds > 1:
            entry["fold_scores"] = scores
        daily = [
            window_daily_returns(fold.val, results[name], None)
            for fold, results in zip(folds, per_fold, strict=True)
        ]
        entry["excess_daily_return"] = excess_of_returns(np.concatenate(daily))
        summary["baselines"][name] = entry
    for name, entry in summary["baselines"].items():
        log.info("baseline %-13s val score %.3f (return %+.3f%%, Sharpe %.2f, excess/day %s)",
                 name, entry["val_score"], entry["val_metrics"]["avg_return"],
                 entry["val_metrics"]["avg_sharpe"],
                 format_excess(entry["excess_daily_return"]))  # fmt: skip
    summary_path = out_dir / SUMMARY_FILE
    atomic_write_json(summary_path, summary)

    # ---- phase 1: multi-start -----------------------------------------------------------
    workers = pipeline_workers(pcfg, pcfg.initial_runs * n_folds)
    threads = config.train.torch_threads
    log_path = str(out_dir / LOG_FILE)

    def units(name: str, folder: str, seed: int, episodes: int,
              starts: list[str | None] | None = None, **more: Any) -> list[UnitTask]:  # fmt: skip
        """The fold units of one candidate (a single unit with holdout validation)."""
        tasks = []
        for i, fold in enumerate(folds):
            label = name if n_folds == 1 else f"{name}_fold_{i + 1}"
            model_dir = out_dir / folder / name
            if n_folds > 1:
                model_dir = model_dir / f"fold_{i + 1}"
            task = UnitTask(label=label, seed=seed, episodes=episodes, config=config,
                            train_data=fold.train, val_data=fold.val,
                            model_dir=str(model_dir), threads=threads, logger_name=log.name,
                            init_model=starts[i] if starts else None, output_dir=str(out_dir),
                            **more)  # fmt: skip
            tasks.append(replace(task, fingerprint=unit_fingerprint(key, task)))
        return tasks

    def done_before(task: UnitTask) -> dict[str, Any] | None:
        outcome = finished_outcome(task, log) if resume else None
        if outcome is not None:
            reused.append(task.label)
            log.info("%s: finished before (val score %.3f); reused", task.label,
                     outcome["val_score"])  # fmt: skip
        return outcome

    def record_unit(outcome: dict[str, Any]) -> None:
        log.info("%s (seed %d) done: val score %.3f, train return %+.3f%%, %.0fs -> %s",
                 outcome["label"], outcome["seed"], outcome["val_score"], outcome["train_return"],
                 outcome["seconds"], outcome["model_path"])  # fmt: skip

    def train_all(tasks: list[UnitTask], parallel: bool) -> list[dict[str, Any]]:
        """Outcomes in task order; finished units reused, the rest trained."""
        earlier = {task.label: done_before(task) for task in tasks}
        todo = [task for task in tasks if earlier[task.label] is None]
        if parallel and todo:
            shared = min(workers, len(todo))
            todo = [replace(t, log_path=log_path, concurrent_units=shared) for t in todo]
            fresh = run_initial_phase(
                todo, workers, record_unit, progress, backend=pcfg.backend,
                ray_address=pcfg.ray_address,
            )  # fmt: skip
        else:
            fresh = [train_unit(t, _unit_progress(progress, t.label)) for t in todo]
        trained = iter(fresh)
        return [earlier[task.label] or next(trained) for task in tasks]

    candidates = [
        units(f"run_{k + 1}", "initial_runs", pcfg.seed_of_run(k), pcfg.initial_episodes)
        for k in range(pcfg.initial_runs)
    ]
    turns = takes_turns(pcfg.backend, workers, threads, pcfg.share_cores)
    log.info("phase 1: %d initial runs x %d episodes%s (%d worker process%s, %d thread%s each%s)",
             len(candidates), pcfg.initial_episodes,
             f" x {n_folds} folds" if n_folds > 1 else "", workers, "es" if workers > 1 else "",
             threads, "s" if threads > 1 else "",
             f", taking turns on {os.cpu_count() or 1} cores" if turns else "")  # fmt: skip
    phase1_start = time.perf_counter()
    flat = train_all([task for group in candidates for task in group], parallel=True)
    outcomes = [
        combine_folds(flat[k * n_folds : (k + 1) * n_folds], folds) for k in range(len(candidates))
    ]
    for k, outcome in enumerate(outcomes):
        summary["initial_runs"].append(
            {"run_id": k + 1, **{key: v for key, v in outcome.items() if key != "label"}}
        )
    best = max(outcomes, key=lambda o: o["val_score"])
    best_initial_score = best["val_score"]
    best_score, best_seed = best_initial_score, best["seed"]
    best_models = _fold_models(best)
    summary["best_initial_run"] = outcomes.index(best) + 1
    summary["best_initial_score"] = best_initial_score
    summary["timings"] = {"phase1_seconds": time.perf_counter() - phase1_start}
    log.info("phase 1 best: run_%d (seed %d) val score %.3f", summary["best_initial_run"],
             best_seed, best_initial_score)  # fmt: skip
    atomic_write_json(summary_path, summary)

    # ---- phase 2: auto-retraining --------------------------------------------------------
    phase2_start = time.perf_counter()
    stop_reason = "max_iterations"
    without_best = 0
    best_outcome = best
    for iteration in range(1, pcfg.max_iterations + 1):
        tasks = units(f"iteration_{iteration}", "retraining", best_seed + iteration,
                      pcfg.retrain_episodes, starts=list(best_models),
                      eps_start=pcfg.retrain_eps_start)  # fmt: skip
        outcome = combine_folds(train_all(tasks, parallel=n_folds > 1), folds)
        decision = retrain_decision(best_score, outcome["val_score"], without_best, iteration, pcfg)
        without_best = decision.without_best
        summary["retraining_iterations"].append(
            {
                "iteration": iteration,
                "score": outcome["val_score"],
                "improvement_pct": decision.improvement_pct,
                "new_best": decision.new_best,
                "metrics": outcome["val_metrics"],
                **{k: outcome[k] for k in ("seed", "train_return", "model_path", "seconds")},
                "history": outcome["history"],
                **({"folds": outcome["folds"]} if "folds" in outcome else {}),
            }
        )
        log.info("retraining iteration %d: val score %.3f (%+.2f%% vs best %.3f)%s",
                 iteration, outcome["val_score"], decision.improvement_pct, best_score,
                 " -> new best" if decision.new_best else "")  # fmt: skip
        if decision.new_best:
            best_models, best_score = _fold_models(outcome), outcome["val_score"]
            best_outcome = outcome
        atomic_write_json(summary_path, summary)
        if decision.stop_reason is not None:
            stop_reason = decision.stop_reason
            break

    best_path = best_models[-1]
    # With walk-forward validation only the newest window is unseen by the newest-fold models
    # the ensemble is made of: the ensemble and the best model are compared there.
    reference = best_outcome["folds"][-1]["val_score"] if n_folds > 1 else best_score
    final_source, final_kind, final_score = best_path, "single", best_score
    if pcfg.ensemble_size >= 2:
        ensemble = build_ensemble(summary, pcfg, last_val, config, out_dir, log)
        if ensemble is not None:
            if n_folds > 1:
                ensemble["compared_on"] = "newest walk-forward window"
                ensemble["best_single_score_there"] = reference
            summary["ensemble"] = ensemble
            if ensemble["val_score"] > reference:
                final_source, final_kind = ensemble["model_path"], "ensemble"
                final_score = ensemble["val_score"]
    final_path = out_dir / FINAL_MODEL
    with open(final_source, "rb") as source:
        atomic_write(final_path, lambda handle: shutil.copyfileobj(source, handle))
    summary["edge"] = no_edge_gate(summary, final_path, last_val, config, log)
    summary["timings"]["phase2_seconds"] = time.perf_counter() - phase2_start
    summary["timings"]["total_seconds"] = time.perf_counter() - started
    if resume:
        summary["resumed"] = {"units_reused": reused}
    summary.update(
        {
            "pipeline_complete": True,
            "stop_reason": stop_reason,
            "final_best_score": best_score,
            "total_improvement_pct": improvement_pct(best_initial_score, best_score)
            if math.isfinite(best_initial_score)
            else 0.0,
            "final_model_source": final_source,
            "final_model_path": str(final_path),
            "final_model_kind": final_kind,
            "final_model_score": final_score,
        }
    )
    atomic_write_json(summary_path, summary)
    write_report(summary, out_dir)
    _write_html_report(summary, out_dir, market, log)
    log.info("pipeline complete (%s): best initial %.3f -> final %.3f (%+.2f%%) in %.0fs; "
             "final model %s", stop_reason, best_initial_score, best_score,
             summary["total_improvement_pct"], summary["timings"]["total_seconds"],
             final_path)  # fmt: skip
    log_edge(log, summary["edge"])
    return summary


def no_edge_gate(
    summary: dict[str, Any], final_path: Path, val: MarketData, config: RunConfig,
    log: logging.Logger,
) -> dict[str, Any]:  # fmt: skip
    """Test the final model against cash on its validation data, counting every candidate
    scored as a trial, and store the verdict in ``final_model.pt``.

    A gate that cannot run is logged as an error and recorded as showing no edge, never
    skipped: a model is only said to have an edge when the test ran and found one.
    """
    try:
        edge = run_edge_gate(final_path, val, config.market, summary,
                             seed=config.pipeline.base_seed)  # fmt: skip
        write_model_edge(final_path, edge)
    except Exception as exc:  # the models are safe on disk; the verdict says what failed
        edge = {"found": False, "test": "deflated_sharpe", "error": f"{type(exc).__name__}: {exc}"}
        log.error("the edge test of %s could not run (%s); it counts as no edge", final_path,
                  edge["error"])  # fmt: skip
    return edge


def log_edge(log: logging.Logger, edge: dict[str, Any]) -> None:
    """The verdict as the run's last log line: a warning (red on the console) when no edge."""
    if edge.get("found"):
        log.info("%s", describe_edge(edge))
    else:
        log.warning("%s; do not trade this model live", describe_edge(edge))


def _fold_table(folds: list[ValidationFold]) -> list[dict[str, Any]]:
    return [
        {
            "fold": i + 1,
            "train_bars": f.train.n_bars,
            "train_end": f.train.span()[1].isoformat(),
            "val_start": f.val.span()[0].isoformat(),
            "val_end": f.val.span()[1].isoformat(),
            "val_bars": f.val.n_bars,
        }
        for i, f in enumerate(folds)
    ]


def _fold_models(outcome: dict[str, Any]) -> list[str]:
    """The model of each fold of a candidate (one with holdout validation)."""
    return (
        [f["model_path"] for f in outcome["folds"]]
        if "folds" in outcome
        else [outcome["model_path"]]
    )
