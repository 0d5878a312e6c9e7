"""Ablation: the full configuration against the same with each component removed in turn.

Every variant trains the same seeds on the same markets (one :func:`train_unit` per variant,
seed and market, spread over worker processes); each run keeps its best validation checkpoint,
exactly as a pipeline run does. Per variant and market the table gives the interquartile mean
(IQM) of the validation scores with a 95% percentile-bootstrap interval, the component's measured
effect (IQM of the per-seed differences full - without, same seed and market, with its bootstrap
interval: positive means the component helps), the original tool's promised gain, and the wall
time of the runs.

The ensemble row is built, not trained: for each seed, the full-configuration models of that seed
and the next two seeds (cyclically) are combined by Q-averaging, as the pipeline combines its
best multi-start runs, and compared with the full single model of that seed.

The default budget is reduced (24 episodes per run against the pipeline's 300, see
:class:`AblationConfig`) so the whole study fits in about 15-20 minutes on 2 cores; such figures
measure early learning, not converged agents, and the table says so whenever the budget is below
the pipeline's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nexlify.agent.dqn import load_agent
from nexlify.agent.ensemble import EnsembleAgent
from nexlify.config import is_int, require
from nexlify.data.market_data import MarketData
from nexlify.errors import ConfigError
from nexlify.evaluation.stats import bootstrap_ci, iqm
from nexlify.io import atomic_write_json, atomic_write_text
from nexlify.pipeline.auto_retrain import run_initial_phase
from nexlify.pipeline.data_choice import split_market
from nexlify.pipeline.placement import units_at_once
from nexlify.pipeline.runs import UnitTask
from nexlify.train.config import PipelineConfig, RunConfig, run_config_from_dict
from nexlify.train.trainer import validate


@dataclass(frozen=True)
class Component:
    """One switchable part: how to remove it and what the original tool promised for it."""

    name: str
    removal: dict[str, dict[str, Any]]
    promised: str


COMPONENTS: tuple[Component, ...] = (
    Component("double_dqn", {"agent": {"double_dqn": False}}, "5-10% better"),
    Component("dueling", {"agent": {"dueling": False}}, "not stated"),
    Component("per", {"agent": {"prioritized_replay": False}}, "10-20% faster learning"),
    Component("n_step", {"agent": {"n_step": 1}}, "not stated"),
    Component("noisy", {"agent": {"noisy": False}}, "not stated"),
    Component("distributional", {"agent": {"distributional": "none"}}, "not stated"),
    Component("swa", {"train": {"swa": False}}, "not stated"),
    Component("augmentation", {"train": {"augment": False}}, "not stated"),
    Component("curriculum", {"train": {"curriculum": False}}, "not stated"),
    Component("early_stopping", {"train": {"early_stopping_patience": 0}}, "not stated"),
)
"""Components removed one at a time (the ensemble row is built from the full runs)."""

ENSEMBLE_PROMISE = "5-15% better"


@dataclass(frozen=True)
class AblationConfig:
    """Budget and scope of an ablation study."""

    seeds: int = 5
    """Seeds per variant and market (seeds base_seed, base_seed + 1000, ...)."""
    episodes: int = 24
    """Training episodes per run (reduced budget; the pipeline default is 300)."""
    eval_every: int = 12
    """Validate every this many episodes."""
    components: tuple[str, ...] = (*(c.name for c in COMPONENTS), "ensemble")
    """Components to remove in turn (plus ``ensemble``)."""
    workers: int = 2
    """Runs trained at once (0 = automatic; 1 = in this process; see pipeline.backends)."""
    ensemble_size: int = 3
    """Members of each ensemble of the ensemble row."""
    n_resamples: int = 2000
    """Bootstrap resamples of each interval."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes written into the results."""

    def __post_init__(self) -> None:
        for name in ("seeds", "episodes", "eval_every", "ensemble_size", "n_resamples"):
            value = getattr(self, name)
            require(is_int(value) and value >= 1, "ablation", name, value, "a whole number >= 1")
        w = self.workers
        require(is_int(w) and w >= 0, "ablation", "workers", w, "a whole number >= 0, 0 = auto")
        parse_components(list(self.components))

    def budget_note(self) -> str:
        """How the budget compares with a pipeline run's (stated under the table)."""
        full = PipelineConfig().initial_episodes
        if self.episodes < full:
            return (f"reduced from the pipeline's {full} episodes per run: early learning, not "
                    "converged agents")  # fmt: skip
        return f"at least the pipeline's {full} episodes per initial run"


