"""One training run: collect experience from N envs, learn, validate, keep the best weights.

An *episode* is one window of ``episode_length`` bars in one env; ``episodes`` counts finished
episodes over all envs. Validation runs the greedy policy over the held-out data (consecutive
windows of ``episode_length``) and scores it with the original tool's formula.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import cast

import numpy as np
import torch

from nexlify.agent.config import AgentConfig
from nexlify.agent.dqn import DQNAgent
from nexlify.agent.replay import ReplayBuffer
from nexlify.config import MarketConfig
from nexlify.data.market_data import MarketData
from nexlify.errors import TrainingError
from nexlify.market.env import VecMarketEnv
from nexlify.system.core_share import CoreShare
from nexlify.system.thermal import ThermalGuard
from nexlify.train.batch_size import BatchPlanner, OOMBackoff
from nexlify.train.callbacks import (
    Callback,
    EarlyStopping,
    Imagination,
    MachineGuards,
    NextRoundMarket,
    ResumePoints,
    TensorBoardCallback,
    Validation,
    ValidationCallback,
    resume_note,
    validate,
)
from nexlify.train.collector import Collector
from nexlify.train.config import TrainConfig
from nexlify.train.curriculum import TrainingMarkets
from nexlify.train.divergence import DivergenceGuard
from nexlify.train.dyna import DynaPlanner
from nexlify.train.learner import LearnerStep
from nexlify.train.resume import ResumePoint
from nexlify.train.run_state import TrainingRun, make_env
from nexlify.train.swa import WeightAverager
from nexlify.train.tensorboard import TensorBoardLogger
from nexlify.train.world_model import MarketLayout

ProgressCallback = Callable[[int, int], None]
"""Called with (episodes done, episodes planned) as training advances; a unit that stops early
ends with one call (done, done): the total lowered to what was done says it is over."""


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
        augment = None
        if p.augment:
            segment = p.augmentation.segment_bars or max(self.market.env.episode_length, 168)
            augment = replace(p.augmentation, segment_bars=segment)
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
        run = self._start(episodes, agent, eps_start)
        callbacks = self._callbacks(resume)
        validation = Validation(self.val_data, self.market, self.eval_every, log=self.log,
                                label=self.label, on_validation=on_validation,
                                callbacks=callbacks)  # fmt: skip
        if resume is not None:
            self._resume(run, resume)
        dyna = self._dyna(run)
        if dyna is not None:
            callbacks.append(Imagination(dyna, self.tensorboard))
        while run.done_episodes < episodes and not run.stopped_early:
            for callback in callbacks:
                callback.before_vector_step(run)
            epsilon = run.epsilon()
            before = run.collector.transitions
            ended = run.collector.step(run.agent, epsilon)
            for callback in callbacks:
                callback.after_collect(run)
            run.learner.learn(before, run.collector.transitions)
            if ended is None:
                continue
            run.count_episodes(ended)
            if progress is not None:
                progress(min(run.done_episodes, episodes), episodes)
            if validation.due(run):
                validation.run(run, epsilon)
                for callback in callbacks:
                    callback.after_validation(run, ended)
            if ended.all_envs and not run.stopped_early:
                for callback in callbacks:
                    callback.end_of_round(run)
        if run.stopped_early and progress is not None:
            progress(run.done_episodes, run.done_episodes)  # over: a bar stops here, not at 300
        if run.best.state is None:
            self._keep_untrained(run)
        swa_score, swa_selected = self._finish_swa(run)
        return self._result(run, swa_score, swa_selected, time.perf_counter() - started)

    def _keep_untrained(self, run: TrainingRun) -> None:
        """A run that never took a gradient step has only its random start to return: its last
        validation becomes the result, and the log says plainly what the model is."""
        last = next((h for h in reversed(run.history) if h.get("untrained")), None)
        if last is None:
            return
        self.log.warning(
            "%s made no gradient step in %d transitions (agent.learning_starts %d): its model "
            "is the untrained network; give it more episodes", self.label,
            run.collector.transitions, run.agent.config.learning_starts,
        )  # fmt: skip
        metrics = {k[4:]: v for k, v in last.items() if k.startswith("val_") and k != "val_score"}
        run.best.offer(last["val_score"], metrics, int(last["episode"]), run.agent)

    def _start(self, episodes: int, agent: DQNAgent | None, eps_start: float | None) -> TrainingRun:
        """The run's env, agent, replay buffer, collector and learner, before any step."""
        practices = self.practices
        num_envs = envs_for(episodes, self.num_envs)
        if num_envs != self.num_envs:
            self.log.debug("%s: %d envs so that %d episodes are whole rounds", self.label,
                           num_envs, episodes)  # fmt: skip
        markets = self._markets(fresh=agent is None)
        data, market, phase = (
            markets.market_for(0.0) if markets is not None else (self.train_data, self.market, 4)
        )
        env = make_env(data, market, num_envs, self.seed)
        agent = self._agent_for(env, num_envs, agent)
        cfg = agent.config
        buffer = ReplayBuffer.from_config(cfg, num_envs, env.obs_size, device=agent.device)
        rng = np.random.default_rng([self.seed, 7])
        guard = DivergenceGuard(
            agent,
            max_rollbacks=practices.divergence_rollbacks if practices else 0,
            lr_factor=practices.divergence_lr_factor if practices else 0.5,
            log=self.log,
            label=self.label,
        )
        learner = LearnerStep(
            agent,
            buffer,
            rng,
            oom_backoff=self.oom_backoff,
            guard=guard,
            averager=WeightAverager(agent.online) if practices and practices.swa else None,
            planned_transitions=episodes * env.decisions_per_episode,
            swa_start=practices.swa_start if practices else 1.0,
        )
        stopper = EarlyStopping(
            practices.early_stopping_patience if practices else 0,
            practices.early_stopping_min_delta if practices else 0.0,
        )
        return TrainingRun(
            seed=self.seed,
            episodes=episodes,
            agent=agent,
            collector=Collector(env, buffer, rng),
            learner=learner,
            rng=rng,
            markets=markets,
            phase=phase,
            eps_start=cfg.eps_start if eps_start is None else eps_start,
            stopper=stopper,
            next_eval=min(self.eval_every, episodes),
        )

    def _dyna(self, run: TrainingRun) -> DynaPlanner | None:
        """The Dyna planner when ``dyna_ratio`` > 0 (None: the loop is the plain one); the
        learner then samples from real and imagined replay. After a resume it starts afresh:
        the model is refit at once and imagined replay refills (not an exact resume)."""
        p = self.practices
        if p is None or p.dyna_ratio == 0:
            return None
        env = run.collector.env
        dyna = DynaPlanner(run.collector.buffer,
                           MarketLayout(env.window, env.data.n_pairs, env.data.n_features),
                           env.n_actions, ratio=p.dyna_ratio, refit_every=p.dyna_refit_every,
                           seed=self.seed, log=self.log, label=self.label)  # fmt: skip
        # LearnerStep only calls sample(), update_priorities() and sampler, which it provides
        run.learner.buffer = cast(ReplayBuffer, dyna)
        return dyna

    def _agent_for(self, env: VecMarketEnv, num_envs: int, agent: DQNAgent | None) -> DQNAgent:
        """A fresh agent sized for ``env`` (batch planned when asked), or ``agent`` checked."""
        if agent is None:
            if self.batch_planner is not None:
                plan = self.batch_planner.plan(self.agent_config, env.obs_size, env.n_actions,
                                               num_envs, self.device)  # fmt: skip
                self.agent_config = plan.apply(self.agent_config)
                self.log.info("%s | %s", self.label, plan.describe())
            return self.make_agent(env.obs_size, env.n_actions)
        if (agent.obs_dim, agent.n_actions) != (env.obs_size, env.n_actions):
            raise TrainingError(
                f"{self.label}: the model expects {agent.obs_dim} inputs and {agent.n_actions} "
                f"actions but this market gives {env.obs_size} and {env.n_actions}"
            )
        return agent

    def _callbacks(self, resume: ResumePoint | None) -> list[Callback]:
        callbacks: list[Callback] = [MachineGuards(self.thermal, self.core_share)]
        if self.tensorboard is not None:
            callbacks.append(TensorBoardCallback(self.tensorboard))
        if resume is not None:
            callbacks.append(ResumePoints(resume))
        callbacks.append(NextRoundMarket())
        return callbacks

    def _resume(self, run: TrainingRun, resume: ResumePoint) -> None:
        saved = resume.load()
        if saved is None:
            return
        run.load_state_dict(saved)
        self.log.info("%s | resumed at episode %d/%d from %s%s", self.label, run.done_episodes,
                      run.episodes, resume.path, resume_note(saved))  # fmt: skip

    def _finish_swa(self, run: TrainingRun) -> tuple[float | None, bool]:
        """Validate the SWA average; it becomes the run's result when it beats every
        checkpoint. Returns (its score or None, whether it was selected)."""
        averager = run.learner.averager
        if averager is None or averager.n_averaged == 0:
            return None, False
        agent = run.agent
        swa_state = self._swa_state(agent, averager, run.collector.buffer)
        current = copy.deepcopy(agent.online.state_dict())
        agent.online.load_state_dict(swa_state)
        result = validate(agent, self.val_data, self.market)
        swa_score = result.score()
        run.history.append({"episode": float(run.done_episodes), "swa": 1.0,
                            "val_score": swa_score,
                            **{f"val_{k}": v for k, v in result.average().items()}})  # fmt: skip
        if self.tensorboard is not None:
            self.tensorboard.log(run.history[-1])
        best = run.best
        self.log.info("%s | SWA of %d weight sets | val score %.3f%s", self.label,
                      averager.n_averaged, swa_score,
                      " *best*" if swa_score > best.score else "")  # fmt: skip
        if swa_score > best.score:
            best.score, best.metrics = swa_score, result.average()
            best.episode, best.state = run.done_episodes, swa_state
            return swa_score, True
        agent.online.load_state_dict(current)
        return swa_score, False

    def _result(
        self, run: TrainingRun, swa_score: float | None, swa_selected: bool, seconds: float
    ) -> TrainResult:
        if run.best.state is not None:
            run.agent.load_weights(run.best.state)
        returns = run.recent_returns
        tail = returns[-max(len(returns) // 10, 1) :]
        return TrainResult(
            seed=self.seed,
            agent=run.agent,
            best_score=run.best.score,
            best_metrics=run.best.metrics,
            best_episode=run.best.episode,
            train_return_pct=float(np.mean(tail)) if tail else 0.0,
            episodes=run.done_episodes,
            transitions=run.collector.transitions,
            gradient_steps=run.learner.gradient_steps,
            seconds=seconds,
            history=run.history,
            stopped_early=run.stopped_early,
            swa_score=swa_score,
            swa_selected=swa_selected,
            rollbacks=run.learner.guard.events,
        )

    @staticmethod
    def _swa_state(
        agent: DQNAgent, averager: WeightAverager, buffer: ReplayBuffer
    ) -> dict[str, torch.Tensor]:
        if agent.config.norm == "batch":
            rows = buffer.obs[: buffer.filled_rows].reshape(-1, buffer.obs_dim)
            averager.recompute_batch_norm(rows[-4096:], agent.device)
        return averager.state_dict()


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
