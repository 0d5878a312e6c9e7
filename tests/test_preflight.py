"""Pre-flight checks: memory estimate by hand, pass/warn/fail, and train stopping on a fail."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from nexlify.agent.config import AgentConfig
from nexlify.cli import main
from nexlify.commands.preflight_checks import obs_dim, raise_on_failure, replay_bytes, run_preflight
from nexlify.data.features import feature_names
from nexlify.data.sources import synthetic_market
from nexlify.errors import ConfigError, DataError
from nexlify.market.env import VecMarketEnv
from nexlify.train.config import DataConfig, PipelineConfig, RunConfig, TrainConfig

GIB = 1 << 30


def small_config(tmp_path: Path, **data: object) -> RunConfig:
    agent = replace(AgentConfig(), buffer_size=1000)
    if hasattr(agent, "prioritized_replay"):
        agent = replace(agent, prioritized_replay=False)  # type: ignore[call-arg]
    return RunConfig(
        data=DataConfig(pairs=("BTC/USDT", "ETH/USDT"), source="synthetic", **data),  # type: ignore[arg-type]
        agent=agent,
        train=TrainConfig(device="cpu"),
        pipeline=PipelineConfig(output_dir=str(tmp_path / "out"), workers=1),
    )


def by_name(results: list) -> dict[str, str]:
    return {r.name: r.status for r in results}


def test_replay_memory_estimate_by_hand(tmp_path: Path) -> None:
    config = small_config(tmp_path)
    F = len(feature_names())
    assert obs_dim(config) == 1 * 2 * F + 3 * 2 + 4
    assert replay_bytes(config) == 1000 * obs_dim(config) * 4 * 2 + 1000 * 14
    with_ext = small_config(tmp_path, external=("fear_greed",))
    assert obs_dim(with_ext) == obs_dim(config) + 2 * 2  # value + missing flag, per pair


@pytest.mark.parametrize(
    "enabled",
    [("spot",), ("spot", "staking", "lending", "liquidity", "arbitrage"), ("lending", "liquidity")],
    ids=["spot", "every-strategy", "no-spot"],
)
def test_obs_dim_is_the_obs_size_of_a_real_env(tmp_path: Path, enabled: tuple[str, ...]) -> None:
    config = small_config(tmp_path)
    window = replace(config.market.env, obs_window=3, episode_length=48)
    strategies = replace(config.market.strategies, enabled=enabled)
    market = replace(config.market, env=window, strategies=strategies)
    config = replace(config, market=market)
    data = synthetic_market(config.data.pairs, "1h", seed=0, days=30)
    env = VecMarketEnv(data, config.market, num_envs=1, seed=0)
    assert obs_dim(config) == env.obs_size
    spot = small_config(tmp_path)
    spot = replace(spot, market=replace(spot.market, env=window))
    if enabled != ("spot",):  # the strategy books add observations the estimate must count
        assert obs_dim(config) > obs_dim(spot)


def test_all_pass_on_a_small_config(tmp_path: Path) -> None:
    results = run_preflight(small_config(tmp_path), memory=8 * GIB, disk_free=lambda p: 100 * GIB)
    status = by_name(results)
    assert status["device"] == "pass" and status["memory"] == "pass" and status["disk"] == "pass"
    assert status["data"] == "warn"  # synthetic market: a warning, never a stop
    raise_on_failure(results)


def test_memory_and_disk_failures_stop_with_config_error(tmp_path: Path) -> None:
    results = run_preflight(small_config(tmp_path), memory=1000, disk_free=lambda p: 1000)
    assert by_name(results)["memory"] == "fail" and by_name(results)["disk"] == "fail"
    with pytest.raises(ConfigError, match="pre-flight check failed: memory: replay"):
        raise_on_failure(results)


def test_missing_external_series_is_a_data_failure(tmp_path: Path) -> None:
    config = small_config(tmp_path, external=("fear_greed",), external_dir=str(tmp_path))
    results = run_preflight(config, memory=8 * GIB, disk_free=lambda p: 100 * GIB)
    assert by_name(results)["external fear_greed"] == "fail"
    with pytest.raises(DataError, match=r"no fear_greed\.csv"):
        raise_on_failure(results)


def test_preflight_command_and_train_stop_on_a_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["preflight", "--source", "synthetic", "--device", "cpu",
                 "--output-dir", str(tmp_path / "o")]) == 0  # fmt: skip
    assert "Pre-flight checks" in capsys.readouterr().err
    out = tmp_path / "out"
    code = main(["train", "--automated", "--output-dir", str(out), "--external", "fear_greed",
                 "--external-dir", str(tmp_path / "none"), "--device", "cpu"])  # fmt: skip
    assert code == 3
    assert "external fear_greed" in capsys.readouterr().err
    assert not out.exists()
