"""One configuration of the out-of-sample study trained from several seeds, judged over them.

One study is one draw of training noise: the same configuration with another seed can turn a
promising row into one that loses every year. :func:`run_seed_study` runs the study once per
seed (each a complete, resumable study in ``seed_<S>/``, every seed counted as a configuration
in the shared registry) and :func:`seed_summary` judges the configuration over the seeds: per
seed and year, the spread across seeds, and the seed-averaged daily excess over cash (the
return of splitting the account equally across the seeds' models, rebalanced daily) with its
interval. The configuration holds up when a majority of the seeds meet the target in at least
three quarters of the years and the seed-averaged interval lies above 0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from nexlify.errors import ConfigError
from nexlify.evaluation.edge import exposure_to_market
from nexlify.io import atomic_write_json, atomic_write_text
from nexlify.pipeline.auto_retrain import ProgressSink
from nexlify.pipeline.study import MARKET_DAILY, TRIALS_FILE, StudySpec, run_study
from nexlify.pipeline.study_report import beats_everything, market_sentence
from nexlify.pipeline.study_stats import MODEL_ROWS, excess_fields
from nexlify.train.config import PipelineConfig, RunConfig, run_config_from_dict

SEEDS_FILE = "seeds.json"
SEEDS_TABLE = "seeds.md"


def seed_folder(out_dir: Path, seed: int) -> Path:
    return out_dir / f"seed_{seed}"


def pipeline_seeds(pcfg: PipelineConfig, base_seed: int) -> set[int]:
    """Every seed a pipeline from ``base_seed`` may train with: its initial runs and the
    retraining iterations of whichever run wins (the winner's seed + 1, + 2, ...)."""
    runs = [base_seed + k * pcfg.seed_stride for k in range(pcfg.initial_runs)]
    return {run + i for run in runs for i in range(pcfg.max_iterations + 1)}


def check_seeds(seeds: Sequence[int], pcfg: PipelineConfig) -> None:
    """At least two distinct seeds whose pipelines share no training seed (else two "draws"
    would replay the same random streams and the spread would look smaller than it is)."""
    if len(seeds) < 2:
        raise ConfigError("study --seeds: give at least 2 seeds (one seed is a plain study, "
                          "--seed)")  # fmt: skip
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"study --seeds: {list(seeds)} repeats a seed")
    for k, first in enumerate(seeds):
        for second in seeds[k + 1 :]:
            shared = pipeline_seeds(pcfg, first) & pipeline_seeds(pcfg, second)
            if shared:
                raise ConfigError(
                    f"study --seeds: seeds {first} and {second} would both train with seed "
                    f"{min(shared)} (a pipeline from seed S uses S + k*{pcfg.seed_stride} for its "
                    f"{pcfg.initial_runs} runs and up to +{pcfg.max_iterations} for retraining); "
                    "space the seeds further apart, e.g. 42 100 200"
                )


def years_needed(n_years: int) -> int:
    """Years a seed must meet the target in: the issue's 3 of 4, three quarters in general."""
    return math.ceil(0.75 * n_years)


def run_seed_study(
    config: RunConfig,
    spec: StudySpec,
    seeds: Sequence[int],
    out_dir: Path,
    log: logging.Logger,
    progress: ProgressSink | None = None,
) -> dict[str, Any]:
    """Run (or continue) the study once per seed, then write ``seeds.json`` and ``seeds.md``
    (also after each seed, so an interrupted run keeps what finished)."""
    check_seeds(seeds, config.pipeline)
    trials = spec.trials_file or str(out_dir.parent / TRIALS_FILE)  # shared with sibling studies
    spec = replace(spec, trials_file=trials)
    by_seed: dict[int, dict[str, Any]] = {}
    summary: dict[str, Any] = {}
    for seed in seeds:
        log.info("study seed %d of %s", seed, ", ".join(map(str, seeds)))
        seeded = run_config_from_dict({"pipeline": {"base_seed": seed}}, config)
        by_seed[seed] = run_study(seeded, spec, seed_folder(out_dir, seed), log, progress)
        summary = seed_summary(by_seed, seeds)
        atomic_write_json(out_dir / SEEDS_FILE, summary)
        atomic_write_text(out_dir / SEEDS_TABLE, seeds_markdown(summary))
    return summary


# ---- judging over the seeds --------------------------------------------------------------------


