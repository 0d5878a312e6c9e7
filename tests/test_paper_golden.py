"""The golden path: the files the main job writes, replayed through ``nexlify paper``.

Every other paper test uses a hand-made model; these use the pipeline's own ``final_model.pt``
and ``ensemble_model.pt`` (quick test on the synthetic market, and a small run on real Binance
candles), so a default changed anywhere in the pipeline cannot break paper trading silently.
The replay must give the trades and the equity of the backtest over the same bars, float for
float.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nexlify.agent.ensemble import load_policy
from nexlify.cli import main
from nexlify.data.candles import read_candles
from nexlify.data.features import FEATURE_WARMUP
from nexlify.data.market_data import build_market_data
from nexlify.data.synthetic import generate_synthetic_candles
from nexlify.evaluation.backtest import backtest, cut_period, load_model_for_backtest, model_spec
from nexlify.live.feeds import ReplayFeed
from nexlify.live.retrain import session_run_config
from nexlify.live.session import SessionSettings, open_session, run_session
from nexlify.live.session_report import read_session, session_comparison
from nexlify.live.status import closing_line, status_snapshot
from nexlify.live.trader import paper_market_config, warmup_progress
from nexlify.pipeline.rolling import RollingSpec
from tests.helpers import shared_data_or_skip
from tests.test_paper_agreement import TRADE_KEYS, db_rows, session_equity, session_trades
from tests.test_paper_support import write_candles

pytestmark = pytest.mark.slow

TINY_BUDGET = ["--initial-episodes", "2", "--retrain-episodes", "1", "--max-iterations", "1",
               "--episode-length", "168", "--eval-every", "1", "--workers", "1"]  # fmt: skip
"""Small training budgets; everything that shapes the model file (network, features, market
settings, observation window) stays at the pipeline's defaults."""
TRADED_BARS = 400


def run_pipeline(out: Path, *extra: str) -> Path:
    code = main(["train", "--quick-test", "--automated", "--output-dir", str(out),
                 *TINY_BUDGET, *extra])  # fmt: skip
    assert code == 0
    assert (out / "final_model.pt").is_file() and (out / "ensemble_model.pt").is_file()
    return out


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_pipeline(tmp_path_factory.mktemp("synthetic_run"))


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The pipeline on half a year of real BTC/USDT candles; returns (run dir, data dir)."""
    source = shared_data_or_skip("market", "binance") / "BTC_USDT-1h.csv"
    frame = read_candles(source)
    frame = frame[frame.index >= pd.Timestamp("2024-07-01", tz="UTC")]
    data_dir = tmp_path_factory.mktemp("real_data")
    write_candles(data_dir, {"BTC/USDT": frame})
    out = run_pipeline(tmp_path_factory.mktemp("real_run"), "--data-dir", str(data_dir),
                       "--pairs", "BTC/USDT")  # fmt: skip
    return out, data_dir


def replay_and_compare(
    model: Path, frames: dict[str, pd.DataFrame], tmp: Path
) -> list[dict[str, Any]]:
    """``nexlify paper`` over ``frames`` with ``--max-bars`` equals the backtest of those bars;
    returns the session's trades."""
    files = write_candles(tmp / "replay", frames)
    db = tmp / f"{model.stem}.db"
    code = main(["paper", "--model", str(model), "--feed", "replay", "--data", *files,
                 "--db", str(db), "--no-view", "--max-bars", str(TRADED_BARS)])  # fmt: skip
    assert code == 0
    agent, spec = load_model_for_backtest(model)
    data = build_market_data(frames, spec.timeframe, "replay")
    window = spec.market.env.obs_window
    # The session trades from its first decision bar and stops after TRADED_BARS steps.
    traded = data.slice(0, window + TRADED_BARS)
    open_ended = dataclasses.replace(spec, market=paper_market_config(spec.market))
    result = backtest(agent, open_ended, traded)
    reference = result.model
    equity = session_equity(db)
    assert equity.shape == (TRADED_BARS + 1,)
    assert np.array_equal(equity, reference.equity_curves[0])
    trades = session_trades(db)
    assert trades == [{k: t[k] for k in TRADE_KEYS} for t in reference.trades[0]]
    last = db_rows(db, "SELECT last_bar_time FROM feed_cursor")[0]["last_bar_time"]
    assert last == int(traded.time[-1])
    # The session report's buy-and-hold, from the candles the session stored, is the backtest's.
    comparison = session_comparison(read_session(db))
    assert not isinstance(comparison, str), comparison
    _, runs = comparison
    hold = result.baselines["buy_and_hold"].equity_curves[0]
    np.testing.assert_allclose(runs["buy_and_hold"].equity_curves[0], hold, rtol=1e-12)
    assert main(["paper", "report", "--db", str(db), "--out", str(tmp / "paper.html")]) == 0
    return trades


