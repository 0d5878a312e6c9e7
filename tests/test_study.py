"""The out-of-sample study: whole test years, no leakage, resume, and refusals of bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from nexlify.cli import main
from nexlify.data.synthetic import generate_synthetic_candles
from nexlify.errors import ConfigError, DataError
from nexlify.evaluation.edge import window_daily_returns
from nexlify.pipeline.auto_retrain import SUMMARY_FILE
from nexlify.pipeline.study import (
    MARKET_DAILY,
    RESULTS_FILE,
    TRIALS_FILE,
    StudySpec,
    prepare_markets,
    run_study,
    study_config,
)
from nexlify.pipeline.study_stats import deflated_sharpe
from nexlify.train.config import run_config_from_dict

PAIRS = ("BTC/USDT", "ETH/USDT")
TINY: dict[str, dict[str, Any]] = {
    "data": {"pairs": list(PAIRS), "timeframe": "4h", "validation_days": 30},
    "market": {"env": {"episode_length": 48}},
    "agent": {"hidden_sizes": [16], "batch_size": 16, "learning_starts": 32,
              "buffer_size": 2000, "target_update_interval": 50},
    "train": {"num_envs": 2, "eval_every": 2, "device": "cpu", "torch_threads": 1},
    "pipeline": {"initial_runs": 1, "initial_episodes": 2, "retrain_episodes": 1,
                 "max_iterations": 1, "patience": 1, "workers": 1, "ensemble_size": 0},
}  # fmt: skip
LOG = logging.getLogger("test_study")


def write_candles(folder: Path, start: str = "2019-01-01", days: int = 1097, seed: int = 0,
                  pairs: tuple[str, ...] = PAIRS) -> Path:  # fmt: skip
    """4h synthetic candle files of ``pairs`` in ``folder`` (2019-01-01 .. 2022-01-01)."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = generate_synthetic_candles(pairs, "4h", n_bars=days * 6, seed=seed, start=start)
    for pair, frame in frames.items():
        out = frame.reset_index().rename(columns={frame.index.name or "index": "date"})
        out.to_csv(folder / f"{pair.replace('/', '_')}-4h.csv", index=False)
    return folder


def change_year(folder: Path, year: int, factor: float) -> None:
    """Scale every price of ``year`` in the files (a different future)."""
    for path in folder.glob("*-4h.csv"):
        frame = pd.read_csv(path)
        when = pd.to_datetime(frame["date"], utc=True)
        inside = (when >= f"{year}-01-01") & (when < f"{year + 1}-01-01")
        for column in ("open", "high", "low", "close"):
            frame.loc[inside, column] *= factor
        frame.loc[inside, "volume"] *= 3.0
        frame.to_csv(path, index=False)


def weights(path: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    found: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            found[prefix] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)

    walk("", state)
    assert found, f"no tensors in {path}"
    return found