def seed_summary(
    by_seed: Mapping[int, Mapping[str, Any]], seeds: Sequence[int] | None = None
) -> dict[str, Any]:
    """Per venue and model row: each seed's years, the spread across seeds, the seed-averaged
    excess and the verdict (``complete`` only once every seed asked for finished every year)."""
    seeds = list(seeds if seeds is not None else by_seed)
    first = next(iter(by_seed.values()))
    years = [str(y) for y in first["spec"]["years"]]
    venues = sorted({v for r in by_seed.values() for e in r["years"].values() for v in e["venues"]})
    rows: dict[str, dict[str, Any]] = {}
    for policy in MODEL_ROWS:
        for venue in venues:
            row = _policy_over_seeds(by_seed, seeds, years, venue, policy)
            if row is not None:
                rows.setdefault(venue, {})[policy] = row
    return {
        "study": "one configuration, the out-of-sample study once per seed",
        "seeds": seeds,
        "config": first["config"],
        "spec": first["spec"],
        "n_trials": max(int(r.get("n_trials", 0)) for r in by_seed.values()),
        "years_needed": years_needed(len(years)),
        "venues": rows,
    }


def _policy_over_seeds(
    by_seed: Mapping[int, Mapping[str, Any]], seeds: Sequence[int], years: Sequence[str],
    venue: str, policy: str,
) -> dict[str, Any] | None:  # fmt: skip
    per_seed: dict[str, Any] = {}
    for seed, results in by_seed.items():
        cells = {y: e["venues"][venue] for y, e in results["years"].items()
                 if policy in e["venues"].get(venue, {})}  # fmt: skip
        if cells:
            per_seed[str(seed)] = _seed_row(results, cells, venue, policy)
    if not per_seed:
        return None
    tested = sorted({y for row in per_seed.values() for y in row["years"]})
    # Complete: every seed asked for has every year this venue is tested in (the study's own
    # venue: every study year; another venue: the years it was tested, the last one).
    every_year = venue != by_seed[seeds[0]]["spec"]["venue"] or tested == sorted(years)
    same_years = all(set(row["years"]) == set(tested) for row in per_seed.values())
    complete = len(per_seed) == len(seeds) and same_years and every_year
    needed = years_needed(len(tested))
    pooled = [row["pooled"]["excess_daily_pct"] for row in per_seed.values()]
    meeting = sum(row["years_met"] >= needed for row in per_seed.values())
    averaged = _seed_averaged(by_seed, tested, venue, policy)
    holds = bool(complete and meeting > len(per_seed) / 2 and averaged is not None
                 and averaged["excess_daily_ci95_pct"][0] > 0)  # fmt: skip
    return {
        "per_seed": per_seed,
        "per_year": {y: _year_over_seeds(per_seed, y) for y in tested},
        "pooled_excess_daily_pct": {
            "mean": float(np.mean(pooled)),
            "std": float(np.std(pooled, ddof=1)) if len(pooled) > 1 else None,
            "min": float(min(pooled)),
            "max": float(max(pooled)),
        },
        "seeds_pooled_positive": sum(bool(p > 0) for p in pooled),
        "seeds_interval_above_0": sum(
            bool(row["pooled"]["excess_daily_ci95_pct"][0] > 0) for row in per_seed.values()
        ),
        "seeds_meeting_target": meeting,
        "years_needed": needed,
        "seed_averaged": averaged,
        "complete": complete,
        "holds_up": holds,
    }


def _seed_row(
    results: Mapping[str, Any], cells: Mapping[str, Any], venue: str, policy: str
) -> dict[str, Any]:
    pooled = results[MODEL_ROWS[policy]][venue]
    return {
        "years": {
            y: {k: cell[policy][k] for k in ("total_return_pct", "sharpe", "n_trades",
                                              "excess_daily_pct")}
            | {"meets_target": bool(beats_everything(cell, policy))}
            for y, cell in cells.items()
        },
        "years_met": sum(bool(beats_everything(cell, policy)) for cell in cells.values()),
        "pooled": {k: pooled[k] for k in ("excess_daily_pct", "excess_daily_ci95_pct", "days")},
    }  # fmt: skip


def _year_over_seeds(per_seed: Mapping[str, Any], year: str) -> dict[str, Any]:
    cells = [row["years"][year] for row in per_seed.values() if year in row["years"]]
    returns = [c["total_return_pct"] for c in cells]
    return {
        "seeds": len(cells),
        "mean_return_pct": float(np.mean(returns)),
        "seeds_positive": sum(bool(r > 0) for r in returns),
        "seeds_meeting_target": sum(bool(c["meets_target"]) for c in cells),
    }


def _seed_averaged(
    by_seed: Mapping[int, Mapping[str, Any]], years: Sequence[str], venue: str, policy: str
) -> dict[str, Any] | None:
    """Mean over the seeds of each day's excess over cash, over the years every seed finished
    (the same days in each): an equal split of the account across the seeds' models. With
    buy-and-hold's days recorded for every such year, also the split's beta to it and alpha."""
    key = f"{policy}_excess_daily"
    days: list[np.ndarray] = []
    market: list[np.ndarray] = []
    for year in years:
        cells = [r["years"][year]["venues"][venue] for r in by_seed.values()
                 if key in r["years"].get(year, {}).get("venues", {}).get(venue, {})]  # fmt: skip
        if len(cells) != len(by_seed):
            continue  # a year not every seed finished
        series = [np.asarray(cell[key]) for cell in cells]
        if len({s.size for s in series}) != 1:
            raise ConfigError(f"study seeds: year {year} on {venue} has a different number of "
                              "days in different seeds' results (other data?)")  # fmt: skip
        days.append(np.mean(series, axis=0))
        held = [cell.get(MARKET_DAILY) for cell in cells]
        if all(h is not None for h in held):
            market.append(np.asarray(held[0], dtype=np.float64))
    if not days:
        return None
    pooled = np.concatenate(days)
    averaged = {"years": len(days), "days": int(pooled.size), **excess_fields(pooled, 0)}
    if len(market) == len(days):
        averaged["market"] = exposure_to_market(pooled, np.concatenate(market))
    return averaged


