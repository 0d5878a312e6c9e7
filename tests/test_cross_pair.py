"""``data.cross_pair``: the cross-pair features by hand, their look-ahead safety, the refusal
of one pair, and the feature set travelling with a pipeline model to backtest and paper replay."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from nexlify.cli import build_parser, main
from nexlify.commands.train import resolve_run_config
from nexlify.data.features import (
    FeatureConfig,
    compute_market_features,
    feature_config_for,
    feature_names,
    feature_warmup,
    raw_market_features,
)
from nexlify.data.synthetic import generate_synthetic_candles
from nexlify.errors import ConfigError
from nexlify.evaluation.backtest import load_model_for_backtest
from nexlify.evaluation.lookahead import audit_lookahead
from nexlify.pipeline.data_choice import run_features
from nexlify.pipeline.run_files import result_config
from nexlify.train.config import DataConfig
from tests.test_features import TINY, random_walk_ohlcv
from tests.test_long_memory import (
    TIMEFRAME,
    assert_backtest_and_replay_agree,
    tiny_pipeline_model,
)

TINY_CROSS = dataclasses.replace(TINY, cross_pair_horizons=(1, 2))


def _three_pairs(closes: list[list[float]]) -> np.ndarray:
    """[T, P, 5] candles with open = close and high/low 1% around it."""
    c = np.asarray(closes, dtype=np.float64).T
    return np.stack([c, c * 1.01, c * 0.99, c, np.ones_like(c)], axis=-1)


def test_relative_strength_and_rank_by_hand() -> None:
    closes = [[100, 110, 121, 121], [100, 100, 100, 90], [100, 105, 105, 105]]
    raw = raw_market_features(_three_pairs(closes), TINY_CROSS)
    log_close = np.log(np.asarray(closes, dtype=np.float64).T)
    r1 = log_close[1:] - log_close[:-1]  # bars 1..3
    np.testing.assert_allclose(raw["xs_ret_1"][1:], r1 - r1.mean(axis=1, keepdims=True))
    assert np.isnan(raw["xs_ret_1"][0]).all() and np.isnan(raw["xs_rank_2"][:2]).all()
    # bar 1: +9.5%, 0, +4.9% -> ranks 3, 1, 2 -> +0.5, -0.5, 0
    np.testing.assert_array_equal(raw["xs_rank_1"][1], [0.5, -0.5, 0.0])
    # bar 3: 0, -10.5%, 0 -> the tied pairs share rank 2.5 -> +0.25, -0.5, +0.25
    np.testing.assert_array_equal(raw["xs_rank_1"][3], [0.25, -0.5, 0.25])
    r2 = log_close[3] - log_close[1]
    np.testing.assert_allclose(raw["xs_ret_2"][3], r2 - r2.mean())
    # the relative strengths of a bar sum to 0 over the pairs
    np.testing.assert_allclose(raw["xs_ret_2"][2:].sum(axis=1), 0.0, atol=1e-15)


def test_windows_in_days_and_names_after_every_other_feature() -> None:
    both = feature_config_for("4h", True, True)
    assert both.cross_pair_horizons == (6, 42, 180)
    assert feature_names(both)[-6:] == ("xs_ret_6", "xs_rank_6", "xs_ret_42", "xs_rank_42",
                                        "xs_ret_180", "xs_rank_180")  # fmt: skip
    assert feature_names(both)[:-6] == feature_names(feature_config_for("4h", True))
    hourly = feature_config_for("1h", False, True)
    assert hourly.cross_pair_horizons == (24, 168, 720) and not hourly.ma_windows
    # the 30-day return is the longest look-back; the normaliser needs 168 values on top
    assert feature_warmup(hourly) == 720 + 168 - 1
    assert feature_config_for("1h", False, False) == FeatureConfig()


def test_cross_pair_features_are_prefix_stable_and_bounded() -> None:
    config = dataclasses.replace(FeatureConfig(), cross_pair_horizons=(24, 168, 300))
    ohlcv = random_walk_ohlcv(1500, 3, seed=4)
    full, names = compute_market_features(ohlcv, config=config)
    warmup = feature_warmup(config)
    assert names[-6:] == ("xs_ret_24", "xs_rank_24", "xs_ret_168", "xs_rank_168",
                          "xs_ret_300", "xs_rank_300")  # fmt: skip
    assert np.isnan(full[:warmup]).all() and np.isfinite(full[warmup:]).all()
    assert set(np.unique(full[warmup:, :, -1])) <= {-0.5, 0.0, 0.5}
    for k in (warmup, warmup + 1, 1000, 1499):
        prefix, _ = compute_market_features(ohlcv[:k], config=config)
        np.testing.assert_array_equal(prefix, full[:k], strict=True)
    changed = ohlcv.copy()
    changed[1201:, 2, :4] *= 0.5  # one pair crashing after bar 1200 changes nothing up to it
    other, _ = compute_market_features(changed, config=config)
    np.testing.assert_array_equal(other[:1201], full[:1201])
    # ... and moves the other pairs' relative strength after it: the features do cross pairs
    assert not np.array_equal(other[1201:, 0, -6], full[1201:, 0, -6])


def test_one_pair_is_refused_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match=r"cross_pair.*two pairs or more"):
        DataConfig(pairs=("BTC/USDT",), cross_pair=True)
    with pytest.raises(ConfigError, match="got 1 pair, give at least two"):
        compute_market_features(random_walk_ohlcv(400, 1, seed=1), config=TINY_CROSS)
    with pytest.raises(ConfigError, match="cross_pair_horizons"):
        FeatureConfig(cross_pair_horizons=(3, 3))
    parser = build_parser(["train"])
    assert main(["train", "--pairs", "BTC/USDT", "--cross-pair", "--quick-test",
                 "--automated"]) == 2  # fmt: skip
    on = resolve_run_config(parser.parse_args(["train", "--cross-pair"]))
    assert on.data.cross_pair and not DataConfig().cross_pair
    # --quick-test keeps one pair, or the first two when the features compare pairs
    quick = resolve_run_config(parser.parse_args(["train", "--quick-test", "--cross-pair"]))
    assert quick.data.pairs == on.data.pairs[:2]
    assert run_features(on.data) == feature_config_for(on.data.timeframe, False, True)
    # off, the setting stays out of the result hash: earlier runs and studies keep theirs
    off = resolve_run_config(parser.parse_args(["train"]))
    assert "cross_pair" not in result_config(off)["data"]
    assert result_config(on)["data"]["cross_pair"] is True


def test_lookahead_audit_covers_the_cross_pair_columns() -> None:
    frames = generate_synthetic_candles(["BTC/USDT", "ETH/USDT"], "1h", n_bars=1300, seed=2)
    features = dataclasses.replace(FeatureConfig(), cross_pair_horizons=(24, 168))
    report = audit_lookahead(frames, "1h", n_cuts=2, features=features)
    assert report.clean
    assert "candle feature (32 columns)" in report.covered  # (12 default + 4 cross) x 2 pairs


@pytest.fixture(scope="module")
def cross_pair_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_pipeline_model(tmp_path_factory.mktemp("cross_pair_run"), "--cross-pair")


@pytest.mark.slow
def test_cross_pair_model_backtests_and_replays_like_its_backtest(
    cross_pair_run: Path, tmp_path: Path
) -> None:
    """The pipeline's own final_model.pt: backtest rebuilds its cross-pair features, and a paper
    replay of the same bars equals the backtest, float for float."""
    spec = load_model_for_backtest(cross_pair_run)[1]
    assert spec.features == feature_config_for(TIMEFRAME, False, True)
    assert spec.feature_names[-2:] == ("xs_ret_180", "xs_rank_180")
    assert_backtest_and_replay_agree(cross_pair_run, tmp_path)
