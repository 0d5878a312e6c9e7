"""The look-ahead audit passes the real features and catches planted leaks."""

from __future__ import annotations

import numpy as np
import pytest

from nexlify.agent.config import AgentConfig
from nexlify.agent.dqn import DQNAgent
from nexlify.cli import main
from nexlify.data.features import compute_market_features
from nexlify.data.synthetic import generate_synthetic_candles
from nexlify.evaluation.lookahead import audit_lookahead

PAIRS = ["BTC/USDT", "ETH/USDT"]


@pytest.fixture(scope="module")
def frames():  # type: ignore[no-untyped-def]
    return generate_synthetic_candles(PAIRS, "1h", n_bars=1400, seed=4)


def leaky_features(ohlcv: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """The real features plus one that peeks at the next bar's close (a planted leak)."""
    features, names = compute_market_features(ohlcv)
    close = ohlcv[:, :, 3]
    peek = np.full(close.shape, np.nan)
    peek[:-1] = np.log(close[1:] / close[:-1])  # tomorrow's return, known today: a leak
    peek[-1] = 0.0
    peek = np.where(np.isnan(features[:, :, :1]).any(axis=2), np.nan, peek)
    return np.concatenate([features, peek[:, :, None]], axis=2), (*names, "next_return")


def test_real_features_and_decisions_are_clean(frames) -> None:  # type: ignore[no-untyped-def]
    agent = DQNAgent(2 * 12 + 2 * 3 + 4, 5, AgentConfig(hidden_sizes=(16,)), seed=0)
    report = audit_lookahead(frames, "1h", n_cuts=3, agent=agent)
    assert report.clean, report.leaks
    assert len(report.cuts) == 3 and report.checked_decisions


def test_a_feature_using_the_next_bar_is_caught(frames) -> None:  # type: ignore[no-untyped-def]
    report = audit_lookahead(frames, "1h", n_cuts=3, feature_fn=leaky_features)
    assert not report.clean
    leak = report.leaks[0]
    assert leak.kind == "feature" and "next_return" in leak.detail
    assert leak.bar == leak.cut - 1  # the last bar before the cut is where it shows


def test_decisions_of_a_model_that_sees_a_leak_are_caught(frames) -> None:  # type: ignore[no-untyped-def]
    agent = DQNAgent(2 * 13 + 2 * 3 + 4, 5, AgentConfig(hidden_sizes=(16,)), seed=0)
    report = audit_lookahead(frames, "1h", n_cuts=2, feature_fn=leaky_features, agent=agent)
    kinds = {leak.kind for leak in report.leaks}
    assert kinds == {"feature", "observation", "decision"}


def test_cli_exit_code_is_0_when_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit-lookahead", "--pairs", "BTC/USDT", "--cuts", "2"]) == 0
    err = capsys.readouterr().err
    assert "no look-ahead" in err
    assert "covered: candle feature" in err and "covered: portfolio" in err