# ---- the table ---------------------------------------------------------------------------------


def seeds_markdown(summary: Mapping[str, Any]) -> str:
    """Per venue and model row: a line per seed, the mean over seeds, the verdict."""
    config = summary["config"]
    seeds = summary["seeds"]
    lines = [
        f"# Out-of-sample study over {len(seeds)} seeds",
        "",
        f"One configuration (pairs {', '.join(config['data']['pairs'])}, "
        f"{config['data']['timeframe']}; `config.yaml` of each `seed_<S>/` folder), the study "
        f"run once per base seed: {', '.join(map(str, seeds))}. Each seed is a configuration in "
        f"the registry: **{summary['n_trials']}** tried by the studies sharing it. A seed meets "
        "the target in a year when the model's return is > 0 and its Sharpe above 0 and every "
        "baseline's; the configuration holds up when more than half the seeds meet it in at "
        f"least {summary['years_needed']} of {len(summary['spec']['years'])} years and the "
        "seed-averaged excess (an equal split of the account across the seeds' models, "
        "rebalanced daily) has a 95% interval above 0.",
        "",
    ]
    for venue, policies in summary["venues"].items():
        for policy, row in policies.items():
            lines += _policy_table(venue, policy, row)
    return "\n".join(lines) + "\n"


def _policy_table(venue: str, policy: str, row: Mapping[str, Any]) -> list[str]:
    years = list(row["per_year"])
    lines = [
        f"## {venue}, {policy}",
        "",
        "| seed | " + " | ".join(years) + " | pooled excess %/day [95% CI] | years meeting |",
        "|---|" + "---|" * len(years) + "---|---|",
    ]
    for seed, seed_row in row["per_seed"].items():
        cells = [_year_cell(seed_row["years"].get(y)) for y in years]
        pooled = seed_row["pooled"]
        low, high = pooled["excess_daily_ci95_pct"]
        lines.append(f"| {seed} | " + " | ".join(cells)
                     + f" | {pooled['excess_daily_pct']:+.4f} [{low:+.4f}, {high:+.4f}] | "
                     f"{seed_row['years_met']} of {len(seed_row['years'])} |")  # fmt: skip
    spread = row["pooled_excess_daily_pct"]
    std = "n/a" if spread["std"] is None else f"{spread['std']:.4f}"
    per_year = row["per_year"]
    means = [f"{per_year[y]['mean_return_pct']:+.2f}% ({per_year[y]['seeds_positive']}"
             f" of {per_year[y]['seeds']} > 0)" for y in years]  # fmt: skip
    lines.append("| mean over seeds | " + " | ".join(means)
                 + f" | {spread['mean']:+.4f} (sd {std}, {spread['min']:+.4f} .. "
                 f"{spread['max']:+.4f}) | {row['seeds_meeting_target']} seed(s) meet "
                 f"{row['years_needed']}+ |")  # fmt: skip
    lines += ["", _verdict(row), ""]
    return lines


def _year_cell(cell: Mapping[str, Any] | None) -> str:
    if cell is None:
        return "not run"
    mark = " ✓" if cell["meets_target"] else ""
    return f"{cell['total_return_pct']:+.2f}% ({cell['n_trades']}){mark}"


def _verdict(row: Mapping[str, Any]) -> str:
    averaged = row["seed_averaged"]
    if averaged is None:
        return "Seed-averaged excess: no year finished by every seed yet."
    low, high = averaged["excess_daily_ci95_pct"]
    text = (
        f"Seed-averaged excess over cash: {averaged['excess_daily_pct']:+.4f}%/day "
        f"[{low:+.4f}, {high:+.4f}] over {averaged['years']} year(s); seeds with a positive "
        f"pooled excess: {row['seeds_pooled_positive']} of {len(row['per_seed'])}, with its "
        f"interval above 0: {row['seeds_interval_above_0']}."
        + market_sentence(averaged.get("market"))
        + " "
    )
    if not row["complete"]:
        return text + "**Incomplete**: not every seed has finished every year."
    if row["holds_up"]:
        return text + "**Holds up across seeds.**"
    return text + "**Does not hold up across seeds.**"