@pytest.fixture(scope="module")
def study_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny study over 2020 and 2021 with a second venue, run once for several tests."""
    root = tmp_path_factory.mktemp("study")
    data = write_candles(root / "venue_a")
    other = write_candles(root / "venue_b", seed=1)
    config = run_config_from_dict(TINY)
    spec = StudySpec(data_dir=str(data), years=(2020, 2021), venue="a",
                     other_venues={"b": str(other)})  # fmt: skip
    out = root / "results" / "tiny"
    results = run_study(config, spec, out, LOG)
    return {"root": root, "config": config, "spec": spec, "out": out, "results": results}


def test_study_tests_each_year_once_beside_every_baseline(study_run: dict[str, Any]) -> None:
    results = study_run["results"]
    assert list(results["years"]) == ["2020", "2021"]
    assert list(results["years"]["2020"]["venues"]) == ["a"]
    assert list(results["years"]["2021"]["venues"]) == ["a", "b"]  # the last year on both
    for year, entry in results["years"].items():
        assert entry["train"]["end"] < f"{year}-01-01"
        for cell in entry["venues"].values():
            policies = [k for k, v in cell.items() if isinstance(v, dict) and "sharpe" in v]
            assert policies[0] == "model" and len(policies) >= 3  # the model and the baselines
            for name in policies:
                row = cell[name]
                low, high = row["excess_daily_ci95_pct"]
                assert low <= row["excess_daily_pct"] <= high
                assert row["days"] == (366 if year == "2020" else 365)  # each day, once
            assert cell["test"]["start"] == f"{year}-01-01T00:00:00+00:00"
            model, market = np.array(cell["model_excess_daily"]), np.array(cell[MARKET_DAILY])
            for name, days in (("model", model), ("buy_and_hold", market)):  # the rows' days
                assert days.mean() * 100 == pytest.approx(cell[name]["excess_daily_pct"], abs=1e-9)
                assert days.size == cell[name]["days"]
            beta, alpha = np.polyfit(market, model, 1)  # the model's line against the market
            exposure = cell["model"]["market"]
            assert exposure["beta"] == pytest.approx(beta)
            assert exposure["alpha_daily_pct"] == pytest.approx(alpha * 100)
            low, high = exposure["alpha_ci95_pct"]
            assert low <= exposure["alpha_daily_pct"] <= high
        gate = entry["pipeline"]["edge"]  # what the pipeline's gate said before the year
        assert isinstance(gate["found"], bool) and 0.0 <= gate["p"] <= 1.0
    train_end = pd.Timestamp(results["years"]["2021"]["train"]["end"])
    assert train_end < pd.Timestamp("2021-01-01", tz="UTC")
    assert results["n_trials"] == 1
    dsr = results["years"]["2021"]["venues"]["a"]["model"]["deflated_sharpe"]
    assert 0.0 <= dsr["value"] <= 1.0 and dsr["n_trials"] == 1
    table = (study_run["out"] / "study.md").read_text()
    assert "### 2021 on b" in table and "| model |" in table
    assert table.count("The pipeline's no-edge gate said: ") == 2
    assert table.count("Beyond its exposure to buy-and-hold (beta ") == 3  # per year and venue
    trials = json.loads((study_run["out"].parent / TRIALS_FILE).read_text())
    assert trials["n_trials"] == 1 and set(next(iter(trials["configs"].values()))["daily_sharpe"]) \
        == {"2020/a", "2021/a", "2021/b"}  # fmt: skip


def test_year_candles_do_not_change_the_model_tested_on_them(
    study_run: dict[str, Any], tmp_path: Path
) -> None:
    """Leakage proof: the 2021 model is the same whatever 2021's candles are."""
    data = write_candles(tmp_path / "venue_a")
    change_year(data, 2021, 1.7)
    spec = StudySpec(data_dir=str(data), years=(2021,), venue="a")
    results = run_study(study_run["config"], spec, tmp_path / "out" / "changed", LOG)
    first = results["years"]["2021"]
    before = study_run["results"]["years"]["2021"]
    assert first["train"]["sha256"] == before["train"]["sha256"]
    assert first["venues"]["a"]["test"]["sha256"] != before["venues"]["a"]["test"]["sha256"]
    changed = weights(first["pipeline"]["final_model_path"])
    original = weights(before["pipeline"]["final_model_path"])
    assert changed.keys() == original.keys()
    for key, tensor in original.items():
        assert torch.equal(tensor, changed[key]), key


def test_rerun_keeps_finished_years_and_counts_a_new_config(study_run: dict[str, Any]) -> None:
    out: Path = study_run["out"]
    stamp = (out / RESULTS_FILE).stat().st_mtime_ns
    model = Path(study_run["results"]["years"]["2020"]["pipeline"]["final_model_path"])
    model_stamp = model.stat().st_mtime_ns
    again = run_study(study_run["config"], study_run["spec"], out, LOG)
    assert again["years"]["2020"] == json.loads(json.dumps(study_run["results"]["years"]["2020"]))
    assert model.stat().st_mtime_ns == model_stamp  # nothing retrained
    assert (out / RESULTS_FILE).stat().st_mtime_ns >= stamp
    assert again["n_trials"] == 1  # the same config is counted once
    other = run_config_from_dict({"agent": {"learning_rate": 1e-3}}, study_run["config"])
    spec = StudySpec(data_dir=study_run["spec"].data_dir, years=(2020,), venue="a")
    second = run_study(other, spec, out.parent / "lr", LOG)
    assert second["n_trials"] == 2
    assert second["years"]["2020"]["venues"]["a"]["model"]["deflated_sharpe"]["n_trials"] == 2


