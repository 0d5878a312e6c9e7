"""The look-ahead audit over every observation column: external daily series as published and
the strategies' observations. A planted leak of each kind fails the CLI with exit code 6; the
honest code passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nexlify.cli import main
from nexlify.commands.audit import LEAK_EXIT_CODE
from nexlify.data import enrichment
from nexlify.data.synthetic import generate_synthetic_candles
from nexlify.evaluation.lookahead_inputs import published_at
from nexlify.market.strategies import columns as SC
from nexlify.market.strategies import layout

START = "2022-01-01"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(candle folder with ETH/USDT 1h, 900 bars; external folder with a daily fear_greed)."""
    root = tmp_path_factory.mktemp("audit")
    candles = root / "candles"
    candles.mkdir()
    frame = generate_synthetic_candles(["ETH/USDT"], "1h", n_bars=900, seed=4, start=START)
    out = frame["ETH/USDT"].reset_index()
    out.columns = ["date", *out.columns[1:]]
    out.to_csv(candles / "ETH_USDT-1h.csv", index=False)
    external = root / "external"
    external.mkdir()
    days = pd.date_range("2021-12-20", periods=60, freq="D")
    values = np.random.default_rng(3).integers(5, 95, size=days.size)
    pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "value": values}).to_csv(
        external / "fear_greed.csv", index=False
    )
    return candles, external


def audit(candles: Path, *extra: str) -> list[str]:
    return ["audit-lookahead", "--data-dir", str(candles), "--pairs", "ETH/USDT",
            "--cuts", "3", *extra]  # fmt: skip


def test_publication_time_is_the_end_of_the_day_plus_the_lag() -> None:
    days = pd.DatetimeIndex(["2024-01-01"], tz="UTC")
    # 2024-01-01 00:00 UTC is 1704067200; the day ends 86,400 s later; one hour of lag.
    assert published_at(days, 1.0)[0] == 1704067200 + 86_400 + 3_600


def test_external_series_joined_as_published_pass(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    candles, external = folders
    args = audit(candles, "--external", "fear_greed", "--external-dir", str(external))
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "covered: external series" in err and "fear_greed, as published" in err


def _without_lag(days: pd.DatetimeIndex, lag_hours: float) -> np.ndarray:
    return pd.DatetimeIndex(days).as_unit("s").asi8  # known from its 00:00 stamp: a leak


def _smoothed_with_the_next_day(original: Any) -> Any:
    def transform(kind: str, x: np.ndarray) -> np.ndarray:
        out = original(kind, x)
        return np.append((out[:-1] + out[1:]) / 2.0, out[-1])  # today's value uses tomorrow's

    return transform


@pytest.mark.parametrize("plant", ["no publication lag", "uses the next day"])
def test_a_leaky_external_join_fails_the_cli_with_exit_6(
    plant: str,
    folders: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    candles, external = folders
    if plant == "no publication lag":
        monkeypatch.setattr(enrichment, "known_from", _without_lag)
    else:
        smoothed = _smoothed_with_the_next_day(enrichment.transform_values)
        monkeypatch.setattr(enrichment, "transform_values", smoothed)
    args = audit(candles, "--external", "fear_greed", "--external-dir", str(external))
    assert main(args) == LEAK_EXIT_CODE == 6
    err = capsys.readouterr().err
    assert "LEAK" in err and "ext_fear_greed" in err


@pytest.fixture()
def utilization_csv(tmp_path: Path) -> Path:
    hours = pd.date_range("2021-12-31", periods=60 * 24, freq="h", tz="UTC")
    util = 0.5 + 0.4 * np.sin(np.arange(hours.size) / 7.0)
    path = tmp_path / "util.csv"
    pd.DataFrame({"timestamp": hours.strftime("%Y-%m-%dT%H:%M:%SZ"), "utilization": util}).to_csv(
        path, index=False
    )
    return path


STRATEGIES = ["--strategies", "spot", "staking", "lending", "liquidity", "arbitrage"]


@pytest.mark.parametrize("utilization", ["simulated", "csv"])
def test_honest_strategy_observations_pass(
    utilization: str,
    folders: tuple[Path, Path],
    utilization_csv: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    candles, _ = folders
    source = ["--lending-utilization-source", utilization]
    if utilization == "csv":
        source += ["--lending-utilization-csv", str(utilization_csv)]
    assert main(audit(candles, *STRATEGIES, *source)) == 0
    err = capsys.readouterr().err
    assert "covered: strategy" in err
    for book in ("arbitrage", "lending", "liquidity", "staking"):
        assert book in err.split("covered: strategy")[1].splitlines()[0]


def _utilisation_from_the_next_bar(original: Any) -> Any:
    def series(*args: Any) -> tuple[np.ndarray, list[str]]:
        ser, notes = original(*args)
        ser[:-1, SC.SER_UTIL] = ser[1:, SC.SER_UTIL]  # next bar's utilisation shown now
        return ser, notes

    return series


def _spreads_from_the_next_bar(original: Any) -> Any:
    def spreads(*args: Any) -> Any:
        found = original(*args)
        found.premiums[:-1] = found.premiums[1:].copy()  # next bar's premiums shown now
        return found

    return spreads


@pytest.mark.parametrize("plant", ["lending utilisation", "arbitrage spread"])
def test_a_leaky_strategy_observation_fails_the_cli_with_exit_6(
    plant: str,
    folders: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    candles, _ = folders
    if plant == "lending utilisation":
        leaky = _utilisation_from_the_next_bar(layout.strategy_series)
        monkeypatch.setattr(layout, "strategy_series", leaky)
    else:
        monkeypatch.setattr(
            layout, "venue_spreads", _spreads_from_the_next_bar(layout.venue_spreads)
        )
    args = audit(candles, *STRATEGIES, "--lending-utilization-source", "simulated")
    assert main(args) == LEAK_EXIT_CODE
    err = capsys.readouterr().err
    assert "LEAK" in err and f"strategy: {plant}" in err
