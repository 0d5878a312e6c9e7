"""The learned market model, its persistence baseline, and the Dyna option of the trainer."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from nexlify.agent.config import AgentConfig
from nexlify.agent.replay import ReplayBuffer
from nexlify.config import EnvConfig, MarketConfig
from nexlify.data.sources import synthetic_market
from nexlify.errors import ConfigError, TrainingError
from nexlify.train.config import TrainConfig
from nexlify.train.dyna import IMAGINED, DynaPlanner
from nexlify.train.trainer import Trainer, TrainResult
from nexlify.train.world_model import (
    MarketLayout,
    WorldModel,
    WorldModelConfig,
    prediction_error,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = WorldModelConfig(min_steps=300, max_steps=300)
TOY = MarketLayout(obs_window=1, n_pairs=1, n_features=2)  # obs = [f0, f1, in_position]


def toy(kind: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Transitions of a two-feature market with one account value and three actions.

    linear: next features a fixed linear map of today's, reward linear in features and action;
    walk: next features = today's + unit noise, reward pure noise (persistence is optimal).
    """
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 2))
    account = rng.integers(0, 2, size=(n, 1)).astype(float)
    actions = rng.integers(0, 3, size=n)
    if kind == "linear":
        nf = np.stack([0.5 * f[:, 0] - 0.3 * f[:, 1], 0.8 * f[:, 1]], 1)
        nf += 0.05 * rng.normal(size=(n, 2))
        rewards = 0.2 * f[:, 0] + np.array([0.0, 0.5, -0.5])[actions] + 0.01 * rng.normal(size=n)
    else:
        nf = f + rng.normal(size=(n, 2))
        rewards = 0.1 * rng.normal(size=n)
    obs = np.concatenate([f, account], 1).astype(np.float32)
    next_obs = np.concatenate([nf, account], 1).astype(np.float32)
    return obs, actions, next_obs, rewards.astype(np.float32)


def fitted(kind: str, seed: int = 0) -> WorldModel:
    model = WorldModel(3, 3, TOY, SMALL, seed=seed)
    model.fit(*toy(kind, 1500, seed=10))
    return model


def test_layout_shifts_the_window_and_carries_the_account_part() -> None:
    layout = MarketLayout(obs_window=2, n_pairs=1, n_features=2)
    obs = np.array([[1.0, 2.0, 3.0, 4.0, 9.0]], dtype=np.float32)  # bars [1,2], [3,4]; account 9
    np.testing.assert_array_equal(layout.current_features(obs), [[3.0, 4.0]])
    out = layout.next_obs(obs, np.array([[5.0, 6.0]], dtype=np.float32))
    np.testing.assert_array_equal(out, [[3.0, 4.0, 5.0, 6.0, 9.0]])
    np.testing.assert_array_equal(obs, [[1.0, 2.0, 3.0, 4.0, 9.0]])  # input untouched


def test_a_linear_market_is_learned_far_better_than_persistence() -> None:
    error = prediction_error(fitted("linear"), *toy("linear", 800, seed=11))
    assert error.transitions == 800
    assert error.feature_mse < 0.1 * error.feature_mse_persistence
    assert error.reward_mse < 0.1 * error.reward_mse_persistence
    assert error.feature_mse < 0.1 * error.feature_mse_mean


def test_a_random_walk_is_not_predicted_better_than_persistence() -> None:
    error = prediction_error(fitted("walk"), *toy("walk", 800, seed=11))
    # persistence is the best predictor here: the model can only match it or do worse
    assert error.feature_mse > 0.95 * error.feature_mse_persistence
    assert error.reward_mse > 0.95 * error.reward_mse_persistence
    # but it does learn the walk (next = current), unlike the training average
    assert error.feature_mse < 0.7 * error.feature_mse_mean


def test_persistence_errors_are_the_hand_computed_ones() -> None:
    model = fitted("walk")
    obs = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]], dtype=np.float32)
    next_obs = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    error = prediction_error(model, obs, np.array([0, 1]), next_obs, np.array([0.5, -1.5]))
    assert error.feature_mse_persistence == pytest.approx((1 + 0 + 0 + 4) / 4)
    assert error.reward_mse_persistence == pytest.approx((0.25 + 2.25) / 2)


def test_same_seed_same_model_and_members_disagree() -> None:
    obs, actions, _, _ = toy("walk", 50, seed=3)
    a, b, c = fitted("walk", seed=1), fitted("walk", seed=1), fitted("walk", seed=2)
    pa, pb, pc = a.predict(obs, actions), b.predict(obs, actions), c.predict(obs, actions)
    np.testing.assert_array_equal(pa.features_BK, pb.features_BK)
    np.testing.assert_array_equal(pa.reward_B, pb.reward_B)
    assert not np.array_equal(pa.features_BK, pc.features_BK)
    assert pa.features_BK.shape == (50, 2) and pa.reward_B.shape == (50,)
    assert (pa.disagreement_B > 0).all()


def test_bad_input_is_refused_with_a_clear_error() -> None:
    model = WorldModel(3, 3, TOY, SMALL)
    obs, actions, next_obs, rewards = toy("walk", 20, seed=0)
    with pytest.raises(TrainingError, match="predict before fit"):
        model.predict(obs, actions)
    with pytest.raises(TrainingError, match="actions outside"):
        model.fit(obs, actions + 3, next_obs, rewards)
    rewards[0] = np.nan
    with pytest.raises(TrainingError, match="non-finite"):
        model.fit(obs, actions, next_obs, rewards)
    with pytest.raises(ConfigError, match="longer than the observation"):
        WorldModel(1, 3, TOY)


