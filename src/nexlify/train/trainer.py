"""One training run: collect experience from N envs, learn, validate, keep the best weights.

An *episode* is one window of ``episode_length`` bars in one env; ``episodes`` counts finished
episodes over all envs. Validation runs the greedy policy over the held-out data (consecutive
windows of ``episode_length``) and scores it with the original tool's formula.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from nexlify.agent.config import AgentConfig
from nexlify.agent.dqn import DQNAgent
from nexlify.agent.replay import ReplayBuffer
from nexlify.config import MarketConfig
from nexlify.data.augment import AugmentConfig
from nexlify.data.market_data import MarketData
from nexlify.errors import TrainingError
from nexlify.market.env import VecMarketEnv
from nexlify.market.evaluate import EvaluationResult, evaluate_policy
from nexlify.system.batch_size import BatchPlanner, OOMBackoff
from nexlify.system.core_share import CoreShare
from nexlify.system.thermal import ThermalGuard
from nexlify.train.callbacks import EarlyStopping
from nexlify.train.config import TrainConfig
from nexlify.train.curriculum import TrainingMarkets
from nexlify.train.divergence import CHECK_EVERY, DivergenceGuard
from nexlify.train.resume import (
    ResumePoint,
    learner_state,
    load_learner_state,
    load_replay_state,
    replay_state,
)
from nexlify.train.swa import WeightAverager
from nexlify.train.tensorboard import TensorBoardLogger

ProgressCallback = Callable[[int, int], None]
"""Called with (episodes done, episodes planned) as training advances; a unit that stops early
ends with one call (done, done): the total lowered to what was done says it is over."""

ValidationCallback = Callable[[int, float], None]
"""Called with (episodes done, validation score) after every validation."""


@dataclass
class TrainResult:
    """What one run produced; ``agent`` holds the best weights found by validation."""

    seed: int
    agent: DQNAgent
    best_score: float
    best_metrics: dict[str, float]
    best_episode: int
    train_return_pct: float
    episodes: int
    transitions: int
    gradient_steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    """Whether early stopping ended the run before its planned episodes."""
    swa_score: float | None = None
    """Validation score of the SWA weights (None when SWA was off or never started)."""
    swa_selected: bool = False
    """Whether the SWA weights beat every checkpoint and are the run's result."""
    rollbacks: list[dict[str, float]] = field(default_factory=list)
    """Divergence rollbacks (gradient step, learning rate after it), see train.divergence."""


def envs_for(episodes: int, num_envs: int) -> int:
    """Envs to run so that ``episodes`` is a whole number of rounds (all envs end together).

    The largest divisor of ``episodes`` not above ``num_envs``; when that is below half of
    ``num_envs`` (e.g. a prime episode count), ``num_envs`` itself, and the last round then
    finishes a few more episodes than asked (the result reports the real count).
    """
    best = max(d for d in range(1, min(num_envs, episodes) + 1) if episodes % d == 0)
    return best if 2 * best >= min(num_envs, episodes) else num_envs


class GreedyActor(Protocol):
    """Anything with a greedy policy: a DQNAgent or an EnsembleAgent."""

    def greedy(self, obs_ND: np.ndarray) -> np.ndarray: ...


def greedy_policy(agent: GreedyActor) -> Callable[[np.ndarray, VecMarketEnv], np.ndarray]:
    """The agent's greedy policy in the form ``evaluate_policy`` takes."""
    return lambda obs, env: agent.greedy(obs)


def validate(agent: GreedyActor, data: MarketData, config: MarketConfig) -> EvaluationResult:
    """Greedy policy over the validation windows."""
    return evaluate_policy(greedy_policy(agent), data, config)


