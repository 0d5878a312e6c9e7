"""The study over several seeds: independent seeds only, the judgement by hand, and the command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from nexlify.cli import main
from nexlify.errors import ConfigError
from nexlify.pipeline.study import MARKET_DAILY, RESULTS_FILE, TRIALS_FILE
from nexlify.pipeline.study_seeds import (
    SEEDS_FILE,
    SEEDS_TABLE,
    check_seeds,
    seed_summary,
    seeds_markdown,
)
from nexlify.train.config import PipelineConfig
from tests.test_study import TINY, write_candles


def test_seeds_whose_pipelines_share_a_training_seed_are_refused() -> None:
    pcfg = PipelineConfig()  # 3 runs 1000 apart, up to 10 retraining iterations (+1 .. +10)
    check_seeds([42, 7, 100, 200], pcfg)
    with pytest.raises(ConfigError, match="seeds 1 and 2 would both train with seed 2"):
        check_seeds([1, 2], pcfg)
    with pytest.raises(ConfigError, match="seeds 42 and 1042 would both train with seed 1042"):
        check_seeds([42, 1042], pcfg)
    with pytest.raises(ConfigError, match="repeats a seed"):
        check_seeds([42, 42], pcfg)
    with pytest.raises(ConfigError, match="at least 2 seeds"):
        check_seeds([42], pcfg)


def _cell(ret: float, sharpe: float, excess: list[float], trend: float = 0.5) -> dict[str, Any]:
    return {
        "test": {},
        "model": {"total_return_pct": ret, "sharpe": sharpe, "n_trades": 10,
                  "excess_daily_pct": float(np.mean(excess)) * 100},
        "cash": {"total_return_pct": 0.0, "sharpe": 0.0},
        "trend": {"total_return_pct": 1.0, "sharpe": trend},
        "model_excess_daily": excess,
    }  # fmt: skip


def _results(cells: dict[str, dict[str, Any]], pooled: float, low: float) -> dict[str, Any]:
    return {
        "spec": {"years": [2021, 2022], "venue": "a"},
        "config": {"data": {"pairs": ["BTC/USDT"], "timeframe": "4h"}},
        "n_trials": 5,
        "years": {y: {"venues": {"a": cell}} for y, cell in cells.items()},
        "pooled": {"a": {"excess_daily_pct": pooled, "excess_daily_ci95_pct": [low, pooled + 1],
                         "days": 4}},
    }  # fmt: skip


def test_judgement_over_seeds_by_hand() -> None:
    # seed 1 meets the target both years (return > 0, Sharpe 1.0 above trend's 0.5)
    one = {"2021": _cell(2.0, 1.0, [0.01, 0.03]), "2022": _cell(1.0, 1.0, [0.02, 0.0])}
    # seed 2 meets it in 2021 only (2022: Sharpe 0.4 below trend's 0.5)
    two = {"2021": _cell(1.0, 0.8, [0.01, 0.01]), "2022": _cell(0.5, 0.4, [0.0, 0.0])}
    # seed 3 loses both years
    three = {"2021": _cell(-1.0, -0.5, [-0.01, -0.02]), "2022": _cell(-2.0, -1.0, [-0.02, -0.04])}
    by_seed = {
        1: _results(one, pooled=1.5, low=0.2),
        2: _results(two, pooled=0.5, low=-0.1),
        3: _results(three, pooled=-2.25, low=-3.0),
    }
    summary = seed_summary(by_seed)
    row = summary["venues"]["a"]["model"]
    assert summary["years_needed"] == 2  # ceil(0.75 * 2)
    assert [row["per_seed"][s]["years_met"] for s in ("1", "2", "3")] == [2, 1, 0]
    assert row["seeds_meeting_target"] == 1 and row["seeds_pooled_positive"] == 2
    assert row["seeds_interval_above_0"] == 1
    assert row["per_year"]["2021"] == {"seeds": 3, "mean_return_pct": pytest.approx(2.0 / 3),
                                       "seeds_positive": 2, "seeds_meeting_target": 2}  # fmt: skip
    spread = row["pooled_excess_daily_pct"]
    assert spread["mean"] == pytest.approx((1.5 + 0.5 - 2.25) / 3)
    assert spread["std"] == pytest.approx(np.std([1.5, 0.5, -2.25], ddof=1))
    # seed-averaged: each day's mean over the seeds, 2021 then 2022, in percent
    days = [(0.01 + 0.01 - 0.01) / 3, (0.03 + 0.01 - 0.02) / 3, 0.0, (0.0 + 0.0 - 0.04) / 3]
    averaged = row["seed_averaged"]
    assert averaged["days"] == 4 and averaged["years"] == 2
    assert averaged["excess_daily_pct"] == pytest.approx(np.mean(days) * 100)
    assert row["complete"] and not row["holds_up"]  # 1 of 3 seeds meets the target
    table = seeds_markdown(summary)
    assert "| 1 | +2.00% (10) ✓ | +1.00% (10) ✓ |" in table
    assert "**Does not hold up across seeds.**" in table


def test_a_seed_that_has_not_finished_leaves_the_verdict_open() -> None:
    good = {"2021": _cell(2.0, 1.0, [0.01, 0.03]), "2022": _cell(1.0, 1.0, [0.02, 0.01])}
    by_seed = {1: _results(good, 2.0, 0.5), 2: _results({"2021": good["2021"]}, 2.0, 0.5)}
    row = seed_summary(by_seed)["venues"]["a"]["model"]
    assert not row["complete"] and not row["holds_up"]
    assert row["seed_averaged"]["years"] == 1  # only the year both seeds finished
    both = seed_summary({1: _results(good, 2.0, 0.5), 2: _results(good, 2.0, 0.5)})
    assert both["venues"]["a"]["model"]["holds_up"]  # every seed meets it, interval above 0
    assert "**Holds up across seeds.**" in seeds_markdown(both)


def test_study_command_runs_each_seed_and_judges_them(tmp_path: Path) -> None:
    data = write_candles(tmp_path / "binance")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "results" / "tiny_seeds"
    args = ["study", "--data-dir", str(data), "--config", str(config), "--years", "2021"]
    assert main([*args, "--seeds", "5", "500", "--output", str(out)]) == 0
    summary = json.loads((out / SEEDS_FILE).read_text())
    assert summary["seeds"] == [5, 500]
    row = summary["venues"]["binance"]["model"]
    assert set(row["per_seed"]) == {"5", "500"} and row["complete"]
    assert "## binance, model" in (out / SEEDS_TABLE).read_text()
    trials = json.loads((out.parent / TRIALS_FILE).read_text())  # shared with sibling studies
    assert trials["n_trials"] == 2
    # each seed's folder is the plain study with that --seed, result for result
    plain = tmp_path / "plain" / "seed5"
    assert main([*args, "--seed", "5", "--output", str(plain)]) == 0
    seeded = json.loads((out / "seed_5" / RESULTS_FILE).read_text())
    alone = json.loads((plain / RESULTS_FILE).read_text())
    assert seeded["config_hash"] == alone["config_hash"]
    assert seeded["years"]["2021"]["venues"]["binance"]["model_excess_daily"] == \
        alone["years"]["2021"]["venues"]["binance"]["model_excess_daily"]  # fmt: skip
    assert seeded["config"]["pipeline"]["base_seed"] == 5
    # a rerun keeps every finished seed and year
    assert main([*args, "--seeds", "5", "500", "--output", str(out)]) == 0
    assert json.loads((out / SEEDS_FILE).read_text())["venues"] == summary["venues"]


def test_seed_and_seeds_together_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_candles(tmp_path / "binance")
    code = main(["study", "--data-dir", str(data), "--seed", "1", "--seeds", "5", "500",
                 "--output", str(tmp_path / "out")])  # fmt: skip
    assert code == 2
    assert "either --seed or --seeds" in capsys.readouterr().err


def _record_many(path: str, key: str, times: int) -> None:
    from nexlify.pipeline.study_stats import record_trial

    for k in range(times):
        record_trial(Path(path), key, f"out/{key}", {f"{2000 + k}/a": float(k)})


def test_studies_running_at_once_keep_every_configuration(tmp_path: Path) -> None:
    """Seeds of a configuration are often run as parallel studies sharing one registry: no
    update of one may be lost to another's read-modify-write."""
    import multiprocessing

    path = tmp_path / TRIALS_FILE
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_record_many, args=(str(path), f"config_{w}", 40))
               for w in range(4)]  # fmt: skip
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    trials = json.loads(path.read_text())
    assert trials["n_trials"] == 4
    for entry in trials["configs"].values():
        assert len(entry["daily_sharpe"]) == 40  # every year each process recorded