def test_dyna_settings_are_validated_and_off_by_default() -> None:
    assert TrainConfig().dyna_ratio == 0.0
    with pytest.raises(ConfigError, match="dyna_ratio"):
        TrainConfig(dyna_ratio=-1.0)
    with pytest.raises(ConfigError, match="dyna_refit_every"):
        TrainConfig(dyna_refit_every=10)


def _filled_buffer(per: bool) -> ReplayBuffer:
    from nexlify.agent.sum_tree import PrioritizedSampler

    sampler = PrioritizedSampler(50, 2, 0.6, 1e-6) if per else None
    buf = ReplayBuffer(50, 2, 3, gamma=0.9, sampler=sampler)
    obs, actions, next_obs, rewards = toy("linear", 80, seed=4)
    never = np.zeros(2, dtype=bool)
    for i in range(0, 80, 2):
        buf.add(obs[i : i + 2], actions[i : i + 2], rewards[i : i + 2], next_obs[i : i + 2],
                never, never)  # fmt: skip
    return buf


def test_imagined_transitions_stay_out_of_real_replay_and_priorities() -> None:
    buf = _filled_buffer(per=True)
    before = buf.obs.copy(), buf.rewards.copy()
    dyna = DynaPlanner(buf, TOY, 3, ratio=1.0, refit_every=100, seed=0,
                       log=logging.getLogger("test"), label="t")  # fmt: skip
    dyna.model.config = SMALL
    entry = dyna.after_collect(transitions=100, episode=3)
    assert entry is not None and entry["world_model"] == 1.0 and entry["episode"] == 3.0
    assert entry["wm_transitions"] == 16  # newest 8 of 40 rows held out, 2 envs each
    assert entry["wm_feature_mse"] < entry["wm_feature_mse_persistence"]
    assert len(dyna.imagined) == 2 and dyna.made == 2  # ratio 1: one per real transition
    np.testing.assert_array_equal(buf.obs, before[0])
    np.testing.assert_array_equal(buf.rewards, before[1])
    batch = dyna.sample(40, np.random.default_rng(0))
    k = int((batch.indices == IMAGINED).sum())
    assert k == round(40 * 2 / 82) and batch.obs_BD.shape == (40, 3)
    assert batch.weights_B is not None and torch.all(batch.weights_B[-k:] == 1.0)
    for _ in range(60):  # imagined replay full (100) and larger than real (80)
        dyna.imagine()
    assert len(dyna.imagined) == 100
    assert (dyna.sample(1, np.random.default_rng(0)).indices != IMAGINED).all()  # >= 1 real
    priorities = buf.sampler.tree.nodes.copy()  # type: ignore[attr-defined]
    dyna.update_priorities(np.full(3, IMAGINED), np.ones(3))
    np.testing.assert_array_equal(buf.sampler.tree.nodes, priorities)  # type: ignore[attr-defined]


def _train(practices: TrainConfig | None) -> TrainResult:
    data = synthetic_market(["BTC/USDT", "ETH/USDT"], "1h", seed=0, days=40)
    train, val = data.split_last_days(10)
    agent = AgentConfig(hidden_sizes=(16,), batch_size=32, learning_starts=64, buffer_size=4000)
    trainer = Trainer(train, val, MarketConfig(env=EnvConfig(episode_length=48)), agent,
                      num_envs=4, eval_every=4, seed=3, practices=practices,
                      logger=logging.getLogger("test"))  # fmt: skip
    return trainer.train(8)


def test_dyna_training_records_the_model_error_and_is_deterministic() -> None:
    practices = TrainConfig(augment=False, curriculum=False, swa=False, dyna_ratio=0.5,
                            dyna_refit_every=150)  # fmt: skip
    a, b = _train(practices), _train(practices)
    fits = [h for h in a.history if "world_model" in h]
    assert len(fits) >= 2
    for fit in fits:
        for key in ("wm_feature_mse", "wm_feature_mse_persistence", "wm_reward_mse",
                    "wm_reward_mse_persistence"):  # fmt: skip
            assert np.isfinite(fit[key])
    assert json.dumps(a.history) == json.dumps(b.history)  # NaN-safe
    plain = _train(TrainConfig(augment=False, curriculum=False, swa=False))
    assert not any("world_model" in h for h in plain.history)
    assert plain.transitions == a.transitions
    assert [h["val_score"] for h in plain.history] != [
        h["val_score"] for h in a.history if "val_score" in h
    ]


def test_dyna_settings_at_their_off_values_leave_the_run_hash_alone() -> None:
    from nexlify.pipeline.run_files import result_config
    from nexlify.train.config import RunConfig, replace_section

    assert "dyna_ratio" not in result_config(RunConfig())["train"]
    assert "dyna_refit_every" not in result_config(RunConfig())["train"]
    on = replace_section(RunConfig(), "train", dyna_ratio=1.0)
    assert result_config(on)["train"]["dyna_ratio"] == 1.0


def test_cli_flags_reach_the_train_section() -> None:
    import argparse

    from nexlify.commands.options import add_train_options, overrides_from_args

    parser = argparse.ArgumentParser()
    add_train_options(parser)
    args = parser.parse_args(["--dyna-ratio", "0.5", "--dyna-refit-every", "5000"])
    train = overrides_from_args(args)["train"]
    assert train["dyna_ratio"] == 0.5 and train["dyna_refit_every"] == 5000


def test_the_report_history_figure_skips_model_fit_entries() -> None:
    from nexlify.report.figures import history_figure

    history = [{"episode": 4.0, "val_score": 1.5},
               {"episode": 5.0, "world_model": 1.0, "wm_feature_mse": 0.3}]  # fmt: skip
    fig = history_figure({"initial_runs": [{"run_id": 1, "history": history}]})
    assert list(fig.data[0].x) == [4.0] and list(fig.data[0].y) == [1.5]
