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
rules used); ``final_model_score`` is the score of what ``final_model.pt`` holds. With
``ensemble_members`` seeds the members are one model per initial run instead (the winning seed's
retrained best, the others' initial models) and the ensemble is final whatever it scores.

Selection: with ``selection`` lcb the final model is instead whichever saved candidate (or the
ensemble, seed ensemble included) shows the highest lower bound of its daily excess return over
cash on the newest validation window (:mod:`nexlify.pipeline.selection`); phase 2 still
retrains from the best by score.
"""

from __future__ import annotations

import logging
import math
import os
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
from nexlify.errors import InterruptedRunError
from nexlify.evaluation.edge import (
    candidate_paths,
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
from nexlify.pipeline.folds import (
    ValidationFold,
    combine_folds,
    fold_means,
    fold_models,
    fold_table,
    validation_folds,
)
from nexlify.pipeline.placement import plan_devices, takes_turns, units_at_once
from nexlify.pipeline.report import write_report
from nexlify.pipeline.run_files import (
    EXECUTION_ONLY,
    attach_run_log,
    check_resumable,
    remove_stale_temp_files,
    run_key,
    versions,
    write_html_report,
)
from nexlify.pipeline.runs import (
    UnitTask,
    finished_outcome,
    market_fingerprint,
    train_unit,
    unit_fingerprint,
)
from nexlify.pipeline.selection import Candidate, select_by_lcb
from nexlify.run_layout import ENSEMBLE_MODEL, FINAL_MODEL, LOG_FILE, SUMMARY_FILE
from nexlify.train.config import PipelineConfig, RunConfig
from nexlify.train.trainer import validate

__all__ = [  # the run's files and folds, used by the commands and the study
    "ENSEMBLE_MODEL", "EXECUTION_ONLY", "FINAL_MODEL", "LOG_FILE", "SUMMARY_FILE",
    "ValidationFold", "attach_run_log", "check_resumable", "run_pipeline", "validation_folds",
]  # fmt: skip


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


def ensemble_candidates(
    summary: dict[str, Any], pcfg: PipelineConfig, best: tuple[float, str]
) -> list[tuple[float, str]]:
    """(validation score, model file) of the ensemble's members, best first: the
    ``ensemble_size`` best of both phases, or (``ensemble_members`` seeds) one per initial run,
    the winning seed's run replaced by ``best``, its retrained best model."""
    runs = [(r["val_score"], r["model_path"]) for r in summary["initial_runs"]]
    if pcfg.ensemble_members == "seeds":
        winner = summary["best_initial_run"] - 1
        others = [run for k, run in enumerate(runs) if k != winner]
        return [best, *sorted(others, key=lambda c: -c[0])]
    candidates = runs + [(it["score"], it["model_path"]) for it in summary["retraining_iterations"]]
    candidates = [c for c in candidates if math.isfinite(c[0])]
    return sorted(candidates, key=lambda c: -c[0])[: pcfg.ensemble_size]


def build_ensemble(
    summary: dict[str, Any],
    pcfg: PipelineConfig,
    val_data: MarketData,
    config: RunConfig,
    out_dir: Path,
    log: logging.Logger,
    best: tuple[float, str],
) -> dict[str, Any] | None:
    """Combine the members of :func:`ensemble_candidates`, validate and save the ensemble."""
    top = ensemble_candidates(summary, pcfg, best)
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
        "chosen_by": "one model per seed" if pcfg.ensemble_members == "seeds" else "top scores",
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


def run_pipeline(
    config: RunConfig,
    market: MarketData,
    log: logging.Logger,
    out_dir: Path,
    progress: ProgressSink | None = None,
    *,
    resume: bool = False,
    continue_with: str | None = None,
) -> dict[str, Any]:
    """Run both phases on ``market`` and write every artefact under ``out_dir``.

    Every finished unit leaves its model and ``outcome.json`` behind, so a run stopped at any
    point (crash, SIGKILL, Ctrl-C) continues with ``resume=True``: finished units are reused,
    the rest are trained, and the result equals an uninterrupted run's. Ctrl-C raises
    :class:`InterruptedRunError` once the summary is saved, saying how to continue
    (``continue_with``: the command a caller such as the study resumes with; default
    ``nexlify train --resume OUT_DIR``).
    """
    handler = attach_run_log(log, out_dir)
    how = continue_with or f"nexlify train --resume {out_dir}"
    try:
        return _run_pipeline(config, market, log, out_dir, progress, resume)
    except KeyboardInterrupt:
        log.warning("interrupted: finished runs are saved in %s; continue with: %s", out_dir,
                    how)  # fmt: skip
        raise InterruptedRunError(
            f"interrupted; finished runs are saved in {out_dir}; continue with: {how}"
        ) from None
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
    resume: bool,
) -> dict[str, Any]:
    if resume:
        previous = check_resumable(out_dir, market)
        if previous is not None and previous.get("pipeline_complete"):
            log.info("%s: this run is already complete; nothing to resume", out_dir)
            return previous
        stale = remove_stale_temp_files(out_dir)
        log.info("resuming the run in %s (%d unfinished write%s removed)", out_dir, len(stale),
                 "" if len(stale) == 1 else "s")  # fmt: skip
    run = PipelineRun(config, market, log, out_dir, progress, resume)
    run.start()
    best = run.initial_phase()
    retrained = run.retraining_phase(best)
    return run.finish(retrained)