def test_adding_a_year_keeps_the_finished_one(study_run: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out" / "grow"
    data_dir = study_run["spec"].data_dir
    run_study(study_run["config"], StudySpec(data_dir=data_dir, years=(2020,), venue="a"), out, LOG)
    stamp = (out / "runs" / "2020" / "final_model.pt").stat().st_mtime_ns
    spec = StudySpec(data_dir=data_dir, years=(2020, 2021), venue="a")
    results = run_study(study_run["config"], spec, out, LOG)
    assert (out / "runs" / "2020" / "final_model.pt").stat().st_mtime_ns == stamp
    assert list(results["years"]) == ["2020", "2021"]


def test_interrupted_year_resumes_its_pipeline(study_run: dict[str, Any], tmp_path: Path) -> None:
    """A year cut short after its units finished: the rerun reuses them, trains nothing new."""
    out = tmp_path / "out" / "cut"
    spec = StudySpec(data_dir=study_run["spec"].data_dir, years=(2020,), venue="a")
    first = run_study(study_run["config"], spec, out, LOG)
    run_dir = out / "runs" / "2020"
    units = sorted(run_dir.glob("initial_runs/*/*.pt"))
    assert units
    stamps = [u.stat().st_mtime_ns for u in units]
    # as if stopped before the year's end: no final model, summary incomplete, year not recorded
    (run_dir / "final_model.pt").unlink()
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    (run_dir / SUMMARY_FILE).write_text(json.dumps({**summary, "pipeline_complete": False}))
    (out / RESULTS_FILE).write_text(json.dumps({**first, "years": {}}))
    again = run_study(study_run["config"], spec, out, LOG)
    assert [u.stat().st_mtime_ns for u in units] == stamps  # finished runs reused
    assert json.loads((run_dir / SUMMARY_FILE).read_text())["resumed"]["units_reused"]
    model = again["years"]["2020"]["venues"]["a"]["model"]
    assert model == first["years"]["2020"]["venues"]["a"]["model"]  # the same result


def test_daily_returns_mark_each_utc_day_once() -> None:
    result = SimpleNamespace(
        equity_curves=[np.array([100.0, 101.0, 102.0, 99.0, 99.0])], starts=[0]
    )
    # decision bar 2024-01-01 22:00; the 4 steps close at 23:00, 00:00, 01:00 and 02:00
    first = pd.Timestamp("2024-01-01 22:00", tz="UTC").value // 10**9
    data = SimpleNamespace(time=first + 3600 * np.arange(5, dtype=np.int64))
    r = window_daily_returns(data, result)  # type: ignore[arg-type]
    np.testing.assert_allclose(r, [101 / 100 - 1, 99 / 101 - 1])


def test_deflated_sharpe_falls_as_more_configurations_are_tried() -> None:
    row = {"daily_sharpe": 0.1, "days": 365, "skew": 0.0, "kurtosis": 3.0}
    one = deflated_sharpe(row, 1, [])["value"]
    ten = deflated_sharpe(row, 10, [0.1, 0.0, -0.05])["value"]
    # one trial: P(true Sharpe > 0) = Phi(0.1 * sqrt(364) / sqrt(1 + (3 - 1) / 4 * 0.1^2))
    #          = Phi(1.90788 / 1.00250) = Phi(1.90314) = 0.97149
    assert one == pytest.approx(0.97149, abs=1e-4)
    assert ten < one


def test_bad_input_stops_before_training(tmp_path: Path) -> None:
    data = write_candles(tmp_path / "a")
    config = run_config_from_dict(TINY)
    with pytest.raises(DataError, match=r"study year 2023, venue a, pair BTC/USDT: .*through"):
        prepare_markets(config, StudySpec(data_dir=str(data), years=(2021, 2023), venue="a"))
    with pytest.raises(DataError, match=r"study year 2019, venue a, pair BTC/USDT"):
        prepare_markets(config, StudySpec(data_dir=str(data), years=(2019,), venue="a"))
    short = write_candles(tmp_path / "short", start="2019-09-01", days=600)
    with pytest.raises(DataError, match=r"study year 2020, venue a, pair BTC/USDT: only 122 days"):
        prepare_markets(config, StudySpec(data_dir=str(short), years=(2020,), venue="a"))
    lacking = write_candles(tmp_path / "b", pairs=("BTC/USDT",))
    spec = StudySpec(data_dir=str(data), years=(2021,), venue="a", other_venues={"b": str(lacking)})
    with pytest.raises(DataError, match=r"study year 2021, venue b, pair ETH/USDT"):
        prepare_markets(config, spec)


def test_study_command_refuses_bad_input_with_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_candles(tmp_path / "a")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    code = main(["study", "--data-dir", str(data), "--config", str(config), "--years", "2024",
                 "--output", str(tmp_path / "out")])  # fmt: skip
    assert code != 0
    assert not (tmp_path / "out" / "runs").exists()  # nothing trained
    code = main(["study", "--data-dir", str(data), "--config", str(config), "--years", "2021",
                 "--meta-init", "--output", str(tmp_path / "out")])  # fmt: skip
    assert code == 2  # --meta-init without --retrain-every: a config error, before training
    assert not (tmp_path / "out" / "runs").exists()
    late = tmp_path / "late.yaml"  # 1 inner episode of 48 bars, no gradient step before 100
    late.write_text(yaml.safe_dump({**TINY, "agent": {**TINY["agent"], "learning_starts": 100}}))
    code = main(["study", "--data-dir", str(data), "--config", str(late), "--years", "2021",
                 "--retrain-every", "90", "--retrain-window", "30", "--meta-init",
                 "--inner-episodes", "1", "--output", str(tmp_path / "out")])  # fmt: skip
    assert code == 2  # an inner loop that could not learn: refused before training
    assert "make no gradient step" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "out" / "runs").exists()