def test_seed_averaged_beta_and_alpha_against_buy_and_hold() -> None:
    """With buy-and-hold's days recorded, the equal split across seeds gets its beta to them
    and the alpha left over (the line through the averaged days); results from before the
    market was recorded get neither, and their table says nothing about it."""
    market = {"2021": [0.02, -0.01], "2022": [0.03, -0.02]}
    one = {y: _cell(1.0, 1.0, [0.5 * m + 0.001 for m in market[y]]) for y in market}
    two = {y: _cell(1.0, 1.0, [0.3 * m for m in market[y]]) for y in market}
    recorded = {}
    for seed, cells in ((1, one), (2, two)):
        cells = {y: {**cell, MARKET_DAILY: market[y]} for y, cell in cells.items()}
        recorded[seed] = _results(cells, pooled=1.0, low=0.5)
    averaged = seed_summary(recorded)["venues"]["a"]["model"]["seed_averaged"]
    assert averaged["market"]["beta"] == pytest.approx(0.4)  # (0.5 + 0.3) / 2
    assert averaged["market"]["alpha_daily_pct"] == pytest.approx(0.05)  # 0.001 / 2, in %
    assert "Beyond its exposure to buy-and-hold (beta 0.40): alpha +0.0500%/day" in (
        seeds_markdown(seed_summary(recorded))
    )
    older = seed_summary({1: _results(one, 1.0, 0.5), 2: _results(two, 1.0, 0.5)})
    assert "market" not in older["venues"]["a"]["model"]["seed_averaged"]
    assert "exposure" not in seeds_markdown(older)
