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

import logging
import math
import multiprocessing
import os
import platform
import queue
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nexlify.agent.dqn import load_agent
from nexlify.agent.ensemble import EnsembleAgent
from nexlify.data.market_data import MarketData
from nexlify.io import atomic_write_json, atomic_write_text
from nexlify.market.baselines import run_baselines
from nexlify.pipeline.data_choice import SYNTHETIC_WARNING, split_market
from nexlify.pipeline.report import write_report
from nexlify.pipeline.runs import UnitTask, train_unit
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


def _workers(config: PipelineConfig) -> int:
    wanted = config.workers or (os.cpu_count() or 1)
    return max(1, min(wanted, config.initial_runs))


def _unit_progress(sink: ProgressSink | None, label: str) -> Callable[[int, int], None] | None:
    if sink is None:
        return None
    return lambda done, total: sink.update(label, done, total)


def run_initial_phase(
    tasks: list[UnitTask],
    workers: int,
    on_done: Callable[[dict[str, Any]], None],
    progress: ProgressSink | None = None,
) -> list[dict[str, Any]]:
    """Train the initial runs, in this process or in ``workers`` spawned processes.

    Outcomes come back in task order whatever order the processes finish in.
    """
    if workers <= 1:
        outcomes = []
        for task in tasks:
            outcome = train_unit(task, _unit_progress(progress, task.label))
            on_done(outcome)
            outcomes.append(outcome)
        return outcomes
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        updates = manager.Queue() if progress is not None else None
        futures = [pool.submit(train_unit, replace(t, progress_queue=updates)) for t in tasks]
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            _drain(updates, progress)
            for future in finished:
                on_done(future.result())
        _drain(updates, progress)
        return [future.result() for future in futures]


def _drain(updates: Any, progress: ProgressSink | None) -> None:
    if updates is None or progress is None:
        return
    while True:
        try:
            label, done, total = updates.get_nowait()
        except queue.Empty:
            return
        progress.update(label, done, total)


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


def run_pipeline(
    config: RunConfig,
    market: MarketData,
    log: logging.Logger,
    out_dir: Path,
    progress: ProgressSink | None = None,
) -> dict[str, Any]:
    """Run both phases on ``market`` and write every artefact under ``out_dir``."""
    handler = attach_run_log(log, out_dir)
    try:
        return _run_pipeline(config, market, log, out_dir, progress)
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


def _run_pipeline(
    config: RunConfig,
    market: MarketData,
    log: logging.Logger,
    out_dir: Path,
    progress: ProgressSink | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    pcfg = config.pipeline
    train_data, val_data, test_data = split_market(market, config.data)
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

    summary: dict[str, Any] = {
        "pipeline_complete": False,
        "data_source": "synthetic" if market.source == "synthetic" else market.source,
        "data": market.describe(),
        "validation_window": {
            "start": val_data.span()[0].isoformat(),
            "end": val_data.span()[1].isoformat(),
            "bars": val_data.n_bars,
        },
        "config": config.to_dict(),
        "versions": _versions(),
        "initial_runs": [],
        "retraining_iterations": [],
    }
    baselines = run_baselines(val_data, config.market, seed=pcfg.base_seed)
    summary["baselines"] = {
        name: {"val_score": r.score(), "val_metrics": r.average()} for name, r in baselines.items()
    }
    for name, entry in summary["baselines"].items():
        log.info("baseline %-13s val score %.3f (return %+.3f%%)", name, entry["val_score"],
                 entry["val_metrics"]["avg_return"])  # fmt: skip
    summary_path = out_dir / SUMMARY_FILE
    atomic_write_json(summary_path, summary)

    # ---- phase 1: multi-start -----------------------------------------------------------
    workers = _workers(pcfg)
    threads = config.train.torch_threads
    log_path = str(out_dir / LOG_FILE)

    def unit(label: str, folder: str, seed: int, episodes: int, **more: Any) -> UnitTask:
        return UnitTask(label=label, seed=seed, episodes=episodes, config=config,
                        train_data=train_data, val_data=val_data,
                        model_dir=str(out_dir / folder / label), threads=threads,
                        logger_name=log.name, **more)  # fmt: skip

    tasks = [
        unit(
            f"run_{k + 1}",
            "initial_runs",
            pcfg.seed_of_run(k),
            pcfg.initial_episodes,
            log_path=log_path if workers > 1 else None,
        )
        for k in range(pcfg.initial_runs)
    ]
    log.info("phase 1: %d initial runs x %d episodes (%d worker process%s, %d thread%s each)",
             len(tasks), pcfg.initial_episodes, workers, "es" if workers > 1 else "",
             threads, "s" if threads > 1 else "")  # fmt: skip
    phase1_start = time.perf_counter()

    def record_initial(outcome: dict[str, Any]) -> None:
        log.info("%s (seed %d) done: val score %.3f, train return %+.3f%%, %.0fs -> %s",
                 outcome["label"], outcome["seed"], outcome["val_score"], outcome["train_return"],
                 outcome["seconds"], outcome["model_path"])  # fmt: skip

    outcomes = run_initial_phase(tasks, workers, record_initial, progress)
    for k, outcome in enumerate(outcomes):
        summary["initial_runs"].append(
            {"run_id": k + 1, **{key: v for key, v in outcome.items() if key != "label"}}
        )
    best = max(outcomes, key=lambda o: o["val_score"])
    best_initial_score = best["val_score"]
    best_path, best_score, best_seed = best["model_path"], best_initial_score, best["seed"]
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
    for iteration in range(1, pcfg.max_iterations + 1):
        task = unit(f"iteration_{iteration}", "retraining", best_seed + iteration,
                    pcfg.retrain_episodes, init_model=best_path,
                    eps_start=pcfg.retrain_eps_start)  # fmt: skip
        outcome = train_unit(task, _unit_progress(progress, task.label))
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
            }
        )
        log.info("retraining iteration %d: val score %.3f (%+.2f%% vs best %.3f)%s",
                 iteration, outcome["val_score"], decision.improvement_pct, best_score,
                 " -> new best" if decision.new_best else "")  # fmt: skip
        if decision.new_best:
            best_path, best_score = outcome["model_path"], outcome["val_score"]
        atomic_write_json(summary_path, summary)
        if decision.stop_reason is not None:
            stop_reason = decision.stop_reason
            break

    final_source, final_kind, final_score = best_path, "single", best_score
    if pcfg.ensemble_size >= 2:
        ensemble = build_ensemble(summary, pcfg, val_data, config, out_dir, log)
        if ensemble is not None:
            summary["ensemble"] = ensemble
            if ensemble["val_score"] > best_score:
                final_source, final_kind = ensemble["model_path"], "ensemble"
                final_score = ensemble["val_score"]
    final_path = out_dir / FINAL_MODEL
    shutil.copyfile(final_source, final_path.with_suffix(".pt.tmp"))
    os.replace(final_path.with_suffix(".pt.tmp"), final_path)
    summary["timings"]["phase2_seconds"] = time.perf_counter() - phase2_start
    summary["timings"]["total_seconds"] = time.perf_counter() - started
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
    return summary
