"""Gradient steps per second of ``DQNAgent.update`` against a bare PyTorch DQN loop.

Same MLP (obs 50 -> 256 -> 256 -> 7), batch 256, Adam, 2 torch threads, one process. The bare
loop is what one writes by hand (CleanRL style): online forward, target forward under no_grad,
smooth-L1 loss, zero_grad, backward, Adam step, on a fixed batch; it runs with torch's default
Adam (what one writes) and, for reference, with the fused Adam the agent uses. The agent is
measured on a fixed batch (update only) and with replay sampling from a full 200k-transition
buffer (sample + update, what training does; this is the headline ``ratio``). The runs take turns
in short bursts and a high percentile of the burst rates is kept, to damp noise from other
processes; the median of paired (same-cycle) ratios is reported beside it.

    python benchmarks/bench_learner.py [--seconds 40] [--threads 2] [--device cpu]

Writes benchmarks/results/learner.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nexlify.agent.config import PLAIN_DQN, AgentConfig
from nexlify.agent.dqn import DQNAgent
from nexlify.agent.replay import ReplayBatch, ReplayBuffer

OBS_DIM, N_ACTIONS, BATCH, N_ENVS = 50, 7, 256, 16
BURST = 10
RESULTS = Path(__file__).resolve().parent / "results" / "learner.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _burst_rate(step: Callable[[], object], device: torch.device) -> float:
    """Steps per second over one burst of ``BURST`` steps."""
    start = time.perf_counter()
    for _ in range(BURST):
        step()
    _sync(device)
    return BURST / (time.perf_counter() - start)


def _measure(
    runs: dict[str, Callable[[], object]], seconds: float, device: torch.device
) -> dict[str, np.ndarray]:
    """Burst rates of every run, the runs taking turns burst by burst for about ``seconds``.

    Taking turns at this grain means every run meets the same background load, so rates from
    the same cycle can be compared pairwise.
    """
    for step in runs.values():
        for _ in range(10):
            step()
    _sync(device)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for name, step in runs.items():
            rates[name].append(_burst_rate(step, device))
    return {name: np.asarray(r) for name, r in rates.items()}


def _filled_buffer(config: AgentConfig, device: torch.device) -> ReplayBuffer:
    buffer = ReplayBuffer.from_config(config, N_ENVS, OBS_DIM, device=device)
    rng = np.random.default_rng(0)
    C = buffer.capacity_per_env
    buffer.obs[:] = rng.standard_normal(buffer.obs.shape, dtype=np.float32)
    buffer.next_obs[:] = rng.standard_normal(buffer.next_obs.shape, dtype=np.float32)
    buffer.actions[:] = rng.integers(0, N_ACTIONS, (C, N_ENVS))
    buffer.rewards[:] = rng.standard_normal((C, N_ENVS), dtype=np.float32)
    buffer.terminated[:] = rng.random((C, N_ENVS)) < 0.01
    buffer.filled_rows = C
    buffer.sampler.on_add(C - 1)
    return buffer


def _bare_step(
    config: AgentConfig, batch: ReplayBatch, *, fused: bool = False
) -> Callable[[], object]:
    """A hand-written DQN step on the agent's MLP (separate copy, same initial weights)."""
    q_net = DQNAgent(OBS_DIM, N_ACTIONS, config, batch.obs_BD.device, seed=0).online
    target_net = copy.deepcopy(q_net)
    optimizer = torch.optim.Adam(
        q_net.parameters(), lr=config.learning_rate, eps=config.adam_eps, fused=fused or None
    )
    gamma = config.gamma

    def step() -> None:
        with torch.no_grad():
            next_q = target_net(batch.next_obs_BD).max(dim=1).values
            td_target = batch.rewards_B + gamma * next_q * (1.0 - batch.terminated_B)
        q = q_net(batch.obs_BD).gather(1, batch.actions_B.unsqueeze(1)).squeeze(1)
        loss = F.smooth_l1_loss(q, td_target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="timed seconds in all")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # plain DQN (the bare loop is plain DQN too), hidden (256, 256), batch 256, max_grad_norm 10
    config = AgentConfig(hidden_sizes=(256, 256), batch_size=256, **PLAIN_DQN)
    buffer = _filled_buffer(config, device)
    rng = np.random.default_rng(1)
    fixed_batch = buffer.sample(BATCH, rng)

    agent = DQNAgent(OBS_DIM, N_ACTIONS, config, device, seed=0)
    unclipped = DQNAgent(
        OBS_DIM, N_ACTIONS, replace(config, max_grad_norm=0.0), device, seed=0
    )  # the bare loop does not clip either
    bare = _bare_step(config, fixed_batch)

    runs: dict[str, Callable[[], object]] = {
        "bare": bare,
        "bare_fused_adam": _bare_step(config, fixed_batch, fused=True),
        "agent_update": lambda: agent.update(fixed_batch),
        "agent_sample_update": lambda: agent.update(buffer.sample(BATCH, rng)),
        "agent_update_no_sync": lambda: agent.update_no_sync(fixed_batch),
        "agent_update_unclipped": lambda: unclipped.update(fixed_batch),
        "sample_only": lambda: buffer.sample(BATCH, rng),
    }
    bursts = _measure(runs, args.seconds, device)
    # Background load only ever slows a burst down: a high percentile of the burst rates
    # estimates the undisturbed rate. The paired ratios (same cycle, adjacent in time) are a
    # second estimate that noise affects less; both are reported.
    rate = {name: float(np.percentile(r, 90)) for name, r in bursts.items()}

    def paired(name: str, baseline: str = "bare") -> float:
        return round(float(np.median(bursts[name] / bursts[baseline])), 3)

    result = {
        "agent_updates_per_s": round(rate["agent_sample_update"], 1),
        "bare_updates_per_s": round(rate["bare"], 1),
        "ratio": round(rate["agent_sample_update"] / rate["bare"], 3),
        "agent_updates_per_s_without_sampling": round(rate["agent_update"], 1),
        "ratio_without_sampling": round(rate["agent_update"] / rate["bare"], 3),
        "paired_median_ratio": paired("agent_sample_update"),
        "paired_median_ratio_without_sampling": paired("agent_update"),
        "bare_fused_adam_updates_per_s": round(rate["bare_fused_adam"], 1),
        "ratio_vs_bare_fused_adam": round(rate["agent_sample_update"] / rate["bare_fused_adam"], 3),
        "paired_median_ratio_vs_bare_fused_adam": paired("agent_sample_update", "bare_fused_adam"),
        "agent_update_no_sync_per_s": round(rate["agent_update_no_sync"], 1),
        "agent_update_unclipped_per_s": round(rate["agent_update_unclipped"], 1),
        "replay_samples_per_s": round(rate["sample_only"], 1),
        "statistic": f"90th percentile of {BURST}-step bursts, runs taking turns, {args.seconds}s",
        "bursts_per_run": len(bursts["bare"]),
        "setup": {
            "obs_dim": OBS_DIM,
            "n_actions": N_ACTIONS,
            "batch_size": BATCH,
            "hidden_sizes": list(config.hidden_sizes),
            "buffer_size": config.buffer_size,
            "n_envs": N_ENVS,
            "torch_threads": args.threads,
            "device": str(device),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
        },
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
