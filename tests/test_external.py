"""External daily series: recorded payloads, lags, no look-ahead, missing days, the pipeline."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nexlify.data.enrichment import external_features, join_daily, known_from
from nexlify.data.external import (
    COINMETRICS_URL,
    FNG_URL,
    ExternalUnavailableError,
    fetch_series,
    funding_daily,
    import_series,
    load_series,
)
from nexlify.data.synthetic import generate_synthetic_candles
from nexlify.errors import DataError
from nexlify.pipeline.data_choice import load_training_market
from nexlify.train.config import DataConfig
from tests.helpers import shared_data_or_skip

FIXTURES = Path(__file__).parent / "fixtures"
JAN1 = int(pd.Timestamp("2024-01-01", tz="UTC").timestamp())
H, DAY = 3600, 86400


def recorded(payloads: dict[str, str]) -> object:
    def http_get(url: str) -> bytes:
        return (FIXTURES / payloads[url]).read_bytes()

    return http_get


def test_fear_greed_payload_is_parsed_by_utc_day() -> None:
    frame = fetch_series("fear_greed", recorded({FNG_URL: "fng_alternative_me.json"}))  # type: ignore[arg-type]
    assert [str(d.date()) for d in frame.index] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert frame["value"].tolist() == [71.0, 65.0, 72.0]
    assert frame["classification"].tolist() == ["Greed"] * 3


def test_coinmetrics_pages_are_followed() -> None:
    page2 = (
        "https://community-api.coinmetrics.io/v4/timeseries/asset-metrics?assets=btc&metrics="
        "CapMVRVCur,CapMrktCurUSD,PriceUSD,SplyCur&frequency=1d&page_size=2&next_page_token="
        "0.MjAyNC0wMS0wMg"
    )
    get = recorded(
        {COINMETRICS_URL: "coinmetrics_btc_page1.json", page2: "coinmetrics_btc_page2.json"}
    )
    frame = fetch_series("onchain", get)  # type: ignore[arg-type]
    assert frame["mvrv"].tolist() == [1.9, 1.95, 1.8]
    assert list(frame.columns) == ["mvrv", "market_cap", "price", "supply"]


def test_without_network_or_files_a_provider_is_unavailable(tmp_path: Path) -> None:
    def offline(url: str) -> bytes:
        raise OSError("network is unreachable")

    with pytest.raises(ExternalUnavailableError, match="fear_greed: unavailable, download"):
        fetch_series("fear_greed", offline)
    with pytest.raises(ExternalUnavailableError, match=r"unavailable, no fear_greed\.csv"):
        load_series("fear_greed", tmp_path)
    with pytest.raises(ExternalUnavailableError, match="no HTTP API"):
        fetch_series("sentiment", offline)


def test_known_from_is_end_of_day_plus_lag() -> None:
    days = pd.DatetimeIndex(["2024-01-01", "2024-01-02"], tz="UTC")
    assert known_from(days, 1.0).tolist() == [JAN1 + DAY + H, JAN1 + 2 * DAY + H]


def test_join_daily_by_hand() -> None:
    # values of Jan 1 and Jan 2 known at Jan 2 01:00 and Jan 3 01:00
    known = np.array([JAN1 + DAY + H, JAN1 + 2 * DAY + H])
    decisions = np.array([JAN1 + DAY, JAN1 + DAY + H, JAN1 + 2 * DAY + H - 1, JAN1 + 6 * DAY])
    value, missing = join_daily(decisions, known, np.array([10.0, 20.0]), max_age_days=3)
    assert value.tolist() == [0.0, 10.0, 10.0, 0.0]  # last: Jan 2's value is 3 days + 23 h old
    assert missing.tolist() == [True, False, False, True]


def test_missing_day_is_forward_filled_within_max_age(tmp_path: Path) -> None:
    (tmp_path / "fear_greed.csv").write_text(
        "date,value,classification\n2024-01-01,25,Fear\n2024-01-04,75,Greed\n"
    )
    time = JAN1 + DAY + H * np.arange(0, 72, dtype=np.int64)  # bars opening Jan 2 00:00 .. Jan 4
    values, names, _ = external_features(time, H, ["fear_greed"], tmp_path, max_age_days=1.5)
    assert names == ("ext_fear_greed", "ext_fear_greed_missing")
    # bar opening Jan 2 00:00 closes at 01:00 = when Jan 1's value becomes known
    assert values[0].tolist() == [-0.5, 0.0]
    # Jan 1's value is known from Jan 2 01:00; 1.5 days later (Jan 3 13:00) it is too old
    stale = int(np.argmax(values[:, 1] > 0))
    assert time[stale] + H == JAN1 + DAY + H + int(1.5 * DAY) + H
    assert values[stale].tolist() == [0.0, 1.0]


def test_no_look_ahead_features_unchanged_when_later_days_change(tmp_path: Path) -> None:
    fng = shared_data_or_skip("external", "fear_greed.csv")
    full = pd.read_csv(fng)
    time = int(pd.Timestamp("2022-06-01", tz="UTC").timestamp()) + H * np.arange(24 * 60)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    full.to_csv(a / "fear_greed.csv", index=False)
    t = 24 * 30 + 5  # decision at the close of bar t
    cutoff = pd.Timestamp(int(time[t]) + H, unit="s", tz="UTC")
    altered = full.copy()
    dates = pd.to_datetime(altered["date"], utc=True)
    later = dates + pd.Timedelta(days=1, hours=1) > cutoff  # days not yet known at bar t
    altered.loc[later, "value"] = 100 - altered.loc[later, "value"]
    altered.to_csv(b / "fear_greed.csv", index=False)
    va, _, _ = external_features(time, H, ["fear_greed"], a)
    vb, _, _ = external_features(time, H, ["fear_greed"], b)
    assert np.array_equal(va[: t + 1], vb[: t + 1])
    assert not np.array_equal(va[t + 1 :], vb[t + 1 :])
    truncated = full[~later]
    truncated.to_csv(b / "fear_greed.csv", index=False)
    vc, _, _ = external_features(time, H, ["fear_greed"], b)
    assert np.array_equal(va[: t + 1], vc[: t + 1])


def test_bad_rows_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "s.csv"
    bad.write_text("date,value\n2024-01-01,0.1\n2024-01-02,abc\n")
    with pytest.raises(DataError, match=r"s.csv row 2: value 'abc' is not a number"):
        import_series("sentiment", bad, tmp_path / "cache")
    bad.write_text("date,value\n2024-01-01,0.1\n2024-01-01,0.2\n")
    with pytest.raises(DataError, match="row 2: duplicate date 2024-01-01"):
        import_series("sentiment", bad, tmp_path / "cache")
    bad.write_text("date,value\n2024-01-01 13:00,0.1\n")
    with pytest.raises(DataError, match=r"row 1: date .* is not a UTC day"):
        import_series("sentiment", bad, tmp_path / "cache")


def test_sentiment_csv_import_is_cached(tmp_path: Path) -> None:
    src = tmp_path / "mine.csv"
    src.write_text("date,value\n2024-01-02,-0.5\n2024-01-01,0.25\n")
    path, rows = import_series("sentiment", src, tmp_path / "cache")
    assert rows == 2 and path == tmp_path / "cache" / "sentiment.csv"
    assert load_series("sentiment", tmp_path / "cache")["value"].tolist() == [0.25, -0.5]


def test_funding_events_become_daily_means() -> None:
    idx = pd.DatetimeIndex(
        ["2024-01-01 00:00", "2024-01-01 08:00", "2024-01-01 16:00", "2024-01-02 00:00"], tz="UTC"
    )
    daily = funding_daily(pd.DataFrame({"funding_rate": [1e-4, 2e-4, 3e-4, 5e-4]}, index=idx))
    assert np.allclose(daily["funding_rate"], [2e-4, 5e-4])


def _write_candles(folder: Path, days: int = 40) -> None:
    frames = generate_synthetic_candles(["BTC/USDT"], timeframe="1h", n_bars=24 * days, seed=3)
    frame = frames["BTC/USDT"].copy()
    frame.index = pd.date_range("2024-01-01", periods=len(frame), freq="h", tz="UTC", name="date")
    frame.to_csv(folder / "BTC_USDT-1h.csv")


def test_pipeline_loads_external_features_through_load_training_market(tmp_path: Path) -> None:
    _write_candles(tmp_path)
    ext = tmp_path / "ext"
    ext.mkdir()
    days = pd.date_range("2023-12-20", "2024-02-15", freq="D")
    pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "value": np.arange(len(days)) % 100}).to_csv(
        ext / "fear_greed.csv", index=False
    )
    pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "funding_rate": 1e-4}).to_csv(
        ext / "funding.csv", index=False
    )
    config = DataConfig(
        pairs=("BTC/USDT",), data_dir=str(tmp_path), external=("fear_greed", "funding"),
        external_dir=str(ext), validation_days=5,
    )  # fmt: skip
    market = load_training_market(config, logging.getLogger("test"))
    names = market.feature_names
    assert names[-4:] == ("ext_fear_greed", "ext_fear_greed_missing", "ext_funding",
                          "ext_funding_missing")  # fmt: skip
    assert np.allclose(market.features[:, 0, names.index("ext_funding")], 0.1)
    assert market.features[:, 0, names.index("ext_fear_greed_missing")].sum() == 0
    assert any("external fear_greed" in n for n in market.notes)


def test_pipeline_runs_with_the_shared_external_csvs(tmp_path: Path) -> None:
    ext = shared_data_or_skip("external")
    market_dir = shared_data_or_skip("market", "binance")
    config = DataConfig(
        pairs=("BTC/USDT",), data_dir=str(market_dir), external_dir=str(ext),
        external=("fear_greed", "onchain", "funding", "orderflow"),
    )  # fmt: skip
    market = load_training_market(config, logging.getLogger("test"))
    assert market.n_features >= 8 and np.isfinite(market.features).all()
    missing = market.features[:, 0, market.feature_names.index("ext_fear_greed_missing")]
    # the source lacks 2024-10-26: the value of the 25th carries on (within 3 days), so nothing
    # is flagged; the days missing in 2018 are before the candles start
    assert missing.sum() == 0
    day = market.index_at("2024-10-27 00:00")
    fng = market.features[:, 0, market.feature_names.index("ext_fear_greed")]
    assert fng[day] == fng[day - 1]  # 2024-10-26 absent: no new value known at Oct 27 00:00


def test_augmented_candles_keep_the_external_columns(tmp_path: Path) -> None:
    """Augmentation recomputes the candle features; the external series depend on time only
    and stay (before the fix, training with --external and augmentation on crashed)."""
    from nexlify.data.augment import with_candles
    from nexlify.data.enrichment import with_external_features
    from nexlify.data.sources import synthetic_market

    market = synthetic_market(("BTC/USDT",), "1h", seed=0, days=40)
    days = pd.date_range(pd.Timestamp(int(market.time[0]), unit="s").normalize() - pd.Timedelta(
        days=2), periods=45, freq="D")  # fmt: skip
    pd.DataFrame(
        {"date": days.strftime("%Y-%m-%d"), "value": np.arange(45) * 2, "classification": "Neutral"}
    ).to_csv(tmp_path / "fear_greed.csv", index=False)
    enriched = with_external_features(market, ["fear_greed"], tmp_path)
    trend = np.linspace(1.0, 1.5, enriched.n_bars)[:, None, None]  # other candles, other returns
    again = with_candles(enriched, enriched.prices * trend, enriched.volume)
    assert again.feature_names == enriched.feature_names
    shift = enriched.n_bars - again.n_bars
    np.testing.assert_array_equal(again.features[:, :, -2:], enriched.features[shift:, :, -2:])
    assert not np.array_equal(again.features[:, :, 0], enriched.features[shift:, :, 0])