def variant_configs(base: RunConfig, components: tuple[str, ...]) -> dict[str, RunConfig]:
    """``full`` plus ``no_<component>`` for each trained component asked for."""
    out = {"full": base}
    for comp in COMPONENTS:
        if comp.name in components:
            out[f"no_{comp.name}"] = run_config_from_dict(comp.removal, base)
    return out


def run_ablation(
    base: RunConfig,
    markets: dict[str, MarketData],
    config: AblationConfig,
    out_dir: Path,
    log: logging.Logger,
) -> dict[str, Any]:
    """Train every (market, variant, seed), build the ensemble row, write JSON and Markdown."""
    started = time.perf_counter()
    if not markets:
        raise ConfigError("ablation: no market to train on")
    out_dir.mkdir(parents=True, exist_ok=True)
    base = run_config_from_dict(
        {"pipeline": {"ensemble_size": 0}, "train": {"eval_every": config.eval_every}}, base
    )
    variants = variant_configs(base, config.components)
    seeds = [base.pipeline.seed_of_run(k) for k in range(config.seeds)]
    splits = {name: split_market(m, base.data)[:2] for name, m in markets.items()}
    tasks: list[UnitTask] = []
    for market_name, (train, val) in splits.items():
        for variant, cfg in variants.items():
            for seed in seeds:
                label = f"{market_name}/{variant}/seed{seed}"
                tasks.append(UnitTask(label=label, seed=seed, episodes=config.episodes,
                                      config=cfg, train_data=train, val_data=val,
                                      model_dir=str(out_dir / "models" / label),
                                      logger_name=log.name))  # fmt: skip
    if len(seeds) < 5:
        log.warning("ablation: %d seed(s) per variant; intervals from fewer than 5 are too wide "
                    "to read much into", len(seeds))  # fmt: skip
    log.info("ablation: %d markets x %d variants x %d seeds = %d runs of %d episodes, %d workers",
             len(splits), len(variants), len(seeds), len(tasks), config.episodes,
             config.workers)  # fmt: skip

    done = [0]

    def on_done(outcome: dict[str, Any]) -> None:
        done[0] += 1
        log.info("[%d/%d] %s: val score %.3f in %.0fs", done[0], len(tasks), outcome["label"],
                 outcome["val_score"], outcome["seconds"])  # fmt: skip

    workers = units_at_once(base.pipeline.backend, config.workers, len(tasks),
                            base.pipeline.share_cores)  # fmt: skip
    outcomes = run_initial_phase(tasks, workers, on_done)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for task, outcome in zip(tasks, outcomes, strict=True):
        market_name, variant, _ = task.label.split("/")
        runs.setdefault(market_name, {}).setdefault(variant, []).append(outcome)

    if "ensemble" in config.components and len(seeds) < 2:
        log.warning("ablation: the ensemble row needs at least 2 seeds (one model per seed); "
                    "skipped")  # fmt: skip
    elif "ensemble" in config.components:
        for market_name, (_, val) in splits.items():
            runs[market_name]["with_ensemble"] = _ensemble_runs(
                runs[market_name]["full"], val, base, config.ensemble_size
            )

    rows = summarise(runs, config)
    result = {
        "what": "validation score of the full configuration and of each component removed",
        "budget": {
            "episodes_per_run": config.episodes,
            "episode_length": base.market.env.episode_length,
            "seeds": seeds,
            "eval_every": config.eval_every,
            "note": config.budget_note(),
        },
        "markets": {name: m.describe() for name, m in markets.items()},
        "rows": rows,
        "runs": {
            m: {v: [_plain_run(o) for o in lst] for v, lst in by.items()} for m, by in runs.items()
        },
        "config": base.to_dict(),
        "wall_seconds": time.perf_counter() - started,
        **({"notes": config.extra} if config.extra else {}),
    }
    atomic_write_json(out_dir / "ablation.json", result)
    atomic_write_text(out_dir / "ablation.md", markdown_table(result))
    log.info("ablation written to %s (%.0fs)", out_dir, result["wall_seconds"])
    return result


def _ensemble_runs(
    full: list[dict[str, Any]], val: MarketData, base: RunConfig, size: int
) -> list[dict[str, Any]]:
    """For seed k, the ensemble of the full models of seeds k, k+1, ... (cyclic)."""
    agents = [load_agent(o["model_path"])[0] for o in full]
    out = []
    for k, outcome in enumerate(full):
        started = time.perf_counter()
        members = [agents[(k + j) % len(agents)] for j in range(min(size, len(agents)))]
        result = validate(EnsembleAgent(members, "mean"), val, base.market)
        out.append({"label": outcome["label"].replace("/full/", "/with_ensemble/"),
                    "seed": outcome["seed"], "val_score": result.score(),
                    "val_metrics": result.average(),
                    "seconds": time.perf_counter() - started})  # fmt: skip
    return out


