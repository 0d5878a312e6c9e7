"""`nexlify ablate`: each variant removes one component, the paired statistics match hand-computed
values, and the command writes its tables for the synthetic market and candle files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from nexlify.cli import main
from nexlify.data.synthetic import generate_synthetic_candles
from nexlify.errors import ConfigError
from nexlify.pipeline.ablation import (
    COMPONENTS,
    ENSEMBLE_PROMISE,
    AblationConfig,
    summarise,
    variant_configs,
)
from nexlify.train.config import run_config_from_dict

TINY = {
    "data": {"pairs": ["BTC/USDT"], "synthetic_days": 90, "validation_days": 10},
    "market": {"env": {"episode_length": 48}},
    "agent": {"hidden_sizes": [16], "batch_size": 16, "learning_starts": 32, "buffer_size": 2000},
    "train": {"num_envs": 2},
    "pipeline": {"workers": 1},
}  # fmt: skip
EVERYTHING_ON = {
    "agent": {"double_dqn": True, "dueling": True, "prioritized_replay": True, "n_step": 3,
              "noisy": True, "distributional": "c51"},
    "train": {"swa": True, "augment": True, "curriculum": True, "early_stopping_patience": 3},
}  # fmt: skip


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_each_variant_differs_from_full_in_its_component_only() -> None:
    base = run_config_from_dict(EVERYTHING_ON, run_config_from_dict(TINY))
    variants = variant_configs(base, tuple(c.name for c in COMPONENTS))
    assert set(variants) == {"full"} | {f"no_{c.name}" for c in COMPONENTS}
    full = _flat(base.to_dict())
    for comp in COMPONENTS:
        variant = _flat(variants[f"no_{comp.name}"].to_dict())
        changed = {key: value for key, value in variant.items() if full[key] != value}
        assert changed == _flat(comp.removal), comp.name


def _runs(scores: list[float]) -> list[dict[str, Any]]:
    return [{"seed": 42 + 1000 * k, "val_score": v, "seconds": 2.0} for k, v in enumerate(scores)]


def test_table_statistics_match_hand_computed_values() -> None:
    runs = {"m": {"full": _runs([1, 2, 3, 4, 10]), "no_per": _runs([0, 2, 1, 4, -6]),
                  "no_swa": _runs([1, 2, 3, 4, 10]),
                  "with_ensemble": _runs([2, 2, 3, 5, 9])}}  # fmt: skip
    rows = {r["variant"]: r for r in summarise(runs, AblationConfig(n_resamples=500))}
    # IQM of 5 values: the middle 3 after sorting.
    assert rows["full"]["iqm"] == pytest.approx(3.0)  # 2, 3, 4
    assert "effect_iqm" not in rows["full"]
    per = rows["no_per"]
    assert per["iqm"] == pytest.approx(1.0)  # sorted -6, 0, 1, 2, 4 -> 0, 1, 2
    # Paired by seed, full - without: 1, 0, 2, 0, 16 -> middle of 0, 0, 1, 2, 16 = 1.
    assert per["effect_iqm"] == pytest.approx(1.0)
    assert per["effect_pct"] == pytest.approx(100.0)  # relative to the variant's IQM (1.0)
    assert per["promised_gain"] == "10-20% faster learning"
    assert per["ci95"][0] <= per["iqm"] <= per["ci95"][1]
    assert per["effect_ci95"][0] <= per["effect_iqm"] <= per["effect_ci95"][1]
    assert per["seconds_per_run"] == 2.0 and per["seconds_total"] == 10.0
    # A component whose removal changes nothing: effect exactly 0 with a collapsed interval.
    assert rows["no_swa"]["effect_iqm"] == 0.0 and rows["no_swa"]["effect_ci95"] == [0.0, 0.0]
    # Ensemble, ensemble - full: 1, 0, 0, 1, -1 -> middle of -1, 0, 0, 1, 1 = 1/3, vs full's 3.
    ens = rows["with_ensemble"]
    assert ens["effect_iqm"] == pytest.approx(1 / 3)
    assert ens["effect_pct"] == pytest.approx(100 / 9)
    assert ens["promised_gain"] == ENSEMBLE_PROMISE


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"seeds": 0}, "seeds"), ({"episodes": -1}, "episodes"), ({"eval_every": 0}, "eval_every"),
     ({"workers": -1}, "workers"), ({"components": ("per", "nope")}, r"unknown \['nope'\]")],
)  # fmt: skip
def test_bad_budgets_are_refused_with_the_setting_named(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        AblationConfig(**kwargs)


def test_the_budget_note_says_when_runs_are_shorter_than_the_pipelines() -> None:
    assert "reduced from the pipeline's 300 episodes" in AblationConfig(episodes=24).budget_note()
    assert AblationConfig(episodes=300).budget_note() == (
        "at least the pipeline's 300 episodes per initial run"
    )


def test_real_market_without_candles_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["ablate", "--markets", "real", "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert "--markets real: give the candles with --data-dir DIR" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ablate_command_on_the_synthetic_market_and_candle_files(tmp_path: Path) -> None:
    data = tmp_path / "candles"
    data.mkdir()
    frame = generate_synthetic_candles(["BTC/USDT"], timeframe="1h", n_bars=24 * 90, seed=7)
    frame = frame["BTC/USDT"].copy()
    frame.index = pd.date_range("2024-01-01", periods=len(frame), freq="h", tz="UTC", name="date")
    frame.to_csv(data / "BTC_USDT-1h.csv")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "ablation"
    code = main(["ablate", "--config", str(config), "--data-dir", str(data), "--seeds", "2",
                 "--episodes", "2", "--eval-every", "1", "--components", "n_step", "ensemble",
                 "--workers", "1", "--output-dir", str(out)])  # fmt: skip
    assert code == 0
    result = json.loads((out / "ablation.json").read_text())
    assert set(result["markets"]) == {"synthetic", "real"}
    assert "files" in json.dumps(result["markets"]["real"])  # the candles, not a synthetic stand-in
    got = {(r["market"], r["variant"]): r for r in result["rows"]}
    assert set(got) == {(m, v) for m in ("synthetic", "real")
                        for v in ("full", "no_n_step", "with_ensemble")}  # fmt: skip
    for (market, variant), row in got.items():
        assert row["n"] == 2 and len(row["scores"]) == 2
        runs = result["runs"][market][variant]
        assert [r["val_score"] for r in runs] == row["scores"]
        if variant != "with_ensemble":
            assert all(r["episodes"] == 2 and r["seconds"] > 0 for r in runs)
            models = list((out / "models" / market / variant).glob("seed*/*.pt"))
            assert len(models) == 2
    assert result["config"]["agent"]["n_step"] != 1  # the full configuration keeps n-step
    table = (out / "ablation.md").read_text()
    assert "| real | no_n_step |" in table and "| synthetic | with_ensemble |" in table
    assert "reduced from the pipeline's 300 episodes per run" in table
    log = (out / "ablation.log").read_text()
    assert len(re.findall(r"\[\d/8\] (synthetic|real)/", log)) == 8  # 2 markets x 2 x 2 seeds
    assert "intervals from fewer than 5 are too wide" in log
