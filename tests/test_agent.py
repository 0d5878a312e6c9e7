"""DQN agent: config, TD target and loss by hand, replay, policy, determinism, checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nexlify.agent.config import PLAIN_DQN, AgentConfig
from nexlify.agent.dqn import DQNAgent, _clip_grad_norm_, load_agent
from nexlify.agent.losses import dqn_loss, td_target
from nexlify.agent.networks import QNetwork, build_q_network, network_from_config
from nexlify.agent.replay import ReplayBatch, ReplayBuffer
from nexlify.errors import CheckpointError, ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# The plain DQN (Rainbow parts off): the hand-computed numbers below are its arithmetic.
SMALL = AgentConfig(
    hidden_sizes=(2,),
    batch_size=3,
    buffer_size=30,
    learning_starts=0,
    **PLAIN_DQN,  # type: ignore[arg-type]
)


def _linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def _set_net(net: QNetwork, out_weight: list[list[float]], out_bias: list[float]) -> None:
    """Hidden layer = identity (relu passes non-negative obs through); output layer given."""
    hidden, out = _linears(net)
    with torch.no_grad():
        hidden.weight.copy_(torch.eye(2))
        hidden.bias.zero_()
        out.weight.copy_(torch.tensor(out_weight))
        out.bias.copy_(torch.tensor(out_bias))


def _batch(
    obs: list[list[float]],
    actions: list[int],
    rewards: list[float],
    next_obs: list[list[float]],
    terminated: list[float],
    gamma: float,
) -> ReplayBatch:
    n = len(actions)
    return ReplayBatch(
        obs_BD=torch.tensor(obs),
        actions_B=torch.tensor(actions),
        rewards_B=torch.tensor(rewards),
        next_obs_BD=torch.tensor(next_obs),
        terminated_B=torch.tensor(terminated),
        discounts_B=torch.full((n,), gamma),
        indices=np.arange(n, dtype=np.int64),
    )


def _params(net: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def _random_batch(rng: np.random.Generator, obs_dim: int, n_actions: int, b: int) -> ReplayBatch:
    return ReplayBatch(
        obs_BD=torch.from_numpy(rng.standard_normal((b, obs_dim), dtype=np.float32)),
        actions_B=torch.from_numpy(rng.integers(0, n_actions, b)),
        rewards_B=torch.from_numpy(rng.standard_normal(b, dtype=np.float32)),
        next_obs_BD=torch.from_numpy(rng.standard_normal((b, obs_dim), dtype=np.float32)),
        terminated_B=torch.from_numpy((rng.random(b) < 0.2).astype(np.float32)),
        discounts_B=torch.full((b,), 0.99),
        indices=np.arange(b, dtype=np.int64),
    )


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hidden_sizes", ()),
        ("hidden_sizes", (0,)),
        ("activation", "swish"),
        ("learning_rate", 0.0),
        ("gamma", 1.5),
        ("batch_size", 0),
        ("batch_size", 300_000),
        ("learning_starts", -1),
        ("train_freq", 0),
        ("target_update", "polyak"),
        ("target_update_interval", 0),
        ("tau", 0.0),
        ("huber_delta", 0.0),
        ("max_grad_norm", -1.0),
        ("eps_start", 1.5),
        ("eps_end", -0.1),
        ("eps_decay_fraction", float("nan")),
        ("adam_eps", 0.0),
        ("batch_size", True),
    ],
)
def test_config_rejects_bad_values_by_name(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"agent\.{field}: .* is invalid"):
        AgentConfig(**{field: value})  # type: ignore[arg-type]


def test_config_from_dict_turns_lists_into_tuples_and_refuses_unknown_keys() -> None:
    plain = dataclasses.asdict(AgentConfig(hidden_sizes=(64, 32)))
    plain["hidden_sizes"] = [64, 32]
    assert AgentConfig.from_dict(plain) == AgentConfig(hidden_sizes=(64, 32))
    with pytest.raises(ConfigError, match=r"agent\.hidden_size: unknown setting"):
        AgentConfig.from_dict({"hidden_size": [3]})


def test_config_capacity_and_train_freq_schedule() -> None:
    cfg = AgentConfig(learning_starts=8, train_freq=4)
    assert cfg.capacity_per_env(16) == 12_500
    with pytest.raises(ConfigError, match=r"agent\.buffer_size"):
        AgentConfig(buffer_size=8, batch_size=4).capacity_per_env(16)
    # 16 envs and train_freq 4: 4 gradient steps per vector step once learning has started.
    assert cfg.gradient_steps_between(16, 32) == 4
    # Steps on the grid 8, 12, 16 (counts >= learning_starts) between 0 and 16 transitions.
    assert cfg.gradient_steps_between(0, 16) == 3
    assert cfg.gradient_steps_between(0, 7) == 0
    # One env at a time gives the same total as 16 at once.
    assert sum(cfg.gradient_steps_between(t, t + 1) for t in range(32)) == 7


# ---------------------------------------------------------- target and loss


def test_td_target_masks_terminated_and_bootstraps_truncated_by_hand() -> None:
    gamma = 0.9
    agent = DQNAgent(2, 2, SMALL)
    # Target net: Q(s') = [s'_0 + 0.5, 2 * s'_1] for non-negative s'.
    _set_net(agent.target, [[1.0, 0.0], [0.0, 2.0]], [0.5, 0.0])
    buffer = ReplayBuffer(1, 3, 2, gamma=gamma)
    buffer.add(
        obs=np.zeros((3, 2), np.float32),
        actions=np.array([0, 1, 0]),
        rewards=np.array([1.0, 0.0, -1.0], np.float32),
        # env 2's episode was truncated: next_obs is its final observation, not the reset one.
        next_obs=np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 1.0]], np.float32),
        terminated=np.array([False, True, False]),
        truncated=np.array([False, False, True]),
    )
    batch = buffer.sample(3, np.random.default_rng(0))
    with torch.no_grad():
        target_B = td_target(
            batch.rewards_B,
            batch.discounts_B,
            batch.terminated_B,
            agent.target(batch.next_obs_BD),
        )
    # env 0: 1 + 0.9 * max(1.5, 0) = 2.35; env 1 terminated: 0; env 2 truncated: -1 + 0.9 * 2.
    by_env = {0: 2.35, 1: 0.0, 2: 0.8}
    envs = batch.indices % 3
    expected = torch.tensor([by_env[int(e)] for e in envs])
    torch.testing.assert_close(target_B, expected)


def test_huber_loss_by_hand() -> None:
    q_BA = torch.tensor([[1.0, 2.0], [0.0, 5.0]])
    actions_B = torch.tensor([1, 0])
    target_B = torch.tensor([2.5, 3.0])  # errors 0.5 (quadratic part) and 3.0 (linear part)
    out = dqn_loss(q_BA, actions_B, target_B, huber_delta=1.0)
    assert out.loss.item() == pytest.approx((0.5 * 0.25 + (3.0 - 0.5)) / 2)
    torch.testing.assert_close(out.td_error_B, torch.tensor([0.5, 3.0]))
    torch.testing.assert_close(out.q_taken_B, torch.tensor([2.0, 0.0]))
    out = dqn_loss(q_BA, actions_B, target_B, huber_delta=2.0)
    assert out.loss.item() == pytest.approx((0.5 * 0.25 / 2 + (3.0 - 1.0)) / 2)
    weighted = dqn_loss(q_BA, actions_B, target_B, 1.0, weights_B=torch.tensor([2.0, 0.0]))
    assert weighted.loss.item() == pytest.approx(2.0 * 0.125 / 2)


def test_update_reports_hand_computed_loss_and_stats() -> None:
    agent = DQNAgent(2, 2, dataclasses.replace(SMALL, max_grad_norm=0.0))
    _set_net(agent.online, [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])  # Q(s) = s
    _set_net(agent.target, [[1.0, 0.0], [0.0, 2.0]], [0.5, 0.0])
    batch = _batch(
        obs=[[1.0, 0.0], [0.0, 3.0]],
        actions=[0, 1],  # Q(s, a) = 1 and 3
        rewards=[1.0, 0.0],
        next_obs=[[1.0, 0.0], [0.0, 2.0]],  # targets 1 + 0.9 * 1.5 = 2.35 and 0 (terminated)
        terminated=[0.0, 1.0],
        gamma=0.9,
    )
    stats = agent.update(batch)
    # errors 1.35 and -3: both linear -> (0.85 + 2.5) / 2
    assert stats["loss"] == pytest.approx((1.35 - 0.5 + 3.0 - 0.5) / 2)
    assert stats["q_mean"] == pytest.approx(2.0)
    assert stats["td_abs_mean"] == pytest.approx((1.35 + 3.0) / 2)
    # dloss/dq_taken = sign(q - target) / B = [-0.5, +0.5]. Output layer: weight rows -0.5 * h0
    # and 0.5 * h1 with h = relu(s) = s -> |.|^2 = 0.25 + 2.25, bias 0.25 + 0.25. Hidden layer:
    # the same numbers again (identity weights; relu passes exactly the coordinates involved).
    assert stats["grad_norm"] == pytest.approx(np.sqrt(2 * (2.5 + 0.5)), rel=1e-6)
    assert set(stats) == {"loss", "q_mean", "td_abs_mean", "grad_norm"}
    assert all(isinstance(v, float) for v in stats.values())


def test_hard_target_update_every_interval() -> None:
    cfg = dataclasses.replace(SMALL, target_update="hard", target_update_interval=2)
    agent = DQNAgent(3, 2, cfg)
    initial = _params(agent.target)
    rng = np.random.default_rng(1)
    agent.update(_random_batch(rng, 3, 2, 4))
    for t, p0 in zip(agent.target.parameters(), initial, strict=True):
        assert torch.equal(t, p0)
    assert not all(
        torch.equal(o, p0) for o, p0 in zip(agent.online.parameters(), initial, strict=True)
    )
    agent.update(_random_batch(rng, 3, 2, 4))
    for t, o in zip(agent.target.parameters(), agent.online.parameters(), strict=True):
        assert torch.equal(t, o)


def test_soft_target_update_is_polyak_by_hand() -> None:
    agent = DQNAgent(3, 2, dataclasses.replace(SMALL, target_update="soft", tau=0.25))
    with torch.no_grad():
        for t in agent.target.parameters():
            t.fill_(4.0)
    rng = np.random.default_rng(2)
    agent.update(_random_batch(rng, 3, 2, 4))
    online1 = _params(agent.online)
    for t, o in zip(agent.target.parameters(), online1, strict=True):
        torch.testing.assert_close(t, 0.75 * 4.0 + 0.25 * o)
    target1 = _params(agent.target)
    agent.update(_random_batch(rng, 3, 2, 4))
    for t, t1, o in zip(agent.target.parameters(), target1, agent.online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.75 * t1 + 0.25 * o)


@pytest.mark.parametrize("max_norm", [0.05, 1e6, 0.0])
def test_gradient_clipping_matches_torch(max_norm: float) -> None:
    nets = [build_q_network(3, 2, SMALL, seed=0) for _ in range(2)]
    for net in nets:
        net(torch.arange(6.0).reshape(2, 3)).square().sum().backward()
    mine = _clip_grad_norm_(list(nets[0].parameters()), max_norm)
    theirs = torch.nn.utils.clip_grad_norm_(nets[1].parameters(), max_norm or float("inf"))
    torch.testing.assert_close(mine, theirs)
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)


# ------------------------------------------------------------------ replay


def _add_step(buffer: ReplayBuffer, step: int) -> None:
    """Transition of env e at step t: obs = [10t + e, t], action t % 2, reward 10t + e."""
    n = buffer.n_envs
    code = 10.0 * step + np.arange(n, dtype=np.float32)
    obs = np.stack([code, np.full(n, step, np.float32)], axis=1)
    buffer.add(
        obs=obs,
        actions=np.full(n, step % 2),
        rewards=code,
        next_obs=obs + 1.0,
        terminated=np.arange(n) == step % n,
        truncated=np.zeros(n, bool),
    )


def test_replay_layout_and_ring_wrap_around() -> None:
    buffer = ReplayBuffer(3, 2, 2, gamma=0.99)
    assert buffer.obs.shape == (3, 2, 2) and buffer.next_obs.shape == (3, 2, 2)
    assert buffer.actions.shape == (3, 2) and buffer.actions.dtype == np.int64
    assert buffer.terminated.dtype == bool and buffer.truncated.shape == (3, 2)
    assert len(buffer) == 0 and buffer.capacity == 6
    for step in range(4):
        _add_step(buffer, step)
    assert len(buffer) == 6 and buffer.pos == 1
    # Step 3 overwrote row 0; rows 1 and 2 still hold steps 1 and 2; columns are envs.
    np.testing.assert_array_equal(buffer.obs[:, :, 0], [[30, 31], [10, 11], [20, 21]])
    np.testing.assert_array_equal(buffer.rewards, [[30, 31], [10, 11], [20, 21]])
    np.testing.assert_array_equal(buffer.actions, [[1, 1], [1, 1], [0, 0]])
    np.testing.assert_array_equal(buffer.terminated, [[False, True], [False, True], [True, False]])


def test_replay_samples_only_filled_slots_and_keeps_fields_together() -> None:
    buffer = ReplayBuffer(5, 2, 2, gamma=0.9)
    _add_step(buffer, 0)
    _add_step(buffer, 1)
    batch = buffer.sample(500, np.random.default_rng(0))
    assert sorted(set(batch.indices.tolist())) == [0, 1, 2, 3]
    codes = batch.obs_BD[:, 0]
    assert set(codes.tolist()) == {0.0, 1.0, 10.0, 11.0}
    torch.testing.assert_close(batch.rewards_B, codes)
    torch.testing.assert_close(batch.next_obs_BD, batch.obs_BD + 1.0)
    step_B = batch.obs_BD[:, 1].long()
    torch.testing.assert_close(batch.actions_B, step_B % 2)
    torch.testing.assert_close(batch.terminated_B, (codes % 10 == step_B % 2).float())
    assert batch.terminated_B.dtype == torch.float32 and batch.actions_B.dtype == torch.int64
    torch.testing.assert_close(batch.discounts_B, torch.full((500,), 0.9))
    assert batch.weights_B is None
    torch.testing.assert_close(
        batch.obs_BD, torch.from_numpy(buffer.obs.reshape(10, 2)[batch.indices])
    )


def test_replay_state_dict_round_trip_and_errors() -> None:
    buffer = ReplayBuffer(3, 2, 2, gamma=0.99)
    for step in range(4):
        _add_step(buffer, step)
    restored = ReplayBuffer(3, 2, 2, gamma=0.99)
    restored.load_state_dict(buffer.state_dict())
    assert (restored.pos, len(restored)) == (buffer.pos, len(buffer))
    a = buffer.sample(8, np.random.default_rng(5))
    b = restored.sample(8, np.random.default_rng(5))
    torch.testing.assert_close(a.obs_BD, b.obs_BD)
    with pytest.raises(CheckpointError, match="obs"):
        ReplayBuffer(4, 2, 2, gamma=0.99).load_state_dict(buffer.state_dict())
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3, 2, 2, gamma=0.99).sample(1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="obs"):
        buffer.add(np.zeros((3, 2)), np.zeros(2), np.zeros(2), np.zeros((3, 2)), *[np.zeros(2)] * 2)


# ------------------------------------------------------------------ policy


def test_epsilon_schedule_endpoints() -> None:
    agent = DQNAgent(2, 2, dataclasses.replace(SMALL, eps_start=1.0, eps_end=0.05))
    assert agent.epsilon_at(0.0) == 1.0
    assert agent.epsilon_at(0.25) == pytest.approx(0.525)
    assert agent.epsilon_at(0.5) == pytest.approx(0.05)
    assert agent.epsilon_at(1.0) == pytest.approx(0.05)
    assert agent.epsilon_at(-0.1) == 1.0
    assert agent.epsilon_at(0.25, start=0.2) == pytest.approx(0.125)  # retraining starts lower
    instant = DQNAgent(2, 2, dataclasses.replace(SMALL, eps_decay_fraction=0.0))
    assert instant.epsilon_at(0.0) == pytest.approx(0.05)


def test_act_greedy_random_and_deterministic() -> None:
    # Noisy nets explore through their noise (act and greedy then differ on purpose; see
    # test_rainbow.py); epsilon-greedy acting is the noise-free case.
    agent = DQNAgent(5, 4, AgentConfig(hidden_sizes=(16,), noisy=False), seed=3)
    obs = np.random.default_rng(0).standard_normal((4000, 5)).astype(np.float32)
    argmax = agent.q_values(obs).argmax(axis=1)
    greedy = agent.act(obs, 0.0, np.random.default_rng(1))
    np.testing.assert_array_equal(greedy, argmax)
    np.testing.assert_array_equal(agent.greedy(obs), argmax)
    assert greedy.dtype == np.int64 and greedy.shape == (4000,)
    random_actions = agent.act(obs, 1.0, np.random.default_rng(1))
    counts = np.bincount(random_actions, minlength=4)
    assert counts.min() > 850 and counts.max() < 1150  # 1000 each expected
    a = agent.act(obs, 0.3, np.random.default_rng(7))
    b = agent.act(obs, 0.3, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert 0.15 < np.mean(a != argmax) < 0.3  # 30% explore, a quarter of them pick argmax


# ------------------------------------------------------------- determinism


def test_same_seed_same_weights_and_same_training() -> None:
    cfg = AgentConfig(hidden_sizes=(32, 32), target_update_interval=3)
    a, b = DQNAgent(6, 3, cfg, seed=11), DQNAgent(6, 3, cfg, seed=11)
    for pa, pb in zip(a.online.parameters(), b.online.parameters(), strict=True):
        assert torch.equal(pa, pb)
    other = DQNAgent(6, 3, cfg, seed=12)
    assert not torch.equal(_linears(a.online)[0].weight, _linears(other.online)[0].weight)
    rng = np.random.default_rng(0)
    for _ in range(7):
        batch = _random_batch(rng, 6, 3, 32)
        assert a.update(batch) == b.update(batch)
    for pa, pb in zip(
        [*a.online.parameters(), *a.target.parameters()],
        [*b.online.parameters(), *b.target.parameters()],
        strict=True,
    ):
        assert torch.equal(pa, pb)


def test_building_an_agent_leaves_global_torch_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    DQNAgent(8, 3, AgentConfig(), seed=5)
    build_q_network(8, 3, AgentConfig(), seed=6)
    assert torch.equal(torch.get_rng_state(), before)


# ------------------------------------------------------------- checkpoints


def _trained_agent() -> DQNAgent:
    agent = DQNAgent(4, 3, AgentConfig(hidden_sizes=(8, 8), target_update_interval=2), seed=1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        agent.update(_random_batch(rng, 4, 3, 16))
    return agent


def test_save_load_round_trip_and_resume(tmp_path: Path) -> None:
    agent = _trained_agent()
    path = agent.save(
        tmp_path / "m" / "final_model.pt",
        metrics={"score": np.float32(1.5)},
        extra={"pairs": ["BTC/USDT"]},
    )
    assert [p.name for p in path.parent.iterdir()] == ["final_model.pt"]  # no temp file left
    loaded, info = load_agent(path)
    assert info["metrics"] == {"score": 1.5} and info["extra"] == {"pairs": ["BTC/USDT"]}
    assert info["n_updates"] == 3 == loaded.n_updates and loaded.config == agent.config
    obs = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.q_values(obs), agent.q_values(obs))
    # The optimizer implementation (fused or not) is the loading machine's choice.
    assert loaded.optimizer.param_groups[0]["fused"] == agent.optimizer.param_groups[0]["fused"]
    # Resuming continues exactly: same optimizer state, same target, same step count.
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    for _ in range(3):
        assert agent.update(_random_batch(rng_a, 4, 3, 16)) == loaded.update(
            _random_batch(rng_b, 4, 3, 16)
        )
    for pa, pb in zip(
        [*agent.online.parameters(), *agent.target.parameters()],
        [*loaded.online.parameters(), *loaded.target.parameters()],
        strict=True,
    ):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("weights_only", [True, False])
def test_plain_torch_load_gives_model_state_dict(tmp_path: Path, weights_only: bool) -> None:
    agent = _trained_agent()
    path = agent.save(tmp_path / "model.pt")
    state = torch.load(path, weights_only=weights_only)["model_state_dict"]
    net = network_from_config(4, 3, agent.config)
    net.load_state_dict(state)
    net.set_noise(False)
    obs = torch.ones(2, 4)
    torch.testing.assert_close(net(obs), torch.from_numpy(agent.q_values(obs.numpy())))
    # A plain DQN's state dict is the original tool's MLP layout.
    plain = dataclasses.replace(agent.config, **PLAIN_DQN)  # type: ignore[arg-type]
    plain_path = DQNAgent(4, 3, plain, seed=1).save(tmp_path / "plain.pt")
    QNetwork(4, 3, (8, 8), "relu").load_state_dict(
        torch.load(plain_path, weights_only=weights_only)["model_state_dict"]
    )


def test_load_refuses_missing_truncated_garbage_and_code(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_agent(tmp_path / "absent.pt")
    path = _trained_agent().save(tmp_path / "model.pt")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt: cannot read checkpoint"):
        load_agent(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_agent(garbage)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_agent(empty)
    code = tmp_path / "code.pt"
    torch.save({"model_state_dict": {}, "payload": _Payload()}, code)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_agent(code)


class _Payload:
    """An arbitrary class: weights_only loading must refuse to rebuild it."""


def test_load_refuses_wrong_content(tmp_path: Path) -> None:
    agent = _trained_agent()
    ckpt = torch.load(agent.save(tmp_path / "model.pt"), weights_only=True)

    def write(name: str, content: object) -> Path:
        p = tmp_path / name
        torch.save(content, p)
        return p

    with pytest.raises(CheckpointError, match="expected a checkpoint dict"):
        load_agent(write("list.pt", [1, 2]))
    with pytest.raises(CheckpointError, match=r"lacks keys \['target_state_dict'\]"):
        load_agent(write("missing.pt", {k: v for k, v in ckpt.items() if k != "target_state_dict"}))
    with pytest.raises(CheckpointError, match="format is 'other'"):
        load_agent(write("format.pt", {**ckpt, "format": "other"}))
    with pytest.raises(CheckpointError, match="format_version 3 is not supported"):
        load_agent(write("version.pt", {**ckpt, "format_version": 3}))
    wider = {**ckpt, "agent_config": {**ckpt["agent_config"], "hidden_sizes": [16, 8]}}
    with pytest.raises(CheckpointError, match=r"model_state_dict does not match .*\[16, 4\]"):
        load_agent(write("shape.pt", wider))
    moments = ckpt["optimizer_state_dict"]
    bad_state = {**moments["state"], 0: {**moments["state"][0], "exp_avg": torch.zeros(3)}}
    with pytest.raises(CheckpointError, match="exp_avg is \\(3,\\), the parameter is \\(8, 4\\)"):
        bad_moments = {**moments, "state": bad_state}
        load_agent(write("moments.pt", {**ckpt, "optimizer_state_dict": bad_moments}))
    with pytest.raises(CheckpointError, match="agent_config"):
        bad_cfg = {**ckpt["agent_config"], "gamma": 3.0}
        load_agent(write("config.pt", {**ckpt, "agent_config": bad_cfg}))


def test_save_refuses_extra_that_weights_only_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"extra\['obj'\]"):
        _trained_agent().save(tmp_path / "m.pt", extra={"obj": _Payload()})
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- learning


@pytest.mark.parametrize("rainbow", [False, True], ids=["plain", "rainbow"])
def test_learns_two_action_contextual_bandit(rainbow: bool) -> None:
    # reward_scale 1: Q-values in reward units (the C51 support -10..10 then holds them).
    switches: dict[str, object] = {"reward_scale": 1.0} if rainbow else dict(PLAIN_DQN)
    cfg = AgentConfig(
        hidden_sizes=(32,), learning_rate=1e-2, batch_size=64, buffer_size=512,
        **switches,  # type: ignore[arg-type]
    )  # fmt: skip
    agent = DQNAgent(2, 2, cfg, seed=0)
    buffer = ReplayBuffer.from_config(cfg, n_envs=8, obs_dim=2)
    rng = np.random.default_rng(0)
    for _ in range(32):
        context = rng.integers(0, 2, 8)
        obs = np.eye(2, dtype=np.float32)[context]
        actions = agent.act(obs, 1.0, rng)
        rewards = (actions == context).astype(np.float32)
        buffer.add(obs, actions, rewards, obs, np.ones(8, bool), np.zeros(8, bool))
    for _ in range(300):
        agent.update(buffer.sample(cfg.batch_size, rng))
    eye = np.eye(2, dtype=np.float32)
    np.testing.assert_array_equal(agent.greedy(eye), [0, 1])
    np.testing.assert_allclose(agent.q_values(eye), eye, atol=0.1)