def test_study_command_runs_with_default_pairs(tmp_path: Path) -> None:
    data = write_candles(tmp_path / "binance")
    tiny = {k: dict(v) for k, v in TINY.items()}
    tiny["data"] = {k: v for k, v in tiny["data"].items() if k != "pairs"}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny))
    out = tmp_path / "out"
    code = main(["study", "--data-dir", str(data), "--config", str(config), "--years", "2021",
                 "--output", str(out)])  # fmt: skip
    assert code == 0
    results = json.loads((out / RESULTS_FILE).read_text())
    assert results["config"]["data"]["pairs"] == ["BTC/USDT", "ETH/USDT"]
    assert list(results["years"]["2021"]["venues"]) == ["binance"]  # named after the folder
    assert "## 2021" in (out / "study.md").read_text()


def test_pairs_of_a_config_file_are_kept(tmp_path: Path) -> None:
    from nexlify.cli import build_parser
    from nexlify.commands.study import resolved_study_config

    config = tmp_path / "one.yaml"
    config.write_text(yaml.safe_dump({"data": {"pairs": ["ETH/USDT"]}}))
    parser = build_parser(["study"])
    args = parser.parse_args(["study", "--data-dir", str(tmp_path), "--config", str(config)])
    assert resolved_study_config(args).data.pairs == ("ETH/USDT",)
    args = parser.parse_args(["study", "--data-dir", str(tmp_path)])
    assert resolved_study_config(args).data.pairs == ("BTC/USDT", "ETH/USDT")
    args = parser.parse_args(["study", "--data-dir", str(tmp_path), "--pairs", "SOL/USDT"])
    assert resolved_study_config(args).data.pairs == ("SOL/USDT",)


def test_the_bar_needs_a_gain_and_a_sharpe_above_zero_and_every_baseline() -> None:
    from nexlify.pipeline.study_report import beats_everything

    def cell(model: tuple[float, float], **baselines: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "test": {},
            "model": {"total_return_pct": model[0], "sharpe": model[1]},
        }
        for name, sharpe in baselines.items():
            out[name] = {"total_return_pct": 0.0, "sharpe": sharpe}
        return out

    assert beats_everything(cell((1.0, 0.8), cash=0.0, trend=0.7))
    assert not beats_everything(cell((1.0, 0.8), cash=0.0, trend=0.9))  # a baseline did better
    assert not beats_everything(cell((-0.1, 0.8), cash=0.0))  # lost money
    assert not beats_everything(cell((1.0, -0.1), random=-0.5))  # Sharpe not above 0