class Trainer:
    """Runs episodes of a ``VecMarketEnv`` through a ``DQNAgent`` and its replay buffer.

    ``practices`` (a :class:`TrainConfig`) switches on early stopping, SWA, augmentation and the
    curriculum as it says; without it the loop is the plain one (validate, keep the best).
    """

    def __init__(
        self,
        train_data: MarketData,
        val_data: MarketData,
        market: MarketConfig,
        agent_config: AgentConfig,
        *,
        num_envs: int,
        eval_every: int,
        seed: int,
        device: str = "cpu",
        logger: logging.Logger | None = None,
        label: str = "run",
        practices: TrainConfig | None = None,
        thermal: ThermalGuard | None = None,
        oom_backoff: OOMBackoff | None = None,
        batch_planner: BatchPlanner | None = None,
        tensorboard: TensorBoardLogger | None = None,
        core_share: CoreShare | None = None,
    ) -> None:
        self.train_data = train_data
        self.val_data = val_data
        self.market = market
        self.agent_config = agent_config
        self.num_envs = num_envs
        self.eval_every = eval_every
        self.seed = seed
        self.device = device
        self.log = logger or logging.getLogger("nexlify.train")
        self.label = label
        self.practices = practices
        self.thermal = thermal
        """Checked once per vector step: pauses or slows training while too hot."""
        self.core_share = core_share
        """Checked once per vector step: waits while other units have the cores (more units
        than cores in a worker pool, :mod:`nexlify.system.core_share`)."""
        self.oom_backoff = oom_backoff or OOMBackoff(
            practices.min_batch_size if practices else 16, device=device, log=self.log, label=label
        )
        """Runs each gradient step; halves the batch and retries on out-of-memory."""
        self.batch_planner = batch_planner
        """Sets batch size and replay capacity of a fresh agent from free memory (auto_batch)."""
        self.tensorboard = tensorboard
        """Receives every history entry (validation) as TensorBoard scalars."""

    def make_agent(self, obs_dim: int, n_actions: int) -> DQNAgent:
        return DQNAgent(obs_dim, n_actions, self.agent_config, self.device, seed=self.seed)

    def _markets(self, fresh: bool) -> TrainingMarkets | None:
        p = self.practices
        if p is None or not (p.augment or (p.curriculum and fresh)):
            return None
        augment = (
            AugmentConfig(
                price_jitter=p.augment_price_jitter,
                time_shift_bars=p.augment_time_shift,
                volume_scale=p.augment_volume_scale,
                regime_mix_prob=p.augment_regime_mix,
                segment_bars=max(self.market.env.episode_length, 168),
            )
            if p.augment
            else None
        )
        return TrainingMarkets(
            self.train_data,
            self.market,
            curriculum=p.curriculum and fresh,
            phases=p.curriculum_phases,
            position_scale=p.curriculum_position_scale,
            augment=augment,
            seed=self.seed,
            log=self.log,
        )

    def train(
        self,
        episodes: int,
        *,
        agent: DQNAgent | None = None,
        eps_start: float | None = None,
        progress: ProgressCallback | None = None,
        on_validation: ValidationCallback | None = None,
        resume: ResumePoint | None = None,
    ) -> TrainResult:
        """Train for ``episodes`` episodes (from ``agent`` if given, else a fresh one).

        ``on_validation(episodes_done, score)`` is called after every validation (a tuner can
        raise from it to prune the run). With ``resume``, the run's whole state is saved there
        at every validation, and a run that finds a saved state continues from it
        (:mod:`nexlify.train.resume`).
        """
        started = time.perf_counter()
        cfg = self.agent_config
        practices = self.practices
        num_envs = envs_for(episodes, self.num_envs)
        if num_envs != self.num_envs:
            self.log.debug("%s: %d envs so that %d episodes are whole rounds", self.label,
                           num_envs, episodes)  # fmt: skip
        markets = self._markets(fresh=agent is None)
        data, market, phase = (
            markets.market_for(0.0) if markets is not None else (self.train_data, self.market, 4)
        )
        env = VecMarketEnv(data, market, num_envs, seed=self.seed, copy_obs=False)
        if agent is None and self.batch_planner is not None:
            plan = self.batch_planner.plan(self.agent_config, env.obs_size, env.n_actions,
                                           num_envs, self.device)  # fmt: skip
            self.agent_config = plan.apply(self.agent_config)
            self.log.info("%s | %s", self.label, plan.describe())
        if agent is None:
            agent = self.make_agent(env.obs_size, env.n_actions)
        elif (agent.obs_dim, agent.n_actions) != (env.obs_size, env.n_actions):
            raise TrainingError(
                f"{self.label}: the model expects {agent.obs_dim} inputs and {agent.n_actions} "
                f"actions but this market gives {env.obs_size} and {env.n_actions}"
            )
        cfg = agent.config
        buffer = ReplayBuffer.from_config(cfg, num_envs, env.obs_size, device=agent.device)
        per = cfg.prioritized_replay
        rng = np.random.default_rng([self.seed, 7])
        eps0 = cfg.eps_start if eps_start is None else eps_start
        planned = episodes * env.episode_length
        stopper = EarlyStopping(
            practices.early_stopping_patience if practices else 0,
            practices.early_stopping_min_delta if practices else 0.0,
        )
        averager = WeightAverager(agent.online) if practices and practices.swa else None
        guard = DivergenceGuard(
            agent,
            max_rollbacks=practices.divergence_rollbacks if practices else 0,
            lr_factor=practices.divergence_lr_factor if practices else 0.5,
            log=self.log,
            label=self.label,
        )
        swa_start = practices.swa_start if practices else 1.0

        obs, _ = env.reset()
        transitions = 0
        gradient_steps = 0
        done_episodes = 0
        rounds = 0
        stopped_early = False
        next_eval = min(self.eval_every, episodes)
        recent_returns: list[float] = []
        losses: list[float] = []
        history: list[dict[str, float]] = []
        best_score = -math.inf
        best_state: dict[str, Any] | None = None
        best_metrics: dict[str, float] = {}
        best_episode = 0
        refill_until = 0
        saved = resume.load() if resume is not None else None
        if saved is not None:
            load_learner_state(agent, saved["learner"])
            rng.bit_generator.state = saved["rng"]
            c = saved["counters"]
            transitions, gradient_steps, done_episodes = (
                c["transitions"],
                c["gradient_steps"],
                c["done_episodes"],
            )
            rounds, next_eval, phase = c["rounds"], c["next_eval"], c["phase"]
            recent_returns, losses, history = (
                saved["recent_returns"],
                saved["losses"],
                saved["history"],
            )
            best = saved["best"]
            best_score, best_metrics = best["score"], best["metrics"]
            best_episode, best_state = best["episode"], best["state"]
            stopper.best, stopper.bad_validations = saved["stopper"]
            if averager is not None and saved["averager"] is not None:
                averager.averaged.load_state_dict(saved["averager"]["state"])
                averager.n_averaged = saved["averager"]["n"]
            guard.load_state_dict(saved["guard"])
            if markets is not None:  # the round change that followed the save
                markets.rng.bit_generator.state = saved["markets_rng"]
                rounds += 1
                data, market, phase = markets.market_for(transitions / planned)
                env = VecMarketEnv(data, market, num_envs, seed=_round_seed(self.seed, rounds),
                                   copy_obs=False)  # fmt: skip
                obs, _ = env.reset()
            else:
                env.load_state_dict(saved["env"])
                obs = saved["env"]["obs"].copy()
            if saved["replay"] is not None:
                load_replay_state(buffer, saved["replay"])
            else:
                refill_until = transitions + cfg.learning_starts
            note = (
                ""
                if saved["replay"] is not None
                else (
                    " (without the replay buffer: refilling it first; results differ from an "
                    "uninterrupted run)"
                )
            )
            self.log.info("%s | resumed at episode %d/%d from %s%s", self.label, done_episodes,
                          episodes, resume.path if resume else "", note)  # fmt: skip
        next_obs = np.empty_like(obs)

        while done_episodes < episodes and not stopped_early:
            if self.thermal is not None:
                self.thermal.check()
            if self.core_share is not None:
                self.core_share.wait_for_turn()
            progress_frac = transitions / planned
            epsilon = 0.0 if cfg.noisy else agent.epsilon_at(progress_frac, start=eps0)
            actions = agent.act(obs, epsilon, rng)
            new_obs, rewards, terminated, truncated, info = env.step(actions)
            np.copyto(next_obs, new_obs)
            if "final_obs" in info:
                rows = info["_final_obs"]
                next_obs[rows] = info["final_obs"][rows]
            buffer.add(obs, actions, rewards, next_obs, terminated, truncated)
            before = transitions
            transitions += num_envs
            due = cfg.gradient_steps_between(before, transitions)
            for _ in range(due if transitions >= refill_until else 0):
                if per:
                    frac = min(transitions / planned, 1.0)
                    beta = cfg.per_beta_start + frac * (cfg.per_beta_end - cfg.per_beta_start)
                    buffer.sampler.beta = beta  # type: ignore[attr-defined]
                batch, stats = self.oom_backoff.step(
                    cfg.batch_size, lambda n: buffer.sample(n, rng), agent.update_no_sync
                )
                gradient_steps += 1
                healthy = True
                if per and agent.last_td_error_B is not None:
                    td_B = agent.last_td_error_B.cpu().numpy()
                    healthy = bool(np.isfinite(td_B).all())
                    if healthy:  # a NaN priority would poison the sum tree
                        buffer.update_priorities(batch.indices, td_B)
                    else:
                        guard.rollback("a TD error became non-finite", gradient_steps)
                if healthy and gradient_steps % CHECK_EVERY == 0:
                    loss = float(stats[0])
                    healthy = guard.check(loss, gradient_steps)
                    if healthy:
                        losses.append(loss)
                if not healthy and averager is not None:
                    averager.restart_if_nonfinite(agent.online)
                if healthy and averager is not None and transitions >= swa_start * planned:
                    averager.update(agent.online)
            obs = new_obs
            if "episode" in info:
                finished = info["_episode"]
                recent_returns.extend(info["episode"]["return_pct"][finished].tolist())
                done_episodes += int(finished.sum())
                if progress is not None:
                    progress(min(done_episodes, episodes), episodes)
                if done_episodes >= next_eval or done_episodes >= episodes:
                    if not guard.weights_finite():  # never validate (or keep) broken weights
                        guard.rollback("a weight became non-finite", gradient_steps)
                        if averager is not None:
                            averager.restart_if_nonfinite(agent.online)
                    result = validate(agent, self.val_data, self.market)
                    score = result.score()
                    avg = result.average()
                    window = recent_returns[-max(num_envs, 10) :]
                    entry = {
                        "episode": float(done_episodes),
                        "epsilon": epsilon,
                        "train_return_pct": float(np.mean(window)) if window else 0.0,
                        "loss": float(np.mean(losses[-20:])) if losses else float("nan"),
                        "learning_rate": agent.lr_schedule.learning_rate,
                        "phase": float(phase),
                        "val_score": score,
                        **{f"val_{k}": v for k, v in avg.items()},
                    }
                    history.append(entry)
                    if self.tensorboard is not None:
                        self.tensorboard.log(entry)
                    improved = score > best_score
                    if improved:
                        best_score, best_metrics, best_episode = score, avg, done_episodes
                        best_state = copy.deepcopy(agent.online.state_dict())
                    agent.lr_schedule.after_validation(score)
                    if on_validation is not None:
                        on_validation(done_episodes, score)
                    stopped_early = stopper.step(score) and done_episodes < episodes
                    self.log.info(
                        "%s | episode %d/%d | train return %+.3f%% | eps %.3f | loss %.5f | "
                        "val score %.3f (return %+.3f%%, sharpe %.2f)%s%s",
                        self.label, done_episodes, episodes, entry["train_return_pct"], epsilon,
                        entry["loss"], score, avg["avg_return"], avg["avg_sharpe"],
                        " *best*" if improved else "",
                        " | early stop" if stopped_early else "",
                    )  # fmt: skip
                    next_eval = done_episodes + self.eval_every
                    if (resume is not None and finished.all() and not stopped_early
                            and done_episodes < episodes):  # fmt: skip
                        resume.save({
                            "learner": learner_state(agent),
                            "rng": rng.bit_generator.state,
                            "markets_rng": markets.rng.bit_generator.state if markets else None,
                            "env": env.state_dict() if markets is None else None,
                            "replay": replay_state(buffer) if resume.replay else None,
                            "counters": {"transitions": transitions, "rounds": rounds,
                                         "gradient_steps": gradient_steps, "phase": phase,
                                         "done_episodes": done_episodes, "next_eval": next_eval},
                            "recent_returns": recent_returns, "losses": losses,
                            "history": history,
                            "best": {"score": best_score, "metrics": best_metrics,
                                     "episode": best_episode, "state": best_state},
                            "stopper": [stopper.best, stopper.bad_validations],
                            "averager": {"state": averager.averaged.state_dict(),
                                         "n": averager.n_averaged} if averager else None,
                            "guard": guard.state_dict(),
                        })  # fmt: skip
                if markets is not None and finished.all() and not stopped_early:
                    rounds += 1
                    data, market, phase = markets.market_for(transitions / planned)
                    env = VecMarketEnv(data, market, num_envs, seed=_round_seed(self.seed, rounds),
                                       copy_obs=False)  # fmt: skip
                    obs, _ = env.reset()

        if stopped_early and progress is not None:
            progress(done_episodes, done_episodes)  # over: a bar stops here, not at 300
        swa_score: float | None = None
        swa_selected = False
        if averager is not None and averager.n_averaged > 0:
            swa_state = self._swa_state(agent, averager, buffer)
            current = copy.deepcopy(agent.online.state_dict())
            agent.online.load_state_dict(swa_state)
            result = validate(agent, self.val_data, self.market)
            swa_score = result.score()
            history.append({"episode": float(done_episodes), "swa": 1.0, "val_score": swa_score,
                            **{f"val_{k}": v for k, v in result.average().items()}})  # fmt: skip
            if self.tensorboard is not None:
                self.tensorboard.log(history[-1])
            self.log.info("%s | SWA of %d weight sets | val score %.3f%s", self.label,
                          averager.n_averaged, swa_score,
                          " *best*" if swa_score > best_score else "")  # fmt: skip
            if swa_score > best_score:
                best_score, best_metrics = swa_score, result.average()
                best_episode, best_state, swa_selected = done_episodes, swa_state, True
            else:
                agent.online.load_state_dict(current)

        if best_state is not None:
            agent.load_weights(best_state)
        tail = recent_returns[-max(len(recent_returns) // 10, 1) :]
        return TrainResult(
            seed=self.seed,
            agent=agent,
            best_score=best_score,
            best_metrics=best_metrics,
            best_episode=best_episode,
            train_return_pct=float(np.mean(tail)) if tail else 0.0,
            episodes=done_episodes,
            transitions=transitions,
            gradient_steps=gradient_steps,
            seconds=time.perf_counter() - started,
            history=history,
            stopped_early=stopped_early,
            swa_score=swa_score,
            swa_selected=swa_selected,
            rollbacks=guard.events,
        )

    @staticmethod
    def _swa_state(
        agent: DQNAgent, averager: WeightAverager, buffer: ReplayBuffer
    ) -> dict[str, torch.Tensor]:
        if agent.config.norm == "batch":
            rows = buffer.obs[: buffer.filled_rows].reshape(-1, buffer.obs_dim)
            averager.recompute_batch_norm(rows[-4096:], agent.device)
        return averager.state_dict()


def _round_seed(seed: int, round_index: int) -> int:
    """Env seed of training round ``round_index`` (>= 1) of the run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, 31, round_index]).generate_state(1)[0])


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available, else MPS if available, else CPU; explicit names checked."""
    from nexlify.errors import ConfigError

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device: {name!r} is not a device (auto, cpu, cuda, cuda:N, mps)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {name!r} requested but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device: {name!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("device: 'mps' requested but MPS is not available here")
    return device
