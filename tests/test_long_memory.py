"""``data.long_memory``: the long-memory features by hand, their warm-up, and the feature set
travelling with a model from the pipeline to backtests, paper replay and the live warm-up."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nexlify.agent.ensemble import load_policy
from nexlify.cli import build_parser, main
from nexlify.commands.paper import poll_history_bars
from nexlify.commands.preflight_checks import obs_dim
from nexlify.commands.train import resolve_run_config
from nexlify.config import MarketConfig
from nexlify.config.augment import AugmentConfig
from nexlify.data.augment import with_candles
from nexlify.data.candles import pair_to_stem
from nexlify.data.features import (
    FEATURE_WARMUP,
    FeatureConfig,
    compute_market_features,
    feature_config_for,
    feature_config_to_dict,
    feature_names,
    feature_warmup,
    raw_market_features,
)
from nexlify.data.market_data import build_market_data
from nexlify.data.synthetic import generate_synthetic_candles
from nexlify.errors import CheckpointError, DataError
from nexlify.evaluation.backtest import ModelSpec, backtest, load_model_for_backtest, model_spec
from nexlify.evaluation.lookahead import audit_lookahead
from nexlify.live.feeds import ReplayFeed
from nexlify.live.session import SessionSettings, open_session, run_session
from nexlify.live.trader import (
    CandleHistory,
    paper_market_config,
    recorded_features_warmup,
    warmup_bars_needed,
)
from nexlify.market.env import VecMarketEnv
from nexlify.pipeline.data_choice import load_training_market, run_features
from nexlify.train.config import DataConfig
from nexlify.train.curriculum import TrainingMarkets
from tests.test_features import TINY, candles_from_closes
from tests.test_paper_agreement import TRADE_KEYS, db_rows, session_equity, session_trades

# TINY's windows plus short long-memory ones: lookback max(3, 3, 2, 3 - 1, 3 - 1) = 3.
TINY_LONG = dataclasses.replace(TINY, long_return_horizons=(3,), ma_windows=(2, 3),
                                drawdown_window=3)  # fmt: skip


def test_windows_in_days_become_bars_of_the_timeframe() -> None:
    hourly = feature_config_for("1h", True)
    assert feature_names(hourly)[-5:] == (
        "ret_168", "ret_720", "ma_dist_1200", "ma_dist_4800", "drawdown_2160",
    )  # fmt: skip
    # the 200-day average is the longest look-back; the normaliser needs 168 values on top
    assert feature_warmup(hourly) == 4800 - 1 + 168 - 1 == 4966
    four_hourly = feature_config_for("4h", True)
    assert (four_hourly.long_return_horizons, four_hourly.ma_windows) == ((42, 180), (300, 1200))
    assert four_hourly.drawdown_window == 540 and feature_warmup(four_hourly) == 1366
    daily = feature_config_for("1d", True)
    assert feature_names(daily)[-5:] == ("ret_7", "ret_30", "ma_dist_50", "ma_dist_200",
                                         "drawdown_90")  # fmt: skip
    assert feature_warmup(daily) == 199 + 167
    # the default set is untouched: same names first, same warm-up without the option
    assert feature_names(hourly)[:12] == feature_names()
    assert feature_warmup(feature_config_for("1h", False)) == FEATURE_WARMUP == 335


def test_long_memory_values_by_hand() -> None:
    closes = [100.0, 110.0, 99.0, 99.0, 108.9]
    raw = raw_market_features(candles_from_closes(closes), TINY_LONG)  # highs: close * 1.01
    ret_3, ma_2, ma_3, drawdown = (raw[n][:, 0] for n in
                                   ("ret_3", "ma_dist_2", "ma_dist_3", "drawdown_3"))  # fmt: skip
    assert np.isnan(ret_3[:3]).all()
    np.testing.assert_allclose(ret_3[3:], [math.log(99 / 100), math.log(108.9 / 110)], rtol=1e-12)
    assert np.isnan(ma_2[0])
    np.testing.assert_allclose(
        ma_2[1:],
        [math.log(110 / 105), math.log(99 / 104.5), 0.0, math.log(108.9 / 103.95)],
        rtol=1e-12, atol=1e-15,
    )  # fmt: skip
    assert np.isnan(ma_3[:2]).all()
    np.testing.assert_allclose(
        ma_3[2:], [math.log(99 / 103), math.log(99 / (308 / 3)), math.log(108.9 / 102.3)],
        rtol=1e-12,
    )  # fmt: skip
    # running high over 3 bars: 110 * 1.01 for bars 2 and 3, then 108.9 * 1.01 itself
    assert np.isnan(drawdown[:2]).all()
    np.testing.assert_allclose(
        drawdown[2:], [math.log(99 / 111.1), math.log(99 / 111.1), math.log(1 / 1.01)],
        rtol=1e-12,
    )  # fmt: skip


def test_long_memory_features_are_in_units_of_a_random_walks_move_and_clipped() -> None:
    closes = [100.0, 110.0, 99.0, 99.0, 108.9, 120.0, 90.0]
    ohlcv = candles_from_closes(closes)
    feats, names = compute_market_features(ohlcv, config=TINY_LONG)
    assert feature_warmup(TINY_LONG) == 3 + 2 - 1
    assert np.isnan(feats[:4]).all() and np.isfinite(feats[4:]).all()
    r = [math.log(c / p) for p, c in itertools.pairwise(closes)]  # r[i]: bar i + 1

    def sigma(bar: int) -> float:  # sample std of the 3 one-bar returns ending at ``bar``
        window = r[bar - 3 : bar]
        mean = sum(window) / 3
        return math.sqrt(sum((v - mean) ** 2 for v in window) / 2)

    # ma_dist_2 at bar 5: log(close / SMA_2) / (sigma * sqrt(2))
    x5 = math.log(120.0 / ((108.9 + 120.0) / 2))
    expected = x5 / (sigma(5) * math.sqrt(2))
    assert feats[5, 0, names.index("ma_dist_2")] == pytest.approx(expected, rel=1e-6)
    # drawdown at bar 4: -log(1.01) / (sigma * sqrt(3)): its level, not just its sign
    drawdown = -math.log(1.01) / (sigma(4) * math.sqrt(3))
    assert feats[4, 0, names.index("drawdown_3")] == pytest.approx(drawdown, rel=1e-6)
    # ret_3 at bar 6: log(90 / 99) / (sigma * sqrt(3))
    ret = math.log(90.0 / 99.0) / (sigma(6) * math.sqrt(3))
    assert feats[6, 0, names.index("ret_3")] == pytest.approx(max(ret, -TINY_LONG.clip), rel=1e-6)
    clipped = dataclasses.replace(TINY_LONG, clip=0.5)
    small, _ = compute_market_features(ohlcv, config=clipped)
    assert np.abs(small[4:]).max() == pytest.approx(0.5)


def test_too_little_history_names_the_source_and_both_counts() -> None:
    frames = generate_synthetic_candles(["BTC/USDT"], "1h", n_bars=3000, seed=1)
    with pytest.raises(DataError) as error:
        build_market_data(frames, "1h", "files:somewhere", features=feature_config_for("1h", True))
    message = str(error.value)
    assert "files:somewhere" in message and "3000 bars" in message and "4968" in message
    assert "200 days" in message
    # the default set is fine with the same candles
    assert build_market_data(frames, "1h", "files:somewhere").n_bars == 3000 - FEATURE_WARMUP


def test_the_option_reaches_the_config_the_market_and_the_observation() -> None:
    parser = build_parser(["train"])
    daily = ["train", "--timeframe", "1d", "--episode-length", "100"]
    on = resolve_run_config(parser.parse_args([*daily, "--long-memory"]))
    off = resolve_run_config(parser.parse_args(daily))
    assert on.data.long_memory and not off.data.long_memory and not DataConfig().long_memory
    assert run_features(on.data) == feature_config_for("1d", True)
    pairs = ("BTC/USDT", "ETH/USDT")
    data = dataclasses.replace(on.data, source="synthetic", pairs=pairs, synthetic_days=1000)
    market = load_training_market(data, _logger())
    assert market.feature_config == feature_config_for("1d", True)
    assert market.feature_names == feature_names(market.feature_config)
    config = dataclasses.replace(on, data=data)
    env = VecMarketEnv(market, config.market)
    assert env.obs_size == obs_dim(config)
    assert obs_dim(config) == obs_dim(dataclasses.replace(config, data=dataclasses.replace(
        data, long_memory=False))) + 5 * 2 * config.market.env.obs_window  # fmt: skip
    # augmentation recomputes the data's own feature set
    again = with_candles(market, market.prices.astype(np.float64), market.volume.astype(float))
    assert again.feature_names == market.feature_names
    assert again.n_bars == market.n_bars - feature_warmup(market.feature_config)


def test_checkpoint_feature_set_is_read_back() -> None:
    base = {"pairs": ["BTC/USDT"], "timeframe": "1h", "feature_names": [],
            "market_config": {}}  # fmt: skip
    hourly = feature_config_for("1h", True)
    recorded = {"extra": {**base, "feature_config": feature_config_to_dict(hourly)}}
    spec = model_spec(json.loads(json.dumps(recorded)), "m.pt")  # as stored: lists, not tuples
    assert spec.features == hourly and spec.feature_warmup == 4966
    assert model_spec({"extra": base}, "old.pt").features == FeatureConfig()  # before the record
    bad = {"extra": {**base, "feature_config": {"ma_windows": [1]}}}
    with pytest.raises(CheckpointError, match=r"bad\.pt.*ma_windows"):
        model_spec(bad, "bad.pt")


def test_live_warm_up_follows_the_model() -> None:
    features = dataclasses.replace(feature_config_for("1h", False), ma_windows=(400,))
    warmup = feature_warmup(features)
    assert warmup == 399 + 167
    frame = generate_synthetic_candles(["BTC/USDT"], "1h", n_bars=warmup + 2, seed=3)["BTC/USDT"]
    history = CandleHistory(("BTC/USDT",), "1h", "test", features)
    history.load({"BTC/USDT": _rows(frame.iloc[: warmup + 1])})
    assert history.market_data() is None  # one bar short of the model's warm-up
    history.load({"BTC/USDT": _rows(frame)})
    data = history.market_data()
    assert data is not None and data.n_bars == 2 and data.feature_names[-1] == "ma_dist_400"
    assert warmup_bars_needed(0, None, 3600, 5, warmup) == warmup + 5
    assert recorded_features_warmup({"features": {"ma_windows": [400]}}) == warmup
    assert recorded_features_warmup({"risk": {}}) == FEATURE_WARMUP


def test_poll_history_covers_the_model_warm_up() -> None:
    market = MarketConfig()
    default = ModelSpec(("BTC/USDT",), "1h", feature_names(), market)
    longer = dataclasses.replace(default, features=feature_config_for("1h", True))
    assert poll_history_bars(default) == 1000
    assert poll_history_bars(longer) == 4966 + 2 + market.env.obs_window


def test_lookahead_audit_computes_the_given_feature_set() -> None:
    frames = generate_synthetic_candles(["BTC/USDT"], "1h", n_bars=1300, seed=2)
    features = dataclasses.replace(FeatureConfig(), long_return_horizons=(100,),
                                   ma_windows=(300,), drawdown_window=200)  # fmt: skip
    report = audit_lookahead(frames, "1h", n_cuts=2, features=features)
    assert report.clean
    assert "candle feature (15 columns)" in report.covered  # 12 default + 3 long, one pair


def test_training_says_when_recomputed_features_cannot_fit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Augmentation recomputes the features and loses their warm-up again: a history too short
    for that (long memory on little data) is said once, not skipped silently every round."""
    frames = generate_synthetic_candles(["BTC/USDT"], "1h", n_bars=1500, seed=2)
    long_set = dataclasses.replace(FeatureConfig(), ma_windows=(1000,))
    market = MarketConfig()
    for features, warned in ((None, False), (long_set, True)):
        data = build_market_data(frames, "1h", "test", features=features)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            TrainingMarkets(data, market, curriculum=False, phases=(0.1, 0.2, 0.35),
                            position_scale=0.5, augment=AugmentConfig(), seed=0,
                            log=_logger())  # fmt: skip
        assert ("1166-bar warm-up" in caplog.text) is warned, caplog.text