def test_rolling_retrain_is_a_row_and_a_configuration_of_its_own(
    study_run: dict[str, Any], tmp_path: Path
) -> None:
    from nexlify.pipeline.rolling import RollingSpec

    out = tmp_path / "results" / "rolling"
    frozen_out = tmp_path / "results" / "frozen"
    spec = StudySpec(data_dir=study_run["spec"].data_dir, years=(2021,), venue="a",
                     rolling=RollingSpec(every_days=90, window_days=30, score_days=5,
                                         episodes=1))  # fmt: skip
    frozen_spec = StudySpec(data_dir=spec.data_dir, years=(2021,), venue="a")
    frozen = run_study(study_run["config"], frozen_spec, frozen_out, LOG)
    results = run_study(study_run["config"], spec, out, LOG)
    assert results["n_trials"] == 2  # rolling retraining counts as a configuration
    cell = results["years"]["2021"]["venues"]["a"]
    assert cell["model"] == frozen["years"]["2021"]["venues"]["a"]["model"] | {
        "deflated_sharpe": cell["model"]["deflated_sharpe"]
    }
    rolling = results["years"]["2021"]["rolling"]
    assert rolling["retrains"] == 4 and len(rolling["log"]) == 4  # 2021-04-01 .. 12-27
    assert 0 <= rolling["swaps"] <= 4
    assert len(cell["model_rolling_excess_daily"]) == len(cell["model_excess_daily"])
    assert results["pooled_rolling"]["a"]["years"] == 1
    table = (out / "study.md").read_text()
    assert "model_rolling: the final model fine-tuned every 90 days" in table
    assert "- a, model_rolling: 1 year(s)" in table
    trials = json.loads((out.parent / TRIALS_FILE).read_text())
    assert "2021/a" in trials["configs"][results["config_hash"]]["daily_sharpe"]


def test_meta_init_row_adapts_before_the_year_and_rolls(
    study_run: dict[str, Any], tmp_path: Path
) -> None:
    from nexlify.pipeline.meta import MetaSpec
    from nexlify.pipeline.rolling import RollingSpec

    rolling = RollingSpec(every_days=90, window_days=30, score_days=5, episodes=1)
    with pytest.raises(ConfigError, match="--meta-init: needs --retrain-every"):
        StudySpec(data_dir="x", meta=MetaSpec(outer_steps=2, inner_episodes=1, task_days=30))
    spec = StudySpec(data_dir=study_run["spec"].data_dir, years=(2021,), venue="a",
                     rolling=rolling, meta=MetaSpec(outer_steps=2, inner_episodes=1,
                                                    task_days=30))  # fmt: skip
    out = tmp_path / "results" / "meta"
    results = run_study(study_run["config"], spec, out, LOG)
    cell = results["years"]["2021"]["venues"]["a"]
    assert {"model", "model_rolling", "model_meta_rolling"} <= set(cell)
    meta = results["years"]["2021"]["rolling"]["meta"]
    assert meta["retrains"] == 4 and meta["meta_spec"]["outer_steps"] == 2
    init = torch.load(meta["meta_init"], map_location="cpu", weights_only=False)
    steps = init["extra"]["meta"]["steps"]
    assert len(steps) == 2 and all(step["end"] < "2020-12-02" for step in steps)
    assert results["pooled_meta_rolling"]["a"]["years"] == 1
    assert (
        "model_meta_rolling: a Reptile meta-init (2 outer steps" in (out / "study.md").read_text()
    )
    stamp = Path(meta["adapted_model"]).stat().st_mtime_ns
    again = run_study(study_run["config"], spec, out, LOG)  # finished: kept, nothing retrained
    assert again["years"]["2021"] == json.loads(json.dumps(results["years"]["2021"]))
    assert Path(meta["adapted_model"]).stat().st_mtime_ns == stamp