def _plain_run(outcome: dict[str, Any]) -> dict[str, Any]:
    keys = ("seed", "val_score", "val_metrics", "seconds", "episodes", "gradient_steps",
            "stopped_early", "swa_selected")  # fmt: skip
    return {k: outcome[k] for k in keys if k in outcome}


def _interval(values: list[float], n_resamples: int) -> tuple[float, float]:
    return bootstrap_ci(values, iqm, n_resamples=n_resamples, seed=0)


def summarise(
    runs: dict[str, dict[str, list[dict[str, Any]]]], config: AblationConfig
) -> list[dict[str, Any]]:
    """One row per (market, variant): IQM, CI, paired effect vs full, promise, wall time."""
    promised = {f"no_{c.name}": c.promised for c in COMPONENTS}
    promised["with_ensemble"] = ENSEMBLE_PROMISE
    rows = []
    for market_name, by_variant in runs.items():
        full = {o["seed"]: o["val_score"] for o in by_variant["full"]}
        for variant, outcomes in by_variant.items():
            scores = [float(o["val_score"]) for o in outcomes]
            low, high = _interval(scores, config.n_resamples)
            row: dict[str, Any] = {
                "market": market_name,
                "variant": variant,
                "n": len(scores),
                "iqm": iqm(scores),
                "ci95": [low, high],
                "scores": scores,
                "seconds_per_run": float(np.mean([o["seconds"] for o in outcomes])),
                "seconds_total": float(np.sum([o["seconds"] for o in outcomes])),
                "promised_gain": promised.get(variant, ""),
            }
            if variant != "full":
                # Effect of the component: full - without (with_ensemble: ensemble - full).
                sign = -1.0 if variant == "with_ensemble" else 1.0
                diffs = [sign * (full[o["seed"]] - o["val_score"]) for o in outcomes]
                d_low, d_high = _interval(diffs, config.n_resamples)
                row["effect_iqm"] = iqm(diffs)
                row["effect_ci95"] = [d_low, d_high]
                base_iqm = iqm([full[o["seed"]] for o in outcomes])
                ref = row["iqm"] if variant != "with_ensemble" else base_iqm
                row["effect_pct"] = row["effect_iqm"] / max(abs(ref), 1e-9) * 100.0
            rows.append(row)
    return rows


def markdown_table(result: dict[str, Any]) -> str:
    """The ablation table in Markdown."""
    b = result["budget"]
    lines = [
        "# Nexlify ablation",
        "",
        f"Validation score (the original tool's formula) per variant: IQM over {len(b['seeds'])} "
        f"seeds with a 95% bootstrap interval; effect = IQM of per-seed differences (full - "
        f"without; for the ensemble, ensemble - full single model), positive = the component "
        f"helps. Budget: {b['episodes_per_run']} episodes of {b['episode_length']} bars per run "
        f"({b['note']}).",
        "",
        "| market | variant | IQM score [95% CI] | effect of component [95% CI] | effect % | "
        "promised (original plan) | s/run | s total |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        effect = (
            f"{r['effect_iqm']:+.3f} [{r['effect_ci95'][0]:+.3f}, {r['effect_ci95'][1]:+.3f}]"
            if "effect_iqm" in r
            else "-"
        )
        pct = f"{r['effect_pct']:+.1f}%" if "effect_pct" in r else "-"
        lines.append(
            f"| {r['market']} | {r['variant']} | {r['iqm']:.3f} [{r['ci95'][0]:.3f}, "
            f"{r['ci95'][1]:.3f}] | {effect} | {pct} | {r['promised_gain'] or '-'} | "
            f"{r['seconds_per_run']:.1f} | {r['seconds_total']:.0f} |"
        )
    lines += ["", f"Total wall time: {result['wall_seconds']:.0f}s.", ""]
    return "\n".join(lines)


def parse_components(names: list[str] | None) -> tuple[str, ...]:
    """Validate component names given on the command line."""
    known = [c.name for c in COMPONENTS] + ["ensemble"]
    if not names:
        return tuple(known)
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"--components: unknown {bad}; known: {', '.join(known)}")
    return tuple(names)
