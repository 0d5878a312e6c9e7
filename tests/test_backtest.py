"""``nexlify backtest``: a saved model beside the baselines, same costs and rules."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from nexlify.agent.config import AgentConfig
from nexlify.agent.dqn import DQNAgent
from nexlify.cli import main
from nexlify.config import EnvConfig, MarketConfig, RiskConfig
from nexlify.data.sources import synthetic_market
from nexlify.evaluation.backtest import backtest, cut_period, load_model_for_backtest
from nexlify.market.env import VecMarketEnv

PAIRS = ("BTC/USDT",)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    market = synthetic_market(PAIRS, "1h", seed=0)
    config = MarketConfig(risk=RiskConfig(stop_loss=0.03), env=EnvConfig(episode_length=100))
    env = VecMarketEnv(market, config)
    agent = DQNAgent(env.obs_size, env.n_actions, AgentConfig(hidden_sizes=(16,)), seed=1)
    extra = {"market_config": dataclasses.asdict(config), "pairs": list(PAIRS),
             "timeframe": "1h", "feature_names": list(market.feature_names)}  # fmt: skip
    path = tmp_path_factory.mktemp("model") / "model.pt"
    agent.save(path, extra=extra)
    return path


def test_backtest_json_matches_a_direct_run(saved_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "bt.json"
    code = main(["backtest", "--model", str(saved_model), "--source", "synthetic",
                 "--start", "2023-06-01", "--end", "2023-08-31", "--json", str(out)])  # fmt: skip
    assert code == 0
    table = json.loads(out.read_text())
    assert set(table["baselines"]) == {
        "cash",
        "buy_and_hold",
        "trend",
        "always_long",
        "sma_crossover",
        "random",
    }
    for key in ("total_return_pct", "sharpe", "sortino", "max_drawdown_pct", "win_rate",
                "profit_factor", "n_trades", "exposure", "fees_paid"):  # fmt: skip
        assert key in table["model"]
    assert table["period"]["start"].startswith("2023-06-01")
    assert table["period"]["end"].startswith("2023-08-31T23")
    agent, spec = load_model_for_backtest(saved_model)
    assert spec.market.risk.stop_loss == 0.03  # the model's own risk settings are used
    data = cut_period(synthetic_market(PAIRS, "1h", seed=0), "2023-06-01", "2023-08-31")
    direct = backtest(agent, spec, data)
    assert table["model"]["total_return_pct"] == pytest.approx(
        direct.model.metrics[0].total_return_pct
    )


def test_backtest_json_has_each_policys_excess_return_over_cash(
    saved_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bt.json"
    assert main(["backtest", "--model", str(saved_model), "--source", "synthetic", "--start",
                 "2023-06-01", "--end", "2023-06-30", "--json", str(out)]) == 0  # fmt: skip
    table = json.loads(out.read_text())
    excess = table["excess_daily_return"]
    assert set(excess) == {"model", *table["baselines"]}
    assert excess["cash"]["mean_pct"] == 0.0 and excess["cash"]["high_pct"] == 0.0
    hold = excess["buy_and_hold"]
    assert hold["n_days"] == 30 and hold["low_pct"] < hold["mean_pct"] < hold["high_pct"]
    assert "stationary bootstrap" in hold["method"]
    exposure = table["market_exposure"]  # each policy against buy-and-hold's days
    assert set(exposure) == set(excess)
    assert exposure["buy_and_hold"]["beta"] == pytest.approx(1.0)
    assert exposure["buy_and_hold"]["alpha_daily_pct"] == pytest.approx(0.0, abs=1e-12)
    assert exposure["cash"]["beta"] == 0.0 and exposure["cash"]["alpha_daily_pct"] == 0.0
    model = exposure["model"]
    low, high = model["alpha_ci95_pct"]
    assert low <= model["alpha_daily_pct"] <= high
    # alpha = mean - beta * the market's mean: the line through the two excess means
    expected = excess["model"]["mean_pct"] - model["beta"] * hold["mean_pct"]
    assert model["alpha_daily_pct"] == pytest.approx(expected)


def test_backtest_table_is_readable_at_80_columns(saved_model: Path) -> None:
    from rich.console import Console

    from nexlify.commands.backtest import backtest_table
    from nexlify.evaluation.backtest import METRIC_COLUMNS
    from nexlify.report.tables import EXCESS_ROWS, EXPOSURE_CAPTION

    agent, spec = load_model_for_backtest(saved_model)
    data = cut_period(synthetic_market(PAIRS, "1h", seed=0), "2023-06-01", "2023-06-30")
    console = Console(width=80, record=True)
    console.print(backtest_table(backtest(agent, spec, data).table(), "synthetic"))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # nothing cut short
    lines = text.splitlines()
    for _, title, _ in METRIC_COLUMNS:  # each metric on one line, in full
        assert any(line.lstrip().startswith(title) for line in lines), title
    for title in (*(title for _, title in EXCESS_ROWS), "market beta", "alpha %/day"):
        assert any(line.lstrip().startswith(title) for line in lines), title
    assert " ".join(EXPOSURE_CAPTION.split()[:4]) in " ".join(text.split())
    words = set(text.split())
    for name in ("model", "cash", "buy_and_hold", "trend", "always_long", "sma_crossover"):
        assert set(name.split("_")) <= words, name  # a name may wrap between its words


def test_backtest_refuses_data_for_other_pairs(
    saved_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames_dir = tmp_path / "data"
    frames_dir.mkdir()
    code = main(["backtest", "--model", str(saved_model), "--data-dir", str(frames_dir)])
    assert code == 3
    assert "BTC/USDT" in capsys.readouterr().err


def test_backtest_refuses_a_file_that_is_not_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"not a checkpoint")
    assert main(["backtest", "--model", str(bogus), "--source", "synthetic"]) == 4
    assert "model.pt" in capsys.readouterr().err


def test_backtest_takes_an_ensemble_like_a_single_model(saved_model: Path, tmp_path: Path) -> None:
    from nexlify.agent.dqn import load_agent
    from nexlify.agent.ensemble import EnsembleAgent

    member, meta = load_agent(saved_model)
    other = DQNAgent(member.obs_dim, member.n_actions, AgentConfig(hidden_sizes=(16,)), seed=9)
    path = EnsembleAgent([member, other]).save(tmp_path / "ensemble.pt", extra=meta["extra"])
    out = tmp_path / "bt.json"
    code = main(["backtest", "--model", str(path), "--source", "synthetic", "--start",
                 "2023-06-01", "--end", "2023-06-30", "--json", str(out)])  # fmt: skip
    assert code == 0
    model = json.loads(out.read_text())["model"]
    ensemble, spec = load_model_for_backtest(path)
    assert isinstance(ensemble, EnsembleAgent)  # both members vote, not the first alone
    data = cut_period(synthetic_market(PAIRS, "1h", seed=0), "2023-06-01", "2023-06-30")
    direct = backtest(ensemble, spec, data).model.metrics[0]
    assert model["n_trades"] == direct.n_trades  # the trades the ensemble's own run made
    assert model["total_return_pct"] == pytest.approx(direct.total_return_pct)
