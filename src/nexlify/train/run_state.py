"""Everything one training run holds while it runs, and its one resume-state contract.

:meth:`TrainingRun.state_dict` is what a resume point saves and :meth:`load_state_dict` what a
resumed run restores, both in the layout of ``training_state.pt`` (see
:mod:`nexlify.train.resume`), so a run interrupted by an older version still resumes.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nexlify.agent.dqn import DQNAgent
from nexlify.config import MarketConfig
from nexlify.data.market_data import MarketData
from nexlify.market.env import VecMarketEnv
from nexlify.train.callbacks import EarlyStopping
from nexlify.train.collector import Collector, EndedEpisodes
from nexlify.train.curriculum import TrainingMarkets
from nexlify.train.learner import LearnerStep
from nexlify.train.resume import learner_state, load_learner_state, load_replay_state, replay_state


@dataclass
class BestWeights:
    """The best validation so far and the online network's weights at it."""

    score: float = -math.inf
    metrics: dict[str, float] = field(default_factory=dict)
    episode: int = 0
    state: dict[str, Any] | None = None

    def offer(self, score: float, metrics: dict[str, float], episode: int, agent: DQNAgent) -> bool:
        """Keep ``agent``'s weights when ``score`` beats the best; whether it did."""
        if not score > self.score:
            return False
        self.score, self.metrics, self.episode = score, metrics, episode
        self.state = copy.deepcopy(agent.online.state_dict())
        return True


def make_env(data: MarketData, market: MarketConfig, num_envs: int, seed: int) -> VecMarketEnv:
    return VecMarketEnv(data, market, num_envs, seed=seed, copy_obs=False)


def round_seed(seed: int, round_index: int) -> int:
    """Env seed of training round ``round_index`` (>= 1) of the run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, 31, round_index]).generate_state(1)[0])


@dataclass
class TrainingRun:
    """The state of one run of :meth:`nexlify.train.trainer.Trainer.train`."""

    seed: int
    episodes: int
    """Episodes planned."""
    agent: DQNAgent
    collector: Collector
    learner: LearnerStep
    rng: np.random.Generator
    """Acting and replay sampling draw from it, in that order."""
    markets: TrainingMarkets | None
    """Each round's market with the curriculum or augmentation; None: one market throughout."""
    phase: int
    eps_start: float
    stopper: EarlyStopping
    next_eval: int
    done_episodes: int = 0
    rounds: int = 0
    recent_returns: list[float] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    best: BestWeights = field(default_factory=BestWeights)
    stopped_early: bool = False

    @property
    def planned_transitions(self) -> int:
        return self.learner.planned

    def epsilon(self) -> float:
        """Exploration for the next vector step (noisy nets explore by themselves)."""
        if self.agent.config.noisy:
            return 0.0
        progress = self.collector.transitions / self.planned_transitions
        return self.agent.epsilon_at(progress, start=self.eps_start)

    def count_episodes(self, ended: EndedEpisodes) -> None:
        self.recent_returns.extend(ended.return_pct_N[ended.ended_N].tolist())
        self.done_episodes += ended.count

    def start_next_round(self) -> None:
        """The next round's market (curriculum phase, fresh augmentation) in a new env."""
        assert self.markets is not None
        self.rounds += 1
        data, market, self.phase = self.markets.market_for(
            self.collector.transitions / self.planned_transitions
        )
        env = make_env(
            data, market, self.collector.env.num_envs, round_seed(self.seed, self.rounds)
        )
        self.collector.use_env(env)

    def state_dict(self, with_replay: bool) -> dict[str, Any]:
        learner = self.learner
        return {
            "learner": learner_state(self.agent),
            "rng": self.rng.bit_generator.state,
            "markets_rng": self.markets.rng.bit_generator.state if self.markets else None,
            "env": self.collector.env_state() if self.markets is None else None,
            "replay": replay_state(self.collector.buffer) if with_replay else None,
            "counters": {
                "transitions": self.collector.transitions,
                "rounds": self.rounds,
                "gradient_steps": learner.gradient_steps,
                "phase": self.phase,
                "done_episodes": self.done_episodes,
                "next_eval": self.next_eval,
            },
            "recent_returns": self.recent_returns,
            "losses": learner.losses,
            "history": self.history,
            "best": {
                "score": self.best.score,
                "metrics": self.best.metrics,
                "episode": self.best.episode,
                "state": self.best.state,
            },
            "stopper": [self.stopper.best, self.stopper.bad_validations],
            "averager": learner.averager_state(),
            "guard": learner.guard.state_dict(),
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Continue where :meth:`state_dict` was taken (at the end of a round)."""
        learner = self.learner
        load_learner_state(self.agent, saved["learner"])
        self.rng.bit_generator.state = saved["rng"]
        c = saved["counters"]
        self.collector.transitions = c["transitions"]
        learner.gradient_steps = c["gradient_steps"]
        self.done_episodes, self.rounds = c["done_episodes"], c["rounds"]
        self.next_eval, self.phase = c["next_eval"], c["phase"]
        self.recent_returns, self.history = saved["recent_returns"], saved["history"]
        learner.losses = saved["losses"]
        b = saved["best"]
        self.best = BestWeights(b["score"], b["metrics"], b["episode"], b["state"])
        self.stopper.best, self.stopper.bad_validations = saved["stopper"]
        learner.load_averager_state(saved["averager"])
        learner.guard.load_state_dict(saved["guard"])
        if self.markets is not None:  # the round change that followed the save
            self.markets.rng.bit_generator.state = saved["markets_rng"]
            self.start_next_round()
        else:
            self.collector.load_env_state(saved["env"])
        if saved["replay"] is not None:
            load_replay_state(self.collector.buffer, saved["replay"])
        else:
            learner.refill_until = self.collector.transitions + self.agent.config.learning_starts
