"""The learner's trained weights, pinned: a few hundred gradient steps from a fixed seed, for
plain DQN, PER + 3-step, C51, QR-DQN and full Rainbow, against numbers recorded from the code
before the learner's fast path was moved behind ``agent.cpu_kernels``.

A refactor of the learner must train to the same weights (bit for bit, or within float-order
noise: rtol 1e-5, atol 1e-7 on each parameter's sum, sum of squares and first values). The
fixture was recorded on an x86-64 CPU with one torch thread; a CPU with other vector units may
round the compiled kernels' and BLAS's sums in another order.

Record (only when a behaviour change is intended, and say so in the commit)::

    .venv/bin/python -m tests.test_learner_pinned --record
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nexlify.agent.config import PLAIN_DQN, AgentConfig
from nexlify.agent.dqn import DQNAgent
from nexlify.agent.replay import ReplayBuffer

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pinned_learner.json"
OBS_DIM, N_ACTIONS, N_ENVS, ROWS = 12, 5, 4, 64
GRADIENT_STEPS = 300
N_FIRST = 8
"""Leading values of each flattened parameter stored beside its sum and sum of squares."""

_PLAIN = AgentConfig(**PLAIN_DQN)  # type: ignore[arg-type]
_SMALL: dict[str, Any] = {
    "hidden_sizes": (32, 32),
    "batch_size": 32,
    "buffer_size": N_ENVS * ROWS,
    "target_update_interval": 50,
}
CONFIGS: dict[str, AgentConfig] = {
    "plain_dqn": dataclasses.replace(_PLAIN, **_SMALL),
    "per_nstep": dataclasses.replace(_PLAIN, prioritized_replay=True, n_step=3, **_SMALL),
    "c51": dataclasses.replace(_PLAIN, distributional="c51", n_atoms=51, **_SMALL),
    "per_nstep_c51": dataclasses.replace(
        _PLAIN, prioritized_replay=True, n_step=3, distributional="c51", **_SMALL
    ),
    "qr": dataclasses.replace(_PLAIN, distributional="qr", n_atoms=16, **_SMALL),
    # double DQN, dueling, PER, 3-step (the defaults) plus noisy nets and C51.
    "full_rainbow": AgentConfig(noisy=True, distributional="c51", **_SMALL),
}


def filled_buffer(config: AgentConfig, seed: int) -> ReplayBuffer:
    """A replay buffer of ``ROWS`` rows of random transitions (rewards of a few units after
    ``reward_scale``, some terminations and truncations), the same for every config."""
    buffer = ReplayBuffer.from_config(config, N_ENVS, OBS_DIM)
    rng = np.random.default_rng(seed)
    for _ in range(ROWS):
        buffer.add(
            rng.standard_normal((N_ENVS, OBS_DIM), dtype=np.float32),
            rng.integers(0, N_ACTIONS, N_ENVS),
            (rng.standard_normal(N_ENVS) * 2.0 / config.reward_scale).astype(np.float32),
            rng.standard_normal((N_ENVS, OBS_DIM), dtype=np.float32),
            rng.random(N_ENVS) < 0.05,
            rng.random(N_ENVS) < 0.05,
        )
    return buffer


def train(config: AgentConfig, steps: int = GRADIENT_STEPS, seed: int = 0) -> DQNAgent:
    """An agent after ``steps`` gradient steps on :func:`filled_buffer`, sampling as training
    does (PER: priorities written back, beta annealed to its end over the run)."""
    agent = DQNAgent(OBS_DIM, N_ACTIONS, config, seed=seed)
    buffer = filled_buffer(config, seed)
    rng = np.random.default_rng(seed + 1)
    sampler = buffer.sampler
    for step in range(steps):
        if config.prioritized_replay:
            frac = step / max(steps - 1, 1)
            sampler.beta = config.per_beta_start + frac * (  # type: ignore[attr-defined]
                config.per_beta_end - config.per_beta_start
            )
        batch = buffer.sample(config.batch_size, rng)
        stats = agent.update(batch)
        if not np.isfinite(stats["loss"]):
            raise AssertionError(f"loss is {stats['loss']} at gradient step {step}")
        if agent.last_td_error_B is not None:
            buffer.update_priorities(batch.indices, agent.last_td_error_B.numpy())
    return agent


def weight_summary(agent: DQNAgent) -> dict[str, list[float]]:
    """Per online and target parameter: [sum, sum of squares, first ``N_FIRST`` values], in
    float64."""
    summary: dict[str, list[float]] = {}
    for prefix, net in (("online", agent.online), ("target", agent.target)):
        for name, param in net.named_parameters():
            flat = param.detach().double().flatten()
            head = flat[:N_FIRST].tolist()
            summary[f"{prefix}.{name}"] = [float(flat.sum()), float((flat * flat).sum()), *head]
    return summary


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_learner_trains_to_the_pinned_weights(name: str) -> None:
    pinned = json.loads(FIXTURE.read_text())[name]
    got = weight_summary(train(CONFIGS[name]))
    assert sorted(got) == sorted(pinned)
    for key, want in pinned.items():
        np.testing.assert_allclose(got[key], want, rtol=1e-5, atol=1e-7, err_msg=f"{name} {key}")


def record() -> None:
    """Write the fixture from the current code (one torch thread, as the test runs)."""
    torch.set_num_threads(1)
    fixture = {name: weight_summary(train(config)) for name, config in CONFIGS.items()}
    FIXTURE.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        raise SystemExit("usage: python -m tests.test_learner_pinned --record")
    record()
