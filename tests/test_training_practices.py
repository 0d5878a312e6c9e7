"""Training practices: SWA, ensembles, early stopping, augmentation, curriculum, CLI flags."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nexlify.agent.config import AgentConfig
from nexlify.agent.dqn import DQNAgent, load_agent
from nexlify.agent.ensemble import EnsembleAgent, aggregate_q, load_policy, vote
from nexlify.cli import build_parser
from nexlify.commands.train import resolve_run_config
from nexlify.config import EnvConfig, MarketConfig
from nexlify.data.augment import AugmentConfig, augment_market, splice_segments
from nexlify.data.sources import synthetic_market
from nexlify.errors import ConfigError
from nexlify.train.callbacks import EarlyStopping
from nexlify.train.config import TrainConfig
from nexlify.train.curriculum import TrainingMarkets
from nexlify.train.swa import WeightAverager
from nexlify.train.trainer import Trainer, validate


def test_swa_is_the_mean_of_the_weights_it_was_given() -> None:
    net = nn.Linear(2, 1)
    averager = WeightAverager(net)
    for w in (1.0, 2.0, 6.0):
        with torch.no_grad():
            net.weight.fill_(w)
            net.bias.fill_(-w)
        averager.update(net)
    state = averager.state_dict()
    assert set(state) == set(net.state_dict())
    torch.testing.assert_close(state["weight"], torch.full((1, 2), 3.0))
    torch.testing.assert_close(state["bias"], torch.full((1,), -3.0))


def test_ensemble_mean_and_vote_by_hand() -> None:
    q = torch.tensor(
        [
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],  # member 0 picks 0, 1
            [[0.0, 0.9, 0.0], [0.0, 0.0, 2.0]],  # member 1 picks 1, 2
            [[0.8, 0.0, 0.0], [0.0, 0.0, 3.0]],  # member 2 picks 0, 2
        ]
    )
    torch.testing.assert_close(aggregate_q(q), torch.tensor([[0.6, 0.3, 0.0], [0.0, 1 / 3, 5 / 3]]))
    np.testing.assert_array_equal(vote(q).numpy(), [0, 2])
    # A 1-1 tie goes to the action with the higher mean Q (action 1: 0.45 > 0.05).
    tie = torch.tensor([[[0.1, 0.0]], [[0.0, 0.9]]])
    np.testing.assert_array_equal(vote(tie).numpy(), [1])


def test_ensemble_saves_as_one_file_and_acts_like_a_model(tmp_path: Path) -> None:
    cfg = AgentConfig(hidden_sizes=(8,))
    members = [DQNAgent(4, 3, cfg, seed=s) for s in range(3)]
    obs = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    for method in ("mean", "vote"):
        ens = EnsembleAgent(members, method)
        path = ens.save(tmp_path / f"{method}.pt", metrics={"score": 1.0})
        loaded, info = load_policy(path)
        assert isinstance(loaded, EnsembleAgent) and info["members"] == 3
        np.testing.assert_array_equal(loaded.greedy(obs), ens.greedy(obs))
        # The original tool's loading still gives one network's weights (the first member).
        state = torch.load(path, weights_only=True)["model_state_dict"]
        assert all(torch.equal(state[k], v) for k, v in members[0].online.state_dict().items())
        single, meta = load_agent(path)
        assert meta["ensemble_members"] == 3
        np.testing.assert_allclose(single.q_values(obs), members[0].q_values(obs))
    mean_q = np.mean([m.q_values(obs) for m in members], axis=0)
    np.testing.assert_allclose(EnsembleAgent(members).q_values(obs), mean_q, rtol=1e-6)
    np.testing.assert_array_equal(EnsembleAgent(members).greedy(obs), mean_q.argmax(axis=1))


def test_early_stopping_patience_and_min_delta() -> None:
    stop = EarlyStopping(patience=2, min_delta=0.5)
    assert [stop.step(s) for s in (1.0, 1.4, 2.0, 2.1, 2.2)] == [False, False, False, False, True]
    assert stop.best == 2.0
    never = EarlyStopping(patience=0)
    assert not any(never.step(s) for s in (3.0, 1.0, 1.0, 1.0))


def test_augmentation_is_deterministic_and_keeps_candles_consistent() -> None:
    data = synthetic_market(["BTC/USDT", "ETH/USDT"], "1h", seed=0, days=120)
    cfg = AugmentConfig(regime_mix_prob=1.0, segment_bars=200)
    a = augment_market(data, cfg, np.random.default_rng(5))
    b = augment_market(data, cfg, np.random.default_rng(5))
    np.testing.assert_array_equal(a.prices, b.prices)
    np.testing.assert_array_equal(a.features, b.features)
    assert not np.array_equal(a.prices[:100], data.prices[:100])
    p = a.prices
    assert (p[..., 1] >= np.maximum(p[..., 0], p[..., 3]) - 1e-3).all()
    assert (p[..., 2] <= np.minimum(p[..., 0], p[..., 3]) + 1e-3).all()
    assert np.isfinite(a.features).all() and a.features.shape[1:] == data.features.shape[1:]
    assert np.all(np.diff(a.time) > 0)


def test_splice_continues_prices_and_keeps_returns() -> None:
    prices = np.array([[[10, 11, 9, 10]], [[10, 12, 10, 12]], [[20, 21, 19, 20]],
                       [[20, 20, 15, 16]]], dtype=np.float64)  # fmt: skip
    volume = np.ones((4, 1))
    out, _ = splice_segments(prices, volume, [(0, 2), (2, 4)])
    # The second segment is scaled by 12 / 20 so its open continues the close of 12.
    np.testing.assert_allclose(out[2:, 0], prices[2:, 0] * 0.6)
    np.testing.assert_allclose(out[:2], prices[:2])


def test_curriculum_phases_calm_to_stress() -> None:
    data = synthetic_market(["BTC/USDT"], "1h", seed=1, days=300)
    market = MarketConfig(env=EnvConfig(episode_length=168))
    markets = TrainingMarkets(data, market, curriculum=True, phases=(0.25, 0.5, 0.75),
                              position_scale=0.5, augment=None, seed=0)  # fmt: skip
    assert [markets.phase_at(x) for x in (0.0, 0.3, 0.6, 0.9)] == [1, 2, 3, 4]

    def vol(d: object) -> float:
        close = np.log(d.prices[:, 0, 3])  # type: ignore[attr-defined]
        return float(np.diff(close).std())

    calm, m1, _ = markets.market_for(0.0)
    wild, m3, _ = markets.market_for(0.6)
    full, _, _ = markets.market_for(0.9)
    assert vol(calm) < vol(data) < vol(wild)
    assert m1.risk.max_position == pytest.approx(market.risk.max_position * 0.5)
    assert m3.risk.max_position == market.risk.max_position
    ret = np.array([n.startswith("ret_") for n in calm.feature_names])
    assert (calm.features[:, :, ~ret] == 0).all() and (calm.features[:, :, ret] != 0).any()
    assert (wild.features[:, :, ~ret] != 0).any()
    assert full.n_bars > data.n_bars  # the whole history plus stress windows


def _tiny_trainer(
    practices: TrainConfig, decision_interval: int = 1, learning_starts: int = 64
) -> Trainer:
    data = synthetic_market(["BTC/USDT"], "1h", seed=0, days=60)
    train, val = data.split_last_days(10)
    market = MarketConfig(env=EnvConfig(episode_length=48, decision_interval=decision_interval))
    agent = AgentConfig(hidden_sizes=(16,), batch_size=32, learning_starts=learning_starts,
                        buffer_size=4000)  # fmt: skip
    return Trainer(train, val, market, agent, num_envs=4, eval_every=4, seed=3,
                   practices=practices, logger=logging.getLogger("test"))  # fmt: skip


def test_trainer_with_every_practice_is_deterministic_and_reports_swa() -> None:
    practices = TrainConfig(early_stopping_patience=0, swa_start=0.5,
                            curriculum_phases=(0.2, 0.4, 0.6))  # fmt: skip
    a = _tiny_trainer(practices).train(16)
    b = _tiny_trainer(practices).train(16)
    assert a.best_score == b.best_score and a.swa_score == b.swa_score
    assert a.swa_score is not None and any(h.get("swa") for h in a.history)
    phases = [h["phase"] for h in a.history if "phase" in h]
    assert phases == sorted(phases) and phases[-1] == 4.0
    trainer = _tiny_trainer(practices)
    assert validate(a.agent, trainer.val_data, trainer.market).score() == pytest.approx(
        a.best_score
    )


def test_schedules_run_over_decisions_with_a_decision_interval() -> None:
    """With 4 bars a decision an episode is 12 transitions, not 48: epsilon still reaches its
    end at half the run and the curriculum its last phase (schedules planned in bars would
    stop a quarter of the way, epsilon near 0.5)."""
    practices = TrainConfig(early_stopping_patience=0, swa=False, augment=False,
                            curriculum_phases=(0.2, 0.4, 0.6))  # fmt: skip
    result = _tiny_trainer(practices, decision_interval=4).train(16)
    last = [h for h in result.history if "epsilon" in h][-1]
    assert last["epsilon"] == pytest.approx(AgentConfig().eps_end)
    assert last["phase"] == 4.0


def test_an_untrained_network_is_never_the_best_nor_counted_by_early_stopping() -> None:
    """The validation at 4 episodes (192 transitions) comes before learning starts (300): it is
    logged as untrained, not kept, and early stopping (patience 1, nothing ever improves by
    1e9) only stops at the second trained validation."""
    practices = TrainConfig(early_stopping_patience=1, early_stopping_min_delta=1e9, swa=False,
                            augment=False, curriculum=False)  # fmt: skip
    result = _tiny_trainer(practices, learning_starts=300).train(24)
    validations = [h for h in result.history if "val_score" in h]
    assert [h["episode"] for h in validations if h.get("untrained")] == [4.0]
    assert result.best_episode == 8 and result.stopped_early and result.episodes == 12


def test_a_run_that_never_learns_returns_its_untrained_network_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    practices = TrainConfig(early_stopping_patience=1, swa=False, augment=False,
                            curriculum=False)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="test"):
        result = _tiny_trainer(practices, learning_starts=100_000).train(8)
    assert result.gradient_steps == 0 and result.episodes == 8  # no early stop on untrained
    assert "made no gradient step" in caplog.text and "untrained network" in caplog.text
    last = [h for h in result.history if "val_score" in h][-1]
    assert result.best_score == last["val_score"] and result.best_episode == 8


def test_early_stopping_ends_a_run() -> None:
    practices = TrainConfig(early_stopping_patience=1, early_stopping_min_delta=1e9, swa=False,
                            augment=False, curriculum=False)  # fmt: skip
    result = _tiny_trainer(practices).train(24)
    assert result.stopped_early and result.episodes == 8  # validations at 4 and 8 episodes


def test_cli_flags_reach_the_config() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["train", "--no-double-dqn", "--no-dueling", "--no-per", "--n-step", "1", "--no-noisy",
         "--distributional", "qr", "--lr-schedule", "cosine", "--weight-decay", "0.01",
         "--dropout", "0.1", "--norm", "layer", "--amp", "bf16", "--max-grad-norm", "5",
         "--no-swa", "--no-augment", "--curriculum-phases", "0.2", "0.4", "0.6",
         "--early-stopping-patience", "5", "--ensemble-size", "5", "--ensemble-method", "vote"]
    )  # fmt: skip
    cfg = resolve_run_config(args)
    a, t, p = cfg.agent, cfg.train, cfg.pipeline
    assert (a.double_dqn, a.dueling, a.prioritized_replay, a.n_step, a.noisy) == (
        False, False, False, 1, False,
    )  # fmt: skip
    assert (a.distributional, a.lr_schedule, a.weight_decay, a.dropout, a.norm, a.amp) == (
        "qr", "cosine", 0.01, 0.1, "layer", "bf16",
    )  # fmt: skip
    assert (t.swa, t.augment, t.curriculum, t.curriculum_phases) == (False, False, True,
                                                                     (0.2, 0.4, 0.6))  # fmt: skip
    assert (t.early_stopping_patience, p.ensemble_size, p.ensemble_method) == (5, 5, "vote")
    defaults = resolve_run_config(parser.parse_args(["train"]))
    assert defaults.agent.double_dqn and defaults.agent.prioritized_replay and defaults.train.swa
    assert not defaults.agent.noisy and defaults.agent.distributional == "none"  # opt-in
    on = resolve_run_config(parser.parse_args(["train", "--noisy", "--distributional", "c51"]))
    assert on.agent.noisy and on.agent.distributional == "c51"
    with pytest.raises(ConfigError, match="curriculum_phases"):
        resolve_run_config(parser.parse_args(["train", "--curriculum-phases", "0.5", "0.2", "0.9"]))