@dataclass
class Retrained:
    """Where phase 2 ended: the best candidate so far and why retraining stopped."""

    best_outcome: dict[str, Any]
    best_models: list[str]
    """The best candidate's model of each fold (one with holdout validation)."""
    best_score: float
    best_initial_score: float
    stop_reason: str


class PipelineRun:
    """One run of the main job in ``out_dir``: its folds, units and summary, phase by phase.

    A *candidate* (an initial run or a retraining iteration) is one *unit* per validation fold;
    finished units are reused on resume (:func:`nexlify.pipeline.runs.finished_outcome`).
    """

    def __init__(
        self,
        config: RunConfig,
        market: MarketData,
        log: logging.Logger,
        out_dir: Path,
        progress: ProgressSink | None,
        resume: bool,
    ) -> None:
        self.started = time.perf_counter()
        self.config = config
        self.pcfg = config.pipeline
        self.market = market
        self.log = log
        self.out_dir = out_dir
        self.progress = progress
        self.resume = resume
        self.key = run_key(config, market)
        self.reused: list[str] = []
        self.folds = validation_folds(market, config)
        self.workers = pipeline_workers(self.pcfg, self.pcfg.initial_runs * len(self.folds))
        self.summary: dict[str, Any] = {}
        self.summary_path = out_dir / SUMMARY_FILE
        self.phase2_start = 0.0

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    def save_summary(self) -> None:
        atomic_write_json(self.summary_path, self.summary)

    # ---- start: the data, the summary's frame, the baselines ----------------------------------
    def start(self) -> None:
        config, market, log = self.config, self.market, self.log
        train_data, val_data, test_data = split_market(market, config.data)
        atomic_write_text(self.out_dir / "config.yaml", config.to_yaml())
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
        if self.n_folds > 1:
            log.info("validation: walk-forward over %d folds (each candidate trains %d "
                     "times; its score is the mean over the folds)", self.n_folds,
                     self.n_folds)  # fmt: skip
        self.summary = {
            "pipeline_complete": False,
            "data_source": "synthetic" if market.source == "synthetic" else market.source,
            "data": {**market.describe(), "sha256": market_fingerprint(market)},
            "validation_window": {
                "start": val_data.span()[0].isoformat(),
                "end": val_data.span()[1].isoformat(),
                "bars": val_data.n_bars,
            },
            "validation": {"method": self.pcfg.validation, "folds": fold_table(self.folds)},
            "config": config.to_dict(),
            "versions": versions(),
            "initial_runs": [],
            "retraining_iterations": [],
            "baselines": self.baselines(),
        }
        self.save_summary()

    def baselines(self) -> dict[str, Any]:
        """Every baseline's validation record, averaged over the folds as candidates are."""
        per_fold = [run_baselines(f.val, self.config.market, seed=self.pcfg.base_seed,
                                  history=self.market) for f in self.folds]  # fmt: skip
        out = {}
        for name in per_fold[0]:
            scores = [results[name].score() for results in per_fold]
            entry = fold_means(scores, [results[name].average() for results in per_fold])
            if self.n_folds > 1:
                entry["fold_scores"] = scores
            daily = [
                window_daily_returns(fold.val, results[name], None)
                for fold, results in zip(self.folds, per_fold, strict=True)
            ]
            entry["excess_daily_return"] = excess_of_returns(np.concatenate(daily))
            out[name] = entry
            self.log.info("baseline %-13s val score %.3f (return %+.3f%%, Sharpe %.2f, "
                          "excess/day %s)", name, entry["val_score"],
                          entry["val_metrics"]["avg_return"], entry["val_metrics"]["avg_sharpe"],
                          format_excess(entry["excess_daily_return"]))  # fmt: skip
        return out

    # ---- units: one per fold of a candidate ---------------------------------------------------
    def units(self, name: str, folder: str, seed: int, episodes: int,
              starts: list[str] | None = None, **more: Any) -> list[UnitTask]:  # fmt: skip
        """The fold units of one candidate (a single unit with holdout validation)."""
        tasks = []
        for i, fold in enumerate(self.folds):
            label = name if self.n_folds == 1 else f"{name}_fold_{i + 1}"
            model_dir = self.out_dir / folder / name
            if self.n_folds > 1:
                model_dir = model_dir / f"fold_{i + 1}"
            task = UnitTask(label=label, seed=seed, episodes=episodes, config=self.config,
                            train_data=fold.train, val_data=fold.val,
                            model_dir=str(model_dir), threads=self.config.train.torch_threads,
                            logger_name=self.log.name,
                            init_model=starts[i] if starts else None,
                            output_dir=str(self.out_dir), **more)  # fmt: skip
            tasks.append(replace(task, fingerprint=unit_fingerprint(self.key, task)))
        return tasks

    def reuse(self, task: UnitTask) -> dict[str, Any] | None:
        """The outcome of ``task`` when a resumed run finished it before, else None."""
        outcome = finished_outcome(task, self.log) if self.resume else None
        if outcome is not None:
            self.reused.append(task.label)
            self.log.info("%s: finished before (val score %.3f); reused", task.label,
                          outcome["val_score"])  # fmt: skip
        return outcome

    def record_unit(self, outcome: dict[str, Any]) -> None:
        self.log.info("%s (seed %d) done: val score %.3f, train return %+.3f%%, %.0fs -> %s",
                      outcome["label"], outcome["seed"], outcome["val_score"],
                      outcome["train_return"], outcome["seconds"],
                      outcome["model_path"])  # fmt: skip

    def train_all(self, tasks: list[UnitTask], parallel: bool) -> list[dict[str, Any]]:
        """Outcomes in task order; finished units reused, the rest trained."""
        earlier = {task.label: self.reuse(task) for task in tasks}
        todo = [task for task in tasks if earlier[task.label] is None]
        if parallel and todo:
            shared = min(self.workers, len(todo))
            log_path = str(self.out_dir / LOG_FILE)
            todo = [replace(t, log_path=log_path, concurrent_units=shared) for t in todo]
            fresh = run_initial_phase(todo, self.workers, self.record_unit, self.progress,
                                      backend=self.pcfg.backend,
                                      ray_address=self.pcfg.ray_address)  # fmt: skip
        else:
            fresh = [train_unit(t, _unit_progress(self.progress, t.label)) for t in todo]
        trained = iter(fresh)
        return [earlier[task.label] or next(trained) for task in tasks]

    # ---- phase 1: multi-start ------------------------------------------------------------------
    def initial_phase(self) -> dict[str, Any]:
        """Train every initial run; the best by validation score."""
        pcfg, log, n_folds = self.pcfg, self.log, self.n_folds
        candidates = [
            self.units(f"run_{k + 1}", "initial_runs", pcfg.seed_of_run(k), pcfg.initial_episodes)
            for k in range(pcfg.initial_runs)
        ]
        threads = self.config.train.torch_threads
        turns = takes_turns(pcfg.backend, self.workers, threads, pcfg.share_cores)
        log.info("phase 1: %d initial runs x %d episodes%s (%d worker process%s, %d thread%s "
                 "each%s)", len(candidates), pcfg.initial_episodes,
                 f" x {n_folds} folds" if n_folds > 1 else "", self.workers,
                 "es" if self.workers > 1 else "", threads, "s" if threads > 1 else "",
                 f", taking turns on {os.cpu_count() or 1} cores" if turns else "")  # fmt: skip
        phase_start = time.perf_counter()
        flat = self.train_all([task for group in candidates for task in group], parallel=True)
        outcomes = [combine_folds(flat[k * n_folds : (k + 1) * n_folds], self.folds)
                    for k in range(len(candidates))]  # fmt: skip
        for k, outcome in enumerate(outcomes):
            self.summary["initial_runs"].append(
                {"run_id": k + 1, **{key: v for key, v in outcome.items() if key != "label"}}
            )
        best = max(outcomes, key=lambda o: o["val_score"])
        self.summary["best_initial_run"] = outcomes.index(best) + 1
        self.summary["best_initial_score"] = best["val_score"]
        self.summary["timings"] = {"phase1_seconds": time.perf_counter() - phase_start}
        log.info("phase 1 best: run_%d (seed %d) val score %.3f", self.summary["best_initial_run"],
                 best["seed"], best["val_score"])  # fmt: skip
        self.save_summary()
        return best

    # ---- phase 2: auto-retraining --------------------------------------------------------------
    def retraining_phase(self, best: dict[str, Any]) -> Retrained:
        """Retrain from the best model until the stopping rules (``retrain_decision``) say so."""
        self.phase2_start = time.perf_counter()
        state = Retrained(best, fold_models(best), best["val_score"], best["val_score"],
                          "max_iterations")  # fmt: skip
        without_best = 0
        for iteration in range(1, self.pcfg.max_iterations + 1):
            outcome = self.iteration(iteration, best["seed"], state.best_models)
            decision = retrain_decision(state.best_score, outcome["val_score"], without_best,
                                        iteration, self.pcfg)  # fmt: skip
            without_best = decision.without_best
            self.record_iteration(iteration, outcome, decision, state.best_score)
            if decision.new_best:
                state.best_models, state.best_score = fold_models(outcome), outcome["val_score"]
                state.best_outcome = outcome
            self.save_summary()
            if decision.stop_reason is not None:
                state.stop_reason = decision.stop_reason
                break
        return state

    def iteration(self, iteration: int, best_seed: int, starts: list[str]) -> dict[str, Any]:
        """Retraining iteration ``iteration``: each fold unit from the best model of its fold."""
        tasks = self.units(f"iteration_{iteration}", "retraining", best_seed + iteration,
                           self.pcfg.retrain_episodes, starts=list(starts),
                           eps_start=self.pcfg.retrain_eps_start)  # fmt: skip
        return combine_folds(self.train_all(tasks, parallel=self.n_folds > 1), self.folds)

    def record_iteration(
        self, iteration: int, outcome: dict[str, Any], decision: RetrainDecision, best: float
    ) -> None:
        self.summary["retraining_iterations"].append(
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
        self.log.info("retraining iteration %d: val score %.3f (%+.2f%% vs best %.3f)%s",
                      iteration, outcome["val_score"], decision.improvement_pct, best,
                      " -> new best" if decision.new_best else "")  # fmt: skip

    # ---- the final model, the edge test and the files ------------------------------------------
    def final_model(self, state: Retrained) -> tuple[str, str, float]:
        """(source file, kind, score) of the final model. Selection score: the best single
        model, or the ensemble when it scores higher where every member is unseen (always with
        seed members). Selection lcb: :meth:`lcb_choice`."""
        # With walk-forward validation only the newest window is unseen by the newest-fold
        # models the ensemble is made of: the ensemble and the best model are compared there.
        multi = self.n_folds > 1
        reference = state.best_outcome["folds"][-1]["val_score"] if multi else state.best_score
        final = (state.best_models[-1], "single", state.best_score)
        seeds = self.pcfg.ensemble_members == "seeds"
        wanted = self.pcfg.ensemble_size >= 2 or seeds
        ensemble = self.ensemble(state, reference) if wanted else None
        if self.pcfg.selection == "lcb":
            return self.lcb_choice(ensemble)
        if ensemble is not None and (seeds or ensemble["val_score"] > reference):
            return ensemble["model_path"], "ensemble", ensemble["val_score"]
        return final

    def ensemble(self, state: Retrained, reference: float) -> dict[str, Any] | None:
        """Build, validate and record the ensemble (None when there are too few members)."""
        ensemble = build_ensemble(self.summary, self.pcfg, self.folds[-1].val, self.config,
                                  self.out_dir, self.log,
                                  (state.best_score, state.best_models[-1]))  # fmt: skip
        if ensemble is not None:
            if self.n_folds > 1:
                ensemble["compared_on"] = "newest walk-forward window"
                ensemble["best_single_score_there"] = reference
            self.summary["ensemble"] = ensemble
        return ensemble

    def lcb_choice(self, ensemble: dict[str, Any] | None) -> tuple[str, str, float]:
        """Selection lcb (:mod:`nexlify.pipeline.selection`): among the saved candidates and
        the ensemble, the one with the highest lower bound of its daily excess return on the
        newest validation window, the only one the newest-fold models have not seen."""
        scores = {run["model_path"]: run["val_score"] for run in self.summary["initial_runs"]}
        scores |= {it["model_path"]: it["score"] for it in self.summary["retraining_iterations"]}
        candidates = [Candidate(path, scores[path]) for path in candidate_paths(self.summary)]
        if ensemble is not None:
            candidates.append(Candidate(ensemble["model_path"], ensemble["val_score"]))
        selection = select_by_lcb(candidates, self.folds[-1].val, self.config.market,
                                  seed=self.pcfg.base_seed)  # fmt: skip
        if self.n_folds > 1:
            selection["compared_on"] = "newest walk-forward window"
        self.summary["selection"] = selection
        chosen = selection["candidates"][selection["chosen_index"]]
        self.log.info("selection lcb: chose %s of %d candidates: daily excess over cash "
                      "%+.3f%%, lower bound %+.3f%% (the highest)", chosen["model_path"],
                      len(candidates), chosen["excess_daily_pct"], chosen["low_pct"])  # fmt: skip
        is_ensemble = ensemble is not None and chosen["model_path"] == ensemble["model_path"]
        return chosen["model_path"], "ensemble" if is_ensemble else "single", chosen["val_score"]

    def finish(self, state: Retrained) -> dict[str, Any]:
        """Write final_model.pt, test it for an edge, complete the summary and the reports."""
        summary, log = self.summary, self.log
        final_source, final_kind, final_score = self.final_model(state)
        final_path = self.out_dir / FINAL_MODEL
        with open(final_source, "rb") as source:
            atomic_write(final_path, lambda handle: shutil.copyfileobj(source, handle))
        summary["edge"] = no_edge_gate(summary, final_path, self.folds[-1].val, self.config, log)
        summary["timings"]["phase2_seconds"] = time.perf_counter() - self.phase2_start
        summary["timings"]["total_seconds"] = time.perf_counter() - self.started
        if self.resume:
            summary["resumed"] = {"units_reused": self.reused}
        first = state.best_initial_score
        summary.update(
            {
                "pipeline_complete": True,
                "stop_reason": state.stop_reason,
                "final_best_score": state.best_score,
                "total_improvement_pct": improvement_pct(first, state.best_score)
                if math.isfinite(first)
                else 0.0,
                "final_model_source": final_source,
                "final_model_path": str(final_path),
                "final_model_kind": final_kind,
                "final_model_score": final_score,
            }
        )
        self.save_summary()
        write_report(summary, self.out_dir)
        write_html_report(summary, self.out_dir, self.market, log)
        log.info("pipeline complete (%s): best initial %.3f -> final %.3f (%+.2f%%) in %.0fs; "
                 "final model %s", state.stop_reason, first, state.best_score,
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
