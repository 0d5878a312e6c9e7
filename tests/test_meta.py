"""Reptile meta-initialisation: the update by hand, determinism, the cut, the file, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from nexlify.agent.dqn import load_agent
from nexlify.cli import main
from nexlify.data.market_data import MarketData
from nexlify.data.sources import synthetic_market
from nexlify.data.synthetic import generate_synthetic_candles
from nexlify.errors import ConfigError, DataError, TrainingError
from nexlify.pipeline.meta import (
    Adapted,
    MetaSpec,
    MetaTask,
    WeightState,
    check_task_markets,
    reptile,
    reptile_update,
    sample_tasks,
    save_meta_init,
    training_bars,
)
from nexlify.pipeline.runs import UnitTask, checkpoint_extra, train_unit
from nexlify.train.config import RunConfig, run_config_from_dict

TINY = {
    "data": {"validation_days": 5},
    "market": {"env": {"episode_length": 48}},
    "agent": {"hidden_sizes": [16], "batch_size": 16, "learning_starts": 32, "buffer_size": 2000},
    "train": {"num_envs": 2, "augment": False},
}  # fmt: skip
SPEC = MetaSpec(outer_steps=3, inner_episodes=2, task_days=5.0, seed=3)


@pytest.fixture(scope="module")
def config() -> RunConfig:
    return run_config_from_dict(TINY)


@pytest.fixture(scope="module")
def market() -> MarketData:
    return synthetic_market(("BTC/USDT",), "1h", seed=1, days=40)


def _weights(agent_state: WeightState) -> list[torch.Tensor]:
    return [v.clone() for v in agent_state.values()]


# ---- the Reptile update -------------------------------------------------------------------


def test_reptile_update_by_hand() -> None:
    theta = {"w": torch.tensor([1.0, 2.0]), "count": torch.tensor(3)}
    adapted = {"w": torch.tensor([3.0, -2.0]), "count": torch.tensor(5)}
    moved = reptile_update(theta, adapted, 0.25)
    # w + 0.25 * ([3, -2] - [1, 2]) = [1.5, 1.0]; the move is 0.25 * |(2, -4)| = 0.25 * sqrt(20)
    assert torch.equal(theta["w"], torch.tensor([1.5, 1.0]))
    assert moved == pytest.approx(0.25 * math.sqrt(20.0))
    assert int(theta["count"]) == 5  # integer buffers take the adapted value


def test_meta_step_size_is_annealed_linearly() -> None:
    spec = MetaSpec(outer_steps=5, meta_step_start=1.0, meta_step_end=0.2)
    assert [spec.meta_step(k) for k in range(5)] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    assert MetaSpec(outer_steps=1, meta_step_start=0.7).meta_step(0) == 0.7


def test_meta_weights_move_by_epsilon_times_the_inner_change(
    config: RunConfig, market: MarketData
) -> None:
    """A mocked inner loop adds 2 to every weight: each outer step moves theta by exactly
    epsilon * 2 per weight, so after steps of 0.5, 0.3, 0.1 theta has moved by 1.8."""
    seen: list[tuple[int, int]] = []
    initial: list[torch.Tensor] = []

    def inner(theta: WeightState, window: MarketData, seed: int) -> Adapted:
        if not initial:
            initial.extend(_weights(theta))
        seen.append((int(window.time[0]), seed))
        return Adapted({k: v + 2.0 for k, v in theta.items()}, 0.5, 7, 1.0)

    spec = MetaSpec(outer_steps=3, inner_episodes=1, task_days=5.0, meta_step_start=0.5,
                    meta_step_end=0.1, seed=4)  # fmt: skip
    result = reptile({"syn": market}, config, spec, inner_loop=inner)
    final = list(result.agent.online.state_dict().values())
    for before, after in zip(initial, final, strict=True):
        torch.testing.assert_close(after, before + 1.8)
    n_weights = sum(v.numel() for v in initial)
    distances = [step["distance"] for step in result.steps]
    expected = [eps * 2.0 * math.sqrt(n_weights) for eps in (0.5, 0.3, 0.1)]
    assert distances == pytest.approx(expected, rel=1e-5)
    tasks = sample_tasks({"syn": market}, 3, spec.window_bars(market.bar_seconds), spec.seed)
    assert [t for t, _ in seen] == [int(market.time[task.start]) for task in tasks]
    assert len({seed for _, seed in seen}) == 3  # each inner loop its own seed
    assert [s["inner_loss"] for s in result.steps] == [0.5] * 3
    # the target network is synced to the meta-weights
    for online, target in zip(final, result.agent.target.state_dict().values(), strict=True):
        assert torch.equal(online, target)


# ---- tasks --------------------------------------------------------------------------------


def test_tasks_are_seeded_windows_inside_each_venue(market: MarketData) -> None:
    other = market.slice(0, 300)
    markets = {"a": market, "b": other}
    tasks = sample_tasks(markets, 40, 120, seed=9)
    assert tasks == sample_tasks(markets, 40, 120, seed=9)
    assert tasks != sample_tasks(markets, 40, 120, seed=10)
    assert {t.venue for t in tasks} == {"a", "b"}
    for task in tasks:
        assert task.stop - task.start == 120
        assert task.start >= 0 and task.stop <= markets[task.venue].n_bars
    assert isinstance(tasks[0], MetaTask)


def test_too_little_data_or_a_short_window_is_refused(
    config: RunConfig, market: MarketData
) -> None:
    with pytest.raises(DataError, match=r"venue short: 100 bars .* fewer than one task window"):
        check_task_markets({"long": market, "short": market.slice(0, 100)}, config, SPEC)
    with pytest.raises(ConfigError, match=r"--task-days 1: 24 bars of 1h; one training "
                       r"episode needs 50"):  # fmt: skip
        check_task_markets({"a": market}, config, MetaSpec(task_days=1.0))
    two = synthetic_market(("BTC/USDT", "ETH/USDT"), "1h", seed=1, days=40)
    with pytest.raises(DataError, match="venue b: 2 pairs"):
        check_task_markets({"a": market, "b": two}, config, SPEC)


def test_an_inner_loop_that_cannot_learn_is_refused(config: RunConfig, market: MarketData) -> None:
    """8 episodes of 48 bars are 384 transitions: with learning_starts 500 no gradient step
    would be taken and the meta-init would stay at its random start."""
    late = run_config_from_dict({"agent": {"learning_starts": 500}}, config)
    with pytest.raises(ConfigError, match=r"--inner-episodes 8: .* 384 transitions, no more than "
                       r"agent.learning_starts 500: .* at least 21 episodes"):  # fmt: skip
        check_task_markets({"a": market}, late, MetaSpec(inner_episodes=8, task_days=5.0))

    def idle(theta: WeightState, window: MarketData, seed: int) -> Adapted:
        return Adapted({k: v.clone() for k, v in theta.items()}, math.nan, 0, 0.0)

    with pytest.raises(TrainingError, match="made no gradient step"):
        reptile({"syn": market}, config, SPEC, inner_loop=idle)


def test_tasks_leave_out_the_validation_and_test_days(market: MarketData) -> None:
    config = run_config_from_dict({"data": {"validation_days": 3, "test_days": 2}})
    bars = training_bars(market, config)
    assert bars.n_bars == market.n_bars - 5 * 24  # 3 + 2 days of 1h bars at the end
    assert int(bars.time[0]) == int(market.time[0])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("outer_steps", 0, "--outer-steps: 0 is not an integer >= 1"),
        ("inner_episodes", -2, "--inner-episodes: -2 is not an integer >= 1"),
        ("task_days", 0.0, "--task-days: 0.0 is not days > 0"),
        ("meta_step_start", 1.5, "--meta-step-start: 1.5 is not a step size in (0, 1]"),
        ("meta_step_end", 0.0, "--meta-step-end: 0.0 is not a step size in (0, 1]"),
    ],
)
def test_bad_meta_spec_values_name_the_option(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        MetaSpec(**{field: value})  # type: ignore[arg-type]
    assert message in str(info.value)


# ---- the real inner loop ------------------------------------------------------------------


def test_same_seed_same_meta_init(config: RunConfig, market: MarketData) -> None:
    a = reptile({"syn": market}, config, SPEC)
    b = reptile({"syn": market}, config, SPEC)
    c = reptile({"syn": market}, config, MetaSpec(outer_steps=3, inner_episodes=2,
                                                  task_days=5.0, seed=4))  # fmt: skip
    wa, wb, wc = (list(r.agent.online.state_dict().values()) for r in (a, b, c))
    assert all(torch.equal(x, y) for x, y in zip(wa, wb, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(wa, wc, strict=True))
    assert all(step["inner_gradient_steps"] > 0 and step["distance"] > 0 for step in a.steps)
    assert [s["start"] for s in a.steps] == [s["start"] for s in b.steps]


def test_saved_meta_init_loads_and_trains_as_a_unit_init_model(
    tmp_path: Path, config: RunConfig, market: MarketData
) -> None:
    result = reptile({"syn": market}, config, SPEC)
    path = save_meta_init(tmp_path / "meta.pt", result, config, market, SPEC)
    agent, info = load_agent(path)
    for x, y in zip(agent.online.state_dict().values(),
                    result.agent.online.state_dict().values(), strict=True):  # fmt: skip
        assert torch.equal(x, y)
    extra = info["extra"]
    unit = UnitTask(label="u", seed=1, episodes=2, config=config, train_data=market,
                    val_data=market.slice(market.n_bars - 120, market.n_bars),
                    model_dir=str(tmp_path / "unit"), init_model=str(path))  # fmt: skip
    assert set(checkpoint_extra(unit)) <= set(extra)  # what the pipeline writes, and more
    assert extra["pairs"] == ["BTC/USDT"] and extra["timeframe"] == "1h"
    assert extra["meta"]["spec"]["outer_steps"] == 3 and len(extra["meta"]["steps"]) == 3
    outcome = train_unit(unit)
    assert outcome["gradient_steps"] > 0
    tuned, _ = load_agent(outcome["model_path"])
    assert not all(torch.equal(x, y) for x, y in zip(tuned.online.state_dict().values(),
                   agent.online.state_dict().values(), strict=True))  # fmt: skip


# ---- the command --------------------------------------------------------------------------


def _write_candles(folder: Path, seed: int = 7, days: int = 60) -> Path:
    folder.mkdir(parents=True)
    frame = generate_synthetic_candles(["BTC/USDT"], timeframe="1h", n_bars=24 * days,
                                       seed=seed)["BTC/USDT"].copy()  # fmt: skip
    frame.index = pd.date_range("2024-01-01", periods=len(frame), freq="h", tz="UTC", name="date")
    frame.to_csv(folder / "BTC_USDT-1h.csv")
    return folder


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _meta_init(data: Path, config: Path, out: Path, *flags: str) -> int:
    return main(["meta-init", "--data-dir", str(data), "--config", str(config), "--pairs",
                 "BTC/USDT", "--output", str(out), "--outer-steps", "2", "--inner-episodes",
                 "2", "--task-days", "5", *flags])  # fmt: skip


def test_later_candles_do_not_change_a_meta_init_cut_before_them(
    tmp_path: Path, tiny_yaml: Path
) -> None:
    """Two folders equal before 2024-02-20 and different after: the same meta-init."""
    a = _write_candles(tmp_path / "a")
    b = _write_candles(tmp_path / "b")
    frame = pd.read_csv(b / "BTC_USDT-1h.csv", index_col=0)
    later = pd.to_datetime(frame.index) >= pd.Timestamp("2024-02-20", tz="UTC")
    frame.loc[later, ["open", "high", "low", "close"]] *= 1.7
    frame.loc[later, "volume"] *= 3.0
    frame.to_csv(b / "BTC_USDT-1h.csv")
    outs = [tmp_path / "meta_a.pt", tmp_path / "meta_b.pt", tmp_path / "meta_uncut.pt"]
    assert _meta_init(a, tiny_yaml, outs[0], "--before", "2024-02-20") == 0
    assert _meta_init(b, tiny_yaml, outs[1], "--before", "2024-02-20") == 0
    assert _meta_init(b, tiny_yaml, outs[2]) == 0
    (wa, ia), (wb, _), (wu, _) = (load_agent(p) for p in outs)
    sa, sb, su = (list(w.online.state_dict().values()) for w in (wa, wb, wu))
    assert all(torch.equal(x, y) for x, y in zip(sa, sb, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(sa, su, strict=True))  # the data matters
    last_end = max(step["end"] for step in ia["extra"]["meta"]["steps"])
    assert last_end < "2024-02-15"  # the cut, less the 5 validation days


def test_cli_refusals_exit_codes(
    tmp_path: Path, tiny_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write_candles(tmp_path / "data")
    out = tmp_path / "meta.pt"
    cases = [
        (["--outer-steps", "0"], 2, "meta-init --outer-steps: 0 is not an integer >= 1"),
        (
            ["--before", "2023-06-01"],
            3,
            "meta-init --before 2023-06-01: outside the candles of BTC/USDT on venue data",
        ),
        (["--before", "2025-01-01"], 3, "outside the candles of BTC/USDT"),
        (["--before", "soon"], 2, "--before 'soon': not a date"),
        (
            ["--task-days", "200", "--before", "2024-02-20"],
            3,
            "meta-init venue data: 745 bars (2024-01-14 .. "
            "2024-02-14) are fewer than one task window of 200 days (4800 bars)",
        ),
        (["--task-days", "1"], 2, "--task-days 1: 24 bars of 1h; one training episode needs 50"),
        (["--venue", "data=" + str(data)], 2, "--venue data: the name is used twice"),
        (["--venue", "kucoin"], 2, "--venue 'kucoin': expected NAME=DIR"),
        (["--device", "nonsense"], 2, "device: 'nonsense' is not a device"),
    ]
    for flags, code, message in cases:
        # later flags win: these come after _meta_init's own --outer-steps/--task-days
        assert _meta_init(data, tiny_yaml, out, *flags) == code, flags
        assert message in " ".join(capsys.readouterr().err.split()), flags
        assert not out.exists()
    missing = main(["meta-init", "--data-dir", str(tmp_path / "none"), "--output", str(out)])
    assert missing == 3
    assert "meta-init venue none:" in capsys.readouterr().err


def test_the_cut_keeps_only_bars_before_it(tmp_path: Path) -> None:
    from nexlify.commands.meta import venue_market

    data = _write_candles(tmp_path / "data")
    config = run_config_from_dict({"data": {"pairs": ["BTC/USDT"]}})
    cut = pd.Timestamp("2024-02-20", tz="UTC")
    market = venue_market(config, str(data), "data", cut)
    assert int(market.time[-1]) < int(cut.timestamp())
    assert any("cut before 2024-02-20" in note for note in market.notes)
    assert np.all(np.diff(market.time) > 0)
