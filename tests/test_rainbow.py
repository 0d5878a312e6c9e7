"""Rainbow parts against numbers worked out by hand: n-step, double DQN, dueling, C51, QR, PER."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from nexlify.agent.config import PLAIN_DQN, AgentConfig
from nexlify.agent.dqn import DQNAgent, load_agent
from nexlify.agent.losses import (
    c51_loss,
    project_distribution,
    quantile_huber_loss,
    td_target,
)
from nexlify.agent.networks import QNetwork
from nexlify.agent.replay import ReplayBatch, ReplayBuffer
from nexlify.agent.sum_tree import PrioritizedSampler, SumTree
from nexlify.errors import CheckpointError, ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def t(values: object) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# ----------------------------------------------------------------- n-step returns


def _n_step_buffer(n_step: int, gamma: float = 0.5, capacity: int = 8) -> ReplayBuffer:
    """Two envs, obs = [step, env]; env 0 terminates at step 1, env 1 is truncated at step 2.

    Rewards: env 0 gets 1, 2, 4, 8, 16 at steps 0..4, env 1 gets 10, 20, 40, 80, 160.
    """
    buf = ReplayBuffer(capacity, 2, 2, gamma=gamma, n_step=n_step)
    for step in range(5):
        obs = np.array([[step, 0], [step, 1]], np.float32)
        buf.add(
            obs,
            np.array([0, 1]),
            np.array([2.0**step, 10 * 2.0**step], np.float32),
            obs + np.float32(100),  # next_obs marks the step it belongs to: 100 + step
            np.array([step == 1, False]),
            np.array([False, step == 2]),
        )
    return buf


def test_n_step_returns_cut_at_termination_truncation_and_newest_row_by_hand() -> None:
    buf = _n_step_buffer(n_step=3)
    # Flat index = row * 2 + env.
    idx = np.array([0, 2, 4, 1, 3, 5, 7, 9, 6])
    last, rewards, discounts = buf.n_step_returns(idx)
    # env 0, row 0: steps 0, 1 (terminates at 1): 1 + 0.5 * 2 = 2, discount 0.25, ends at row 1.
    # env 0, row 1: terminates at once: 2, discount 0.5.
    # env 0, row 2: steps 2, 3, 4: 4 + 0.5 * 8 + 0.25 * 16 = 12, discount 0.125.
    # env 1, row 0: steps 0, 1, 2 (truncated at 2, counts as the third step): 10 + 10 + 10 = 30.
    # env 1, row 1: steps 1, 2 (truncation cuts): 20 + 0.5 * 40 = 40, discount 0.25.
    # env 1, row 2: truncated at once: 40, discount 0.5.
    # env 1, row 3: steps 3, 4 then the newest row ends the look-ahead: 80 + 80 = 160, 0.25.
    # env 1, row 4: the newest row: 160, 0.5.
    # env 0, row 3: steps 3, 4: 8 + 8 = 16, 0.25.
    np.testing.assert_allclose(rewards, [2, 2, 12, 30, 40, 40, 160, 160, 16])
    np.testing.assert_allclose(discounts, [0.25, 0.5, 0.125, 0.125, 0.25, 0.5, 0.25, 0.5, 0.25])
    np.testing.assert_array_equal(last, [2, 2, 8, 5, 5, 5, 9, 9, 8])
    batch = buf.sample(1, np.random.default_rng(0))  # field plumbing through sample()
    assert batch.discounts_B.dtype == torch.float32


def test_n_step_sample_uses_the_last_step_for_bootstrap_and_termination() -> None:
    buf = _n_step_buffer(n_step=3)

    class Fixed:
        def __init__(self, idx: list[int]) -> None:
            self.idx = np.array(idx)

        def on_add(self, row: int) -> None: ...

        def sample_indices(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, None]:
            return self.idx, None

    buf.sampler = Fixed([0, 1, 4])  # type: ignore[assignment]
    batch = buf.sample(3, np.random.default_rng(0))
    # env 0 row 0 ends at the termination of row 1: next_obs of row 1, terminated.
    np.testing.assert_allclose(batch.next_obs_BD[0].numpy(), [101, 100])
    np.testing.assert_allclose(batch.terminated_B.numpy(), [1.0, 0.0, 0.0])
    # env 1 row 0 ends at its truncation (row 2): bootstraps from row 2's final observation.
    np.testing.assert_allclose(batch.next_obs_BD[1].numpy(), [102, 101])
    np.testing.assert_allclose(batch.next_obs_BD[2].numpy(), [104, 100])
    np.testing.assert_allclose(batch.obs_BD[2].numpy(), [2, 0])


def test_n_step_after_the_ring_wraps() -> None:
    buf = _n_step_buffer(n_step=3, capacity=3)  # rows 3 and 4 overwrote rows 0 and 1
    assert buf.pos == 2
    last, rewards, discounts = buf.n_step_returns(np.array([4, 0, 2]))
    # row 2 (step 2) env 0: steps 2, 3, 4 wrap to rows 0, 1: 4 + 4 + 4 = 12.
    # row 0 (step 3) env 0: steps 3, 4 then the newest row: 8 + 8 = 16.
    # row 1 (step 4) env 0: the newest row: 16.
    np.testing.assert_allclose(rewards, [12, 16, 16])
    np.testing.assert_allclose(discounts, [0.125, 0.25, 0.5])
    np.testing.assert_array_equal(last, [2, 2, 2])


def test_reward_scale_multiplies_sampled_rewards() -> None:
    buf = ReplayBuffer(4, 1, 1, gamma=0.9, reward_scale=100.0)
    buf.add(np.zeros((1, 1), np.float32), np.array([0]), np.array([0.002], np.float32),
            np.zeros((1, 1), np.float32), np.array([False]), np.array([False]))  # fmt: skip
    assert buf.sample(1, np.random.default_rng(0)).rewards_B.item() == pytest.approx(0.2)


# ------------------------------------------------------------ targets and heads


def test_double_dqn_target_by_hand() -> None:
    next_target = t([[1.0, 5.0, 3.0], [2.0, 0.0, 4.0]])
    next_online = t([[0.0, 0.0, 9.0], [7.0, 0.0, 0.0]])  # online picks actions 2 and 0
    r, d, term = t([1.0, 1.0]), t([0.5, 0.5]), t([0.0, 0.0])
    # plain: max of the target net: 1 + 0.5 * 5 = 3.5 and 1 + 0.5 * 4 = 3
    torch.testing.assert_close(td_target(r, d, term, next_target), t([3.5, 3.0]))
    # double: target values of the online argmax: 1 + 0.5 * 3 = 2.5 and 1 + 0.5 * 2 = 2
    torch.testing.assert_close(td_target(r, d, term, next_target, next_online), t([2.5, 2.0]))


def test_dueling_aggregation_by_hand() -> None:
    net = QNetwork(2, 3, (2,), "relu", dueling=True)
    with torch.no_grad():
        hidden = net.layers[0]
        hidden.weight.copy_(torch.eye(2))
        hidden.bias.zero_()
        assert net.value_head is not None and net.advantage_head is not None
        net.value_head.weight.copy_(t([[1.0, 1.0]]))  # V = h0 + h1
        net.value_head.bias.fill_(0.5)
        net.advantage_head.weight.copy_(t([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))  # A = h0, h1, 0
        net.advantage_head.bias.zero_()
    q = net(t([[1.0, 2.0]]))
    # V = 3.5, A = [1, 2, 0], mean A = 1: Q = 3.5 + A - 1 = [3.5, 4.5, 2.5]
    torch.testing.assert_close(q, t([[3.5, 4.5, 2.5]]))


def test_c51_projection_on_a_small_support_by_hand() -> None:
    support = t([0.0, 1.0, 2.0])
    probs = t([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    rewards = t([0.5, 0.5, 0.0, -1.0])
    discounts = t([1.0, 1.0, 0.5, 1.0])
    terminated = t([0.0, 1.0, 0.0, 0.0])
    out = project_distribution(probs, rewards, discounts, terminated, support)
    # row 0: Tz = 0.5, 1.5, 2.5 -> 2 (clipped): 0.2 splits 0.1/0.1, 0.3 splits 0.15/0.15,
    #        0.5 lands on atom 2: [0.1, 0.25, 0.65]
    # row 1: terminated, Tz = 0.5 everywhere: all mass splits between atoms 0 and 1.
    # row 2: Tz = 0, 0.5, 1: [0.2 + 0.15, 0.15 + 0.5, 0]
    # row 3: Tz = -1 -> 0 (clipped): all mass on atom 0.
    expected = t([[0.1, 0.25, 0.65], [0.5, 0.5, 0.0], [0.35, 0.65, 0.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(4))


def test_c51_loss_is_cross_entropy_by_hand() -> None:
    logits = torch.log(t([[[0.5, 0.5], [0.25, 0.75]]]))  # B=1, A=2, Z=2
    target = t([[1.0, 0.0]])
    out = c51_loss(logits, torch.tensor([1]), target, t([0.0, 1.0]))
    assert out.loss.item() == pytest.approx(-np.log(0.25))
    assert out.q_taken_B.item() == pytest.approx(0.75)
    assert out.td_error_B.item() == pytest.approx(-np.log(0.25))


def test_quantile_huber_loss_by_hand() -> None:
    theta = t([[[0.0, 1.0]]])  # B=1, A=1, two quantiles at tau = 0.25, 0.75
    target = t([[0.5, 0.5]])
    out = quantile_huber_loss(theta, torch.tensor([0]), target, kappa=1.0)
    # u = 0.5 for theta_0 (weight |0.25 - 0|), u = -0.5 for theta_1 (weight |0.75 - 1|);
    # Huber(0.5) = 0.125 each: 0.25 * 0.125 + 0.25 * 0.125 = 0.0625
    assert out.loss.item() == pytest.approx(0.0625)
    assert out.q_taken_B.item() == pytest.approx(0.5)


# ------------------------------------------------------------------ sum tree / PER


def test_sum_tree_prefix_search_and_duplicate_updates_by_hand() -> None:
    tree = SumTree(4)
    tree.set(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
    assert tree.total == 10.0
    found = tree.find(np.array([0.0, 0.99, 1.0, 2.99, 3.0, 5.99, 6.0, 9.99]))
    np.testing.assert_array_equal(found, [0, 0, 1, 1, 2, 2, 3, 3])
    # Index 1 twice: the last value (7) wins, as if the updates ran in order.
    tree.set(np.array([1, 2, 1]), np.array([5.0, 0.0, 7.0]))
    np.testing.assert_array_equal(tree.get(np.arange(4)), [1.0, 7.0, 0.0, 4.0])
    assert tree.total == 12.0
    assert tree.nodes[2] == 8.0 and tree.nodes[3] == 4.0  # parents rebuilt from leaves
    np.testing.assert_array_equal(tree.find(np.array([0.5, 1.0, 7.99, 8.0])), [0, 1, 1, 3])
    tree5 = SumTree(5)  # not a power of two: padded leaves stay 0
    tree5.set(np.arange(5), np.ones(5))
    assert tree5.total == 5.0 and tree5.find(np.array([4.5]))[0] == 4


def test_prioritized_sampling_proportions() -> None:
    sampler = PrioritizedSampler(capacity_per_env=2, n_envs=2, alpha=1.0, eps=0.0)
    sampler.on_add(0)
    sampler.on_add(1)
    sampler.update_priorities(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
    rng = np.random.default_rng(0)
    counts = np.zeros(4)
    for _ in range(200):
        idx, _ = sampler.sample_indices(100, rng)
        counts += np.bincount(idx, minlength=4)
    np.testing.assert_allclose(counts / counts.sum(), [0.1, 0.2, 0.3, 0.4], atol=0.01)
    # alpha 0.5 flattens: P ~ sqrt(p)
    flat = PrioritizedSampler(2, 2, alpha=0.5, eps=0.0)
    flat.on_add(0)
    flat.on_add(1)
    flat.update_priorities(np.arange(4), np.array([1.0, 4.0, 9.0, 16.0]))
    np.testing.assert_allclose(flat.tree.get(np.arange(4)), [1.0, 2.0, 3.0, 4.0])


def test_importance_weights_by_hand() -> None:
    sampler = PrioritizedSampler(capacity_per_env=4, n_envs=1, alpha=1.0, eps=0.0)
    for row in range(4):
        sampler.on_add(row)
    sampler.update_priorities(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
    sampler.beta = 0.5
    w = sampler.importance_weights(np.arange(4))
    # P = 0.1..0.4, n = 4: w = (4 P) ** -0.5 = 1/sqrt(0.4), ..., divided by the largest.
    np.testing.assert_allclose(w, [1.0, np.sqrt(0.4 / 0.8), np.sqrt(0.4 / 1.2), 0.5])
    sampler.beta = 1.0
    np.testing.assert_allclose(sampler.importance_weights(np.array([3, 1])), [0.5, 1.0])


def test_new_transitions_get_the_max_priority() -> None:
    sampler = PrioritizedSampler(capacity_per_env=4, n_envs=2, alpha=0.5, eps=0.01)
    sampler.on_add(0)
    np.testing.assert_allclose(sampler.tree.get(np.arange(2)), [1.0, 1.0])
    sampler.update_priorities(np.array([0, 1]), np.array([3.99, -0.5]))
    assert sampler.max_priority == pytest.approx(4.0)
    sampler.on_add(1)
    np.testing.assert_allclose(sampler.tree.get(np.array([2, 3])), [2.0, 2.0])  # 4 ** 0.5
    np.testing.assert_allclose(sampler.tree.get(np.array([1])), [0.51**0.5])
    assert sampler.tree.get(np.array([4]))[0] == 0.0  # unfilled rows are never sampled


def test_prioritized_buffer_samples_only_filled_slots_with_weights() -> None:
    cfg = AgentConfig(buffer_size=40, batch_size=8, n_step=2)
    buf = ReplayBuffer.from_config(cfg, n_envs=2, obs_dim=1)
    for step in range(3):
        buf.add(np.full((2, 1), step, np.float32), np.zeros(2, np.int64),
                np.ones(2, np.float32), np.zeros((2, 1), np.float32),
                np.zeros(2, bool), np.zeros(2, bool))  # fmt: skip
    batch = buf.sample(64, np.random.default_rng(0))
    assert batch.indices.max() < 6 and batch.weights_B is not None
    assert float(batch.weights_B.max()) == 1.0


# ------------------------------------------------------------------------ agent


def _random_batch(rng: np.random.Generator, d: int, a: int, b: int) -> ReplayBatch:
    return ReplayBatch(
        obs_BD=torch.from_numpy(rng.standard_normal((b, d)).astype(np.float32)),
        actions_B=torch.from_numpy(rng.integers(0, a, b)),
        rewards_B=torch.from_numpy(rng.standard_normal(b).astype(np.float32)),
        next_obs_BD=torch.from_numpy(rng.standard_normal((b, d)).astype(np.float32)),
        terminated_B=torch.from_numpy((rng.random(b) < 0.2).astype(np.float32)),
        discounts_B=torch.full((b,), 0.9),
        indices=np.arange(b),
        weights_B=torch.from_numpy(rng.random(b).astype(np.float32)),
    )


@pytest.mark.parametrize("dist", ["none", "c51", "qr"])
def test_full_rainbow_updates_are_deterministic(dist: str) -> None:
    cfg = AgentConfig(hidden_sizes=(16,), distributional=dist, n_atoms=11)
    runs = []
    for _ in range(2):
        agent = DQNAgent(5, 3, cfg, seed=4)
        rng = np.random.default_rng(0)
        for _ in range(4):
            stats = agent.update(_random_batch(rng, 5, 3, 16))
            assert all(np.isfinite(v) for v in stats.values())
        runs.append([p.detach().clone() for p in agent.online.parameters()])
        runs.append(agent.act(np.ones((6, 5), np.float32), 0.0, np.random.default_rng(1)))
    for a, b in zip(runs[0], runs[2], strict=True):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(runs[1], runs[3])


def test_noisy_nets_explore_through_noise_and_greedy_is_noise_free() -> None:
    agent = DQNAgent(4, 5, AgentConfig(hidden_sizes=(16,), noisy=True, noisy_sigma0=5.0), seed=0)
    obs = np.random.default_rng(0).standard_normal((500, 4)).astype(np.float32)
    greedy = agent.greedy(obs)
    np.testing.assert_array_equal(greedy, agent.greedy(obs))  # mean weights: deterministic
    noisy = agent.act(obs, 0.0, np.random.default_rng(0))
    assert (noisy != greedy).any()
    agent.reset_noise()
    assert (agent.act(obs, 0.0, np.random.default_rng(0)) != noisy).any()
    # The noise comes from the agent's generator, not torch's global one.
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    agent.reset_noise()
    assert torch.equal(before, torch.random.get_rng_state())


def test_noise_is_redrawn_for_every_noisy_layer_of_both_networks_from_the_seed() -> None:
    """One draw serves all four noisy heads (online and target, advantage and value): each
    gets fresh factorised noise of its own size, in its own buffer, the same for the same
    seed, and the target's noise is not the online network's."""
    config = AgentConfig(hidden_sizes=(16,), noisy=True, dueling=True)
    agents = [DQNAgent(4, 3, config, seed=5) for _ in range(2)]
    layers = agents[0].online.noisy_layers + agents[0].target.noisy_layers
    assert len(layers) == 4
    buffers = [(layer.eps_in, layer.eps_out) for layer in layers]
    before = [(i.clone(), o.clone()) for i, o in buffers]
    for agent in agents:
        agent.reset_noise()
    twin = agents[1].online.noisy_layers + agents[1].target.noisy_layers
    for layer, (eps_in, eps_out), (old_in, old_out), other in zip(
        layers, buffers, before, twin, strict=True
    ):
        assert layer.eps_in is eps_in and layer.eps_out is eps_out  # redrawn in place
        assert eps_in.shape == (layer.in_features,) and eps_out.shape == (layer.out_features,)
        assert not torch.equal(eps_in, old_in) and not torch.equal(eps_out, old_out)
        assert torch.equal(eps_in, other.eps_in) and torch.equal(eps_out, other.eps_out)
    online_adv, target_adv = layers[0], layers[2]
    assert not torch.equal(online_adv.eps_out, target_adv.eps_out)


def test_bf16_autocast_stays_within_tolerance_of_fp32() -> None:
    rng = np.random.default_rng(0)
    batch = _random_batch(rng, 6, 3, 64)
    losses = {}
    for amp in ("off", "bf16"):
        cfg = AgentConfig(hidden_sizes=(32,), amp=amp, noisy=False)
        losses[amp] = DQNAgent(6, 3, cfg, seed=2).update(batch)["loss"]
    assert losses["bf16"] == pytest.approx(losses["off"], rel=0.03)
    with pytest.raises(ConfigError, match="fp16"):
        DQNAgent(2, 2, AgentConfig(amp="fp16"), device="cpu")


def test_weight_decay_and_lr_schedules() -> None:
    step = DQNAgent(3, 2, AgentConfig(hidden_sizes=(4,), lr_schedule="step", lr_period=2,
                                      lr_decay=0.5, weight_decay=1e-3), seed=0)  # fmt: skip
    assert step.optimizer.param_groups[0]["weight_decay"] == 1e-3
    rng = np.random.default_rng(0)
    for _ in range(4):
        step.update(_random_batch(rng, 3, 2, 8))
    assert step.lr_schedule.learning_rate == pytest.approx(2.5e-4 * 0.25)
    plateau = DQNAgent(3, 2, AgentConfig(lr_schedule="plateau", lr_patience=1), seed=0)
    for score in (1.0, 0.5, 0.4):
        plateau.lr_schedule.after_validation(score)
    assert plateau.lr_schedule.learning_rate == pytest.approx(2.5e-4 * 0.5)
    cosine = DQNAgent(3, 2, AgentConfig(lr_schedule="cosine", lr_period=4), seed=0)
    for _ in range(2):
        cosine.update(_random_batch(rng, 3, 2, 8))
    assert cosine.lr_schedule.learning_rate == pytest.approx(1e-6 + (2.5e-4 - 1e-6) * 0.5)


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_dropout_and_norm_train_and_act(norm: str) -> None:
    agent = DQNAgent(3, 2, AgentConfig(hidden_sizes=(8,), dropout=0.5, norm=norm), seed=0)
    rng = np.random.default_rng(0)
    agent.update(_random_batch(rng, 3, 2, 8))
    obs = np.ones((4, 3), np.float32)
    np.testing.assert_array_equal(agent.q_values(obs), agent.q_values(obs))  # eval: no dropout


@pytest.mark.parametrize("distributional", ["none", "c51"])
def test_dropout_masks_follow_the_agent_seed_not_the_global_generator(
    distributional: str,
) -> None:
    """Dropout draws from the agent's generator: the same seed gives the same weights after
    the same updates whatever torch's global generator holds, and leaves that generator alone;
    another seed's masks differ. (nn.Dropout drew from the global generator, which nothing
    seeds: two runs of one seed trained differently.)"""
    config = AgentConfig(hidden_sizes=(16,), dropout=0.5, distributional=distributional)

    start = DQNAgent(3, 2, config, seed=0).online.state_dict()

    def trained(seed: int, global_seed: int) -> list[torch.Tensor]:
        torch.manual_seed(global_seed)
        before = torch.random.get_rng_state()
        agent = DQNAgent(3, 2, config, seed=seed)
        agent.load_weights(start)  # the same weights: only the masks' source differs
        rng = np.random.default_rng(0)
        for _ in range(3):
            agent.update(_random_batch(rng, 3, 2, 8))
        assert torch.equal(torch.random.get_rng_state(), before)
        return [p.detach().clone() for p in agent.online.parameters()]

    first, second, other = trained(0, 1), trained(0, 2), trained(1, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_a_network_with_dropout_needs_a_generator_to_learn() -> None:
    net = QNetwork(3, 2, (8,), "relu", dropout=0.5)
    obs = torch.ones(4, 3)
    with pytest.raises(RuntimeError, match="set_dropout_generator"):
        net(obs)
    net.eval()
    assert torch.equal(net(obs), net(obs))
    net.train()
    net.set_dropout_generator(torch.Generator().manual_seed(0))
    net(obs)


def test_format_1_plain_dqn_checkpoints_still_load(tmp_path: Path) -> None:
    plain = AgentConfig(hidden_sizes=(8,), **PLAIN_DQN)  # type: ignore[arg-type]
    agent = DQNAgent(4, 3, plain, seed=0)
    path = agent.save(tmp_path / "new.pt")
    ckpt = torch.load(path, weights_only=True)
    old_keys = {f.name for f in dataclasses.fields(AgentConfig)} - set(PLAIN_DQN) - {
        "per_alpha", "per_beta_start", "per_beta_end", "per_eps", "noisy_sigma0", "n_atoms",
        "v_min", "v_max", "weight_decay", "dropout", "norm", "lr_schedule", "lr_period",
        "lr_decay", "lr_patience", "lr_min", "amp", "cpu_kernels",
    }  # fmt: skip
    old = {k: v for k, v in ckpt.items() if k != "noise_generator_state"}
    old["format_version"] = 1
    old["agent_config"] = {k: v for k, v in ckpt["agent_config"].items() if k in old_keys}
    torch.save(old, tmp_path / "old.pt")
    loaded, info = load_agent(tmp_path / "old.pt")
    assert info["format_version"] == 1
    assert not loaded.config.dueling and loaded.config.distributional == "none"
    assert loaded.config.reward_scale == 1.0 and loaded.config.n_step == 1
    obs = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(loaded.q_values(obs), agent.q_values(obs))
    with pytest.raises(CheckpointError, match="format_version 9"):
        torch.save({**ckpt, "format_version": 9}, tmp_path / "future.pt")
        load_agent(tmp_path / "future.pt")


def test_rainbow_checkpoint_round_trip_keeps_noise_state(tmp_path: Path) -> None:
    agent = DQNAgent(4, 3, AgentConfig(hidden_sizes=(8,)), seed=0)
    agent.update(_random_batch(np.random.default_rng(0), 4, 3, 8))
    loaded, _ = load_agent(agent.save(tmp_path / "m.pt"))
    agent.reset_noise()
    loaded.reset_noise()
    obs = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(
        agent.act(obs, 0.0, np.random.default_rng(0)),
        loaded.act(obs, 0.0, np.random.default_rng(0)),
    )
    np.testing.assert_allclose(loaded.q_values(obs), agent.q_values(obs))


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_step", 0), ("per_alpha", 1.5), ("distributional", "iqn"), ("n_atoms", 1),
     ("v_max", -20.0), ("norm", "group"), ("lr_schedule", "linear"), ("amp", "fp8"),
     ("dropout", 1.0), ("reward_scale", 0.0), ("dueling", 1), ("lr_decay", 1.0),
     ("cpu_kernels", "on")],
)  # fmt: skip
def test_rainbow_config_rejects_bad_values_by_name(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"agent\.{field}: .* is invalid"):
        AgentConfig(**{field: value})  # type: ignore[arg-type]


def test_c51_projection_matches_the_triangular_kernel_on_random_inputs() -> None:
    gen = torch.Generator().manual_seed(0)
    support = torch.linspace(-3.0, 3.0, 13)
    probs = torch.rand(64, 13, generator=gen).softmax(dim=1)
    rewards = torch.randn(64, generator=gen) * 2
    discounts = torch.rand(64, generator=gen)
    terminated = (torch.rand(64, generator=gen) < 0.2).float()
    out = project_distribution(probs, rewards, discounts, terminated, support)
    tz = (rewards[:, None] + (discounts * (1 - terminated))[:, None] * support).clamp(-3.0, 3.0)
    kernel = (1 - (tz[:, None, :] - support[None, :, None]).abs() / 0.5).clamp(min=0)
    torch.testing.assert_close(out, (kernel * probs[:, None, :]).sum(dim=2))