@pytest.mark.parametrize("name", ["final_model.pt", "ensemble_model.pt"])
def test_quick_test_model_replays_like_its_backtest(
    synthetic_run: Path, name: str, tmp_path: Path
) -> None:
    spec = load_model_for_backtest(synthetic_run / name)[1]
    frames = generate_synthetic_candles(spec.pairs, spec.timeframe,
                                        FEATURE_WARMUP + TRADED_BARS + 50, seed=11)  # fmt: skip
    replay_and_compare(synthetic_run / name, frames, tmp_path)


@pytest.mark.parametrize("name", ["final_model.pt", "ensemble_model.pt"])
def test_real_candle_model_replays_like_its_backtest(
    real_run: tuple[Path, Path], name: str, tmp_path: Path
) -> None:
    run, data_dir = real_run
    frame = read_candles(data_dir / "BTC_USDT-1h.csv")
    frames = {"BTC/USDT": frame.iloc[-(FEATURE_WARMUP + TRADED_BARS + 50) :]}
    replay_and_compare(run / name, frames, tmp_path)


def test_a_model_with_strategy_books_replays_like_its_backtest(tmp_path: Path) -> None:
    """The pipeline's model trained with staking and lending beside spot: the session
    simulates the books as the backtest does (equity bar for bar, trades)."""
    run = run_pipeline(tmp_path / "run", "--strategies", "spot", "staking", "lending")
    model = run / "final_model.pt"
    agent, spec = load_model_for_backtest(model)
    assert spec.market.strategies.enabled == ("spot", "staking", "lending")
    frames = generate_synthetic_candles(spec.pairs, spec.timeframe,
                                        FEATURE_WARMUP + TRADED_BARS + 50, seed=5)  # fmt: skip
    replay_and_compare(model, frames, tmp_path)
    (books,) = backtest(
        agent, spec, build_market_data(frames, spec.timeframe, "replay")
    ).model.strategies
    assert books["staking_reward_units"] > 0 or books["lending_interest_units"] > 0


def test_settings_given_to_the_pipeline_reach_paper_trading(tmp_path: Path) -> None:
    """``--min-hold-bars``, ``--decision-interval`` (market) and ``--hold-margin`` (agent) are
    saved in the pipeline's model and the paper session applies them as the backtest does: no
    signal exit from a position younger than 6 bars, orders only every third bar, and the same
    trades and equity. The training schedule (``--no-curriculum``, ``--augment-price-jitter``)
    reaches the session's fine-tunes."""
    run = run_pipeline(tmp_path / "run", "--min-hold-bars", "6", "--hold-margin", "0.005",
                       "--decision-interval", "3", "--no-curriculum",
                       "--augment-price-jitter", "0.0005", "--seed", "7")  # fmt: skip
    model = run / "final_model.pt"
    policy, spec = load_model_for_backtest(model)
    assert spec.market.env.min_hold_bars == 6
    assert spec.market.env.decision_interval == 3
    assert policy.config.hold_margin == 0.005  # type: ignore[attr-defined]
    tune = session_run_config(str(model), spec.market, RollingSpec(every_days=14))
    assert tune.train.curriculum is False
    assert tune.train.augmentation.price_jitter == 0.0005
    assert (tune.train.device, tune.train.torch_threads) == ("cpu", 1)
    assert tune.market == spec.market and tune.agent == policy.config  # type: ignore[attr-defined]
    # seed 7's tiny model trades on these candles (the others hold): entries, signal exits
    frames = generate_synthetic_candles(spec.pairs, spec.timeframe,
                                        FEATURE_WARMUP + TRADED_BARS + 50, seed=5)  # fmt: skip
    trades = replay_and_compare(model, frames, tmp_path)
    (row,) = db_rows(tmp_path / "final_model.db", "SELECT market_config FROM session")
    assert json.loads(row["market_config"])["env"]["min_hold_bars"] == 6
    bar = pd.Timedelta(spec.timeframe).total_seconds()
    signal = [t for t in trades if t["reason"] == "signal"]
    assert signal and all((t["exit_time"] - t["entry_time"]) / bar >= 6 for t in signal)
    # orders fill only at the first bar of each 3-bar decision interval (stops at any bar)
    first_fill = min(t["entry_time"] for t in trades)
    fills = [t["entry_time"] for t in trades] + [t["exit_time"] for t in signal]
    assert len(trades) >= 5 and all((f - first_fill) / bar % 3 == 0 for f in fills), trades