def test_ctrl_c_says_to_rerun_the_study(
    study_run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nexlify.errors import InterruptedRunError
    from nexlify.pipeline import auto_retrain

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(auto_retrain, "train_unit", interrupted)
    spec = StudySpec(data_dir=study_run["spec"].data_dir, years=(2020,), venue="a")
    with pytest.raises(InterruptedRunError, match="continue with: the same nexlify study command"):
        run_study(study_run["config"], spec, tmp_path / "out" / "stop", LOG)


def test_external_series_reach_the_studied_model(study_run: dict[str, Any], tmp_path: Path) -> None:
    """--external in a study builds every year's markets with the series, as train does."""
    folder = tmp_path / "external"
    folder.mkdir()
    days = pd.date_range("2018-12-01", "2022-01-31", freq="D")
    values = (np.arange(days.size) * 7) % 100
    pd.DataFrame(
        {"date": days.strftime("%Y-%m-%d"), "value": values, "classification": "Neutral"}
    ).to_csv(folder / "fear_greed.csv", index=False)
    config = run_config_from_dict(
        {"data": {"external": ["fear_greed"], "external_dir": str(folder)}}, study_run["config"]
    )
    spec = StudySpec(data_dir=study_run["spec"].data_dir, years=(2021,), venue="a")
    markets = prepare_markets(study_config(config, spec), spec)
    for market in (markets[0].train, *markets[0].tests.values()):
        assert market.feature_names[-2:] == ("ext_fear_greed", "ext_fear_greed_missing")
    results = run_study(config, spec, tmp_path / "results" / "fng", LOG)
    model = results["years"]["2021"]["pipeline"]["final_model_path"]
    extra = torch.load(model, map_location="cpu", weights_only=False)["extra"]
    assert "ext_fear_greed" in extra["feature_names"]


def test_an_other_venue_with_a_short_history_trades_from_its_first_usable_bar(
    study_run: dict[str, Any], tmp_path: Path
) -> None:
    """A venue the model never saw whose candles begin just before the year (KuCoin's shared
    files start 2023-11-09) is tested from the first bar its features allow, and says so."""
    from nexlify.data.features import feature_warmup
    from nexlify.pipeline.data_choice import run_features

    config = study_run["config"]
    warm = pd.Timedelta(hours=4 * feature_warmup(run_features(config.data)))  # 4h bars
    year = pd.Timestamp("2021-01-01", tz="UTC")
    start = year - warm + pd.Timedelta(days=3)  # 3 days short of the warm-up
    short = write_candles(tmp_path / "c", start=f"{start:%Y-%m-%d %H:%M}", days=420, seed=2)
    spec = StudySpec(data_dir=study_run["spec"].data_dir, years=(2021,), venue="a",
                     other_venues={"c": str(short)})  # fmt: skip
    test = prepare_markets(config, spec)[0].tests["c"]
    obs = config.market.env.obs_window
    first = pd.Timestamp(int(test.time[obs]), unit="s", tz="UTC")
    # the first bar with features is the observation window, the next one trades
    assert first == start + warm + pd.Timedelta(hours=4 * obs)
    assert any(n.startswith(f"study: tested from {first:%Y-%m-%d %H:%M}") for n in test.notes)
    from nexlify.pipeline.study_report import _late_start

    note = _late_start({"notes": list(test.notes)})[0]
    assert note.startswith(f"Note: tested from {first:%Y-%m-%d %H:%M}, 3.2 days after 2021-01-01")
    late = write_candles(tmp_path / "d", start=f"{start + pd.Timedelta(days=20):%Y-%m-%d %H:%M}",
                         days=420, seed=2)  # fmt: skip
    spec = StudySpec(data_dir=study_run["spec"].data_dir, years=(2021,), venue="a",
                     other_venues={"d": str(late)})  # fmt: skip
    with pytest.raises(DataError, match=r"study year 2021, venue d: .*at most 14 days late"):
        prepare_markets(config, spec)


def test_a_venue_added_to_a_finished_study_is_traded_by_the_same_model(
    study_run: dict[str, Any], tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "results" / "venues"
    shutil.copytree(study_run["out"], out)
    model = out / "runs" / "2021" / "final_model.pt"
    stamp = model.stat().st_mtime_ns
    venue_b = study_run["spec"].other_venues["b"]
    venue_c = shutil.copytree(venue_b, tmp_path / "venue_c")  # the same candles as b
    spec = StudySpec(data_dir=study_run["spec"].data_dir, years=(2020, 2021), venue="a",
                     other_venues={"b": venue_b, "c": str(venue_c)})  # fmt: skip
    results = run_study(study_run["config"], spec, out, LOG)
    assert model.stat().st_mtime_ns == stamp  # nothing retrained
    cells = results["years"]["2021"]["venues"]
    assert list(cells) == ["a", "b", "c"]
    assert cells["c"]["model"] == cells["b"]["model"]  # the year's model on the same bars
    assert cells["c"]["model_excess_daily"] == cells["b"]["model_excess_daily"]
    before = json.loads(json.dumps(study_run["results"]["years"]))
    assert results["years"]["2020"] == before["2020"]
    assert {v: cells[v] for v in ("a", "b")} == {v: before["2021"]["venues"][v] for v in ("a", "b")}
    assert "### 2021 on c" in (out / "study.md").read_text()
    dropped = StudySpec(data_dir=study_run["spec"].data_dir, years=(2020, 2021), venue="a")
    with pytest.raises(ConfigError, match="a venue tested before is not given now"):
        run_study(study_run["config"], dropped, out, LOG)