def _rows(frame: pd.DataFrame) -> np.ndarray:
    """Stored-candle rows (time in unix seconds, open, high, low, close, volume)."""
    seconds = (frame.index - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    values = frame[["open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64)
    return np.column_stack([np.asarray(seconds, dtype=np.float64), values])


def _logger() -> logging.Logger:
    return logging.getLogger("test")


# --- the golden path: the pipeline's long-memory model, backtested and paper-replayed ---------

TIMEFRAME = "4h"
TRADED_BARS = 120
TINY_BUDGET = ["--initial-episodes", "2", "--retrain-episodes", "1", "--max-iterations", "1",
               "--episode-length", "168", "--eval-every", "1", "--workers", "1"]  # fmt: skip


def tiny_pipeline_model(folder: Path, *flags: str) -> Path:
    """The final_model.pt of a tiny quick-test pipeline at TIMEFRAME with ``flags``."""
    code = main(["train", "--quick-test", "--automated", "--output-dir", str(folder),
                 *TINY_BUDGET, "--timeframe", TIMEFRAME, *flags])  # fmt: skip
    assert code == 0
    return folder / "final_model.pt"


@pytest.fixture(scope="module")
def long_memory_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_pipeline_model(tmp_path_factory.mktemp("long_memory_run"), "--long-memory")


def _write(folder: Path, frames: dict[str, pd.DataFrame]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for pair, frame in frames.items():
        path = folder / f"{pair_to_stem(pair, TIMEFRAME)}.csv"
        frame.reset_index().to_csv(path, index=False)
        paths.append(str(path))
    return paths


def assert_backtest_and_replay_agree(model_path: Path, tmp_path: Path) -> None:
    """``nexlify backtest`` of a pipeline model rebuilds the features it was trained on (the
    default ones would be refused), and ``nexlify paper`` replaying synthetic candles equals
    the backtest of the same bars, float for float."""
    agent, spec = load_model_for_backtest(model_path)
    # nexlify backtest rebuilds the model's features (default ones would be refused)
    out = tmp_path / "bt.json"
    assert main(["backtest", "--model", str(model_path), "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    market = load_training_market(DataConfig(pairs=spec.pairs, timeframe=TIMEFRAME), _logger(),
                                  spec.features)  # fmt: skip
    expected = backtest(agent, spec, market, history=market).model.metrics[0]
    assert table["model"]["final_equity"] == pytest.approx(expected.final_equity, rel=1e-12)
    assert table["model"]["n_trades"] == expected.n_trades

    # nexlify paper replay equals the backtest of the same bars, float for float
    n_bars = spec.feature_warmup + TRADED_BARS + 20
    frames = generate_synthetic_candles(spec.pairs, TIMEFRAME, n_bars, seed=11)
    files = _write(tmp_path / "replay", frames)
    db = tmp_path / "session.db"
    assert main(["paper", "--model", str(model_path), "--feed", "replay", "--data", *files,
                 "--db", str(db), "--no-view", "--max-bars", str(TRADED_BARS)]) == 0  # fmt: skip
    data = build_market_data(frames, TIMEFRAME, "replay", features=spec.features)
    traded = data.slice(0, spec.market.env.obs_window + TRADED_BARS)
    open_ended = dataclasses.replace(spec, market=paper_market_config(spec.market))
    reference = backtest(agent, open_ended, traded).model
    equity = session_equity(db)
    assert equity.shape == (TRADED_BARS + 1,)
    assert np.array_equal(equity, reference.equity_curves[0])
    assert reference.trades[0], "the model should trade in the replay for the check to bite"
    assert session_trades(db) == [{k: t[k] for k in TRADE_KEYS} for t in reference.trades[0]]
    last = db_rows(db, "SELECT last_bar_time FROM feed_cursor")[0]["last_bar_time"]
    assert last == int(traded.time[-1])


@pytest.mark.slow
def test_long_memory_model_backtests_and_replays_like_its_backtest(
    long_memory_run: Path, tmp_path: Path
) -> None:
    spec = load_model_for_backtest(long_memory_run)[1]
    assert spec.features == feature_config_for(TIMEFRAME, True)
    assert spec.feature_names[-3:] == ("ma_dist_300", "ma_dist_1200", "drawdown_540")

    assert_backtest_and_replay_agree(long_memory_run, tmp_path)


@pytest.mark.slow
def test_long_memory_model_warm_up_in_paper_status_and_short_replay(
    long_memory_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = load_model_for_backtest(long_memory_run)[1]
    need = spec.feature_warmup + 2
    frames = generate_synthetic_candles(spec.pairs, TIMEFRAME, need - 1, seed=5)
    files = _write(tmp_path / "short", frames)
    args = ["paper", "--model", str(long_memory_run), "--feed", "replay", "--data", *files,
            "--no-view"]  # fmt: skip
    assert main([*args, "--db", str(tmp_path / "short.db")]) == 3
    err = " ".join(capsys.readouterr().err.split())
    assert "replay" in err and f"{need - 1} bars" in err and str(need) in err
    # a session over enough candles, stopped during its warm-up, reports the model's need
    frames = generate_synthetic_candles(spec.pairs, TIMEFRAME, need + 10, seed=5)
    db = tmp_path / "warm.db"
    policy, _ = load_policy(long_memory_run)
    feed = ReplayFeed(frames, TIMEFRAME, stop_after=100)
    data = build_market_data(frames, TIMEFRAME, "replay", features=spec.features)
    settings = SessionSettings(db=db, model_path=str(long_memory_run), feed="replay")
    store, trader = open_session(settings, policy, spec, feed, data)
    run_session(trader, feed)
    store.close()
    assert main(["paper", "status", "--db", str(db), "--json"]) == 0
    snap = json.loads(capsys.readouterr().out)
    assert snap["warmup"] == {"have": 100, "need": need}
