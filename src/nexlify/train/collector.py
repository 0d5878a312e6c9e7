"""The collector: steps N envs with the agent's actions and writes every transition to replay.

It owns the env, the current observations and the count of transitions collected. The next
observation stored for a transition is the env's ``final_obs`` where an episode just ended (the
env has already reset that row), so bootstrapping never crosses an episode boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nexlify.agent.dqn import DQNAgent
from nexlify.agent.replay import ReplayBuffer
from nexlify.market.env import VecMarketEnv


@dataclass
class EndedEpisodes:
    """Episodes that ended in one vector step."""

    ended_N: np.ndarray
    """bool [N]: which envs finished an episode."""
    return_pct_N: np.ndarray
    """Each env's episode return in percent (meaningful where ``ended_N``)."""

    @property
    def count(self) -> int:
        return int(self.ended_N.sum())

    @property
    def all_envs(self) -> bool:
        """Every env ended together: the end of a round (validation and resume happen here)."""
        return bool(self.ended_N.all())


class Collector:
    """Experience collection for one training run."""

    def __init__(self, env: VecMarketEnv, buffer: ReplayBuffer, rng: np.random.Generator) -> None:
        self.buffer = buffer
        self.rng = rng
        """The run's generator (shared with replay sampling, so the order of draws is fixed)."""
        self.transitions = 0
        self.env = env
        self.obs, _ = env.reset()
        self._next_obs = np.empty_like(self.obs)

    def use_env(self, env: VecMarketEnv) -> None:
        """Continue on a new env (the curriculum's next round), from its first observation."""
        self.env = env
        self.obs, _ = env.reset()

    def step(self, agent: DQNAgent, epsilon: float) -> EndedEpisodes | None:
        """One vector step: act, step every env, store the transitions; the episodes that
        ended in it, if any."""
        actions = agent.act(self.obs, epsilon, self.rng)
        new_obs, rewards, terminated, truncated, info = self.env.step(actions)
        np.copyto(self._next_obs, new_obs)
        if "final_obs" in info:
            rows = info["_final_obs"]
            self._next_obs[rows] = info["final_obs"][rows]
        self.buffer.add(self.obs, actions, rewards, self._next_obs, terminated, truncated)
        self.transitions += self.env.num_envs
        self.obs = new_obs
        if "episode" not in info:
            return None
        return EndedEpisodes(info["_episode"], info["episode"]["return_pct"])

    def env_state(self) -> dict[str, Any]:
        """The env's state, observations included (restored by :meth:`load_env_state`)."""
        return self.env.state_dict()

    def load_env_state(self, state: dict[str, Any]) -> None:
        self.env.load_state_dict(state)
        self.obs = state["obs"].copy()