def test_cli_backtest_of_the_pipeline_model_matches_the_library_backtest(
    real_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """``nexlify backtest`` on the pipeline's model over a period is the library's backtest of
    it: what the replay tests compare against is what the command reports."""
    run, data_dir = real_run
    out = tmp_path / "bt.json"
    code = main(["backtest", "--model", str(run / "final_model.pt"), "--data-dir", str(data_dir),
                 "--start", "2024-12-01", "--json", str(out)])  # fmt: skip
    assert code == 0
    table = json.loads(out.read_text())
    agent, spec = load_model_for_backtest(run / "final_model.pt")
    frame = read_candles(data_dir / "BTC_USDT-1h.csv")
    data = cut_period(build_market_data({"BTC/USDT": frame}, "1h", "files"), "2024-12-01", None)
    result = backtest(agent, spec, data)
    expected = result.model.metrics[0]
    assert table["model"]["final_equity"] == pytest.approx(expected.final_equity, rel=1e-12)
    assert table["model"]["n_trades"] == expected.n_trades
    exposure = result.exposure()["model"]  # the beta/alpha rows the command prints
    assert table["market_exposure"]["model"]["beta"] == pytest.approx(exposure["beta"])
    assert table["market_exposure"]["model"]["alpha_daily_pct"] == pytest.approx(
        exposure["alpha_daily_pct"]
    )


def test_warm_up_is_reported_and_max_bars_counts_trading_bars(
    real_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, data_dir = real_run
    files = [str(data_dir / "BTC_USDT-1h.csv")]
    model = str(run / "final_model.pt")
    db = tmp_path / "warm.db"
    args = ["paper", "--model", model, "--feed", "replay", "--data", *files, "--no-view"]
    assert main([*args, "--db", str(db), "--max-bars", "5", "--start", "2024-12-20"]) == 0
    line = " ".join(capsys.readouterr().err.split())
    assert "processed" in line and "(5 traded)" in line and "equity" in line
    assert main(["paper", "status", "--db", str(db), "--json"]) == 0
    snap = json.loads(capsys.readouterr().out)
    assert "warmup" not in snap and snap["processed_bars"] > 5
    # --start with --max-bars: 5 bars traded from the start, whatever came before it.
    times = db_rows(db, "SELECT bar_time FROM equity ORDER BY bar_time")
    assert len(times) == 6
    assert times[0]["bar_time"] == int(pd.Timestamp("2024-12-20", tz="UTC").timestamp())


def test_status_during_the_warm_up_says_how_far_it_is(
    real_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A session stopped during the warm-up (here: its feed stops after 100 bars) reports how
    far the warm-up is, in its closing line and in ``nexlify paper status``."""
    run, data_dir = real_run
    model = run / "final_model.pt"
    policy, meta = load_policy(model)
    spec = model_spec(meta, model)
    frames = {"BTC/USDT": read_candles(data_dir / "BTC_USDT-1h.csv")}
    data = build_market_data(frames, "1h", "replay")
    db = tmp_path / "short.db"
    feed = ReplayFeed(frames, "1h", stop_after=100)
    settings = SessionSettings(db=db, model_path=str(model), feed="replay")
    store, trader = open_session(settings, policy, spec, feed, data)
    progress = run_session(trader, feed)
    assert (progress.new_bars, progress.traded) == (100, 0)
    need = FEATURE_WARMUP + 2
    assert warmup_progress(trader.history.span(), None, 3600, spec.market.env.obs_window) == (
        100,
        need,
    )
    line = closing_line(status_snapshot(store), progress.new_bars, progress.traded)
    store.close()
    assert f"warming up (100 of {need} bars)" in line and "equity" not in line
    assert main(["paper", "status", "--db", str(db), "--json"]) == 0
    snap = json.loads(capsys.readouterr().out)
    assert snap["warmup"] == {"have": 100, "need": need}


def test_start_after_the_replay_data_is_refused(
    real_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, data_dir = real_run
    db = tmp_path / "late.db"
    code = main(["paper", "--model", str(run / "final_model.pt"), "--feed", "replay",
                 "--data", str(data_dir / "BTC_USDT-1h.csv"), "--db", str(db), "--no-view",
                 "--start", "2025-06-01"])  # fmt: skip
    assert code == 3
    assert "after the last candle" in capsys.readouterr().err
    assert db_rows(db, "SELECT * FROM session") == []
