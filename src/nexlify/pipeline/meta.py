"""Reptile meta-learning of an initialisation that adapts to a new market window quickly.

Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms"): for each
outer step draw a task (a contiguous window of ``task_days`` of one venue's market, all of its
pairs), copy the meta-weights theta, train them on the task with the ordinary trainer (DQN
loss, fresh replay buffer and Adam, exploration from ``pipeline.retrain_eps_start`` as a
fine-tune starts), then move theta toward the adapted weights:
``theta <- theta + epsilon * (theta_task - theta)``, epsilon annealed linearly from
``meta_step_start`` to ``meta_step_end``. It is first-order: no gradient flows through the inner
loop, so the result only approximates the initialisation that adapts best.

Tasks keep the target market's pairs and features (the network's inputs and actions depend on
them); several venues with the same pairs widen the task distribution. The result is an
ordinary checkpoint (:func:`save_meta_init`), usable as a training unit's ``init_model``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nexlify.agent.dqn import DQNAgent
from nexlify.config import is_finite_number, is_int
from nexlify.data.market_data import MarketData
from nexlify.errors import ConfigError, DataError, TrainingError
from nexlify.pipeline.runs import UnitTask, checkpoint_extra
from nexlify.train.config import RunConfig, run_config_from_dict
from nexlify.train.run_state import make_env
from nexlify.train.trainer import Trainer, resolve_device

WeightState = dict[str, torch.Tensor]


@dataclass(frozen=True)
class MetaSpec:
    """How long the outer loop runs, what a task is and how far each step moves."""

    outer_steps: int = 30
    """Tasks drawn, one Reptile update each."""
    inner_episodes: int = 8
    """Training episodes on each task (the inner loop), from the meta-weights."""
    task_days: float = 180.0
    """Length of a task's window of candles."""
    meta_step_start: float = 1.0
    """Meta step size epsilon of the first outer step."""
    meta_step_end: float = 0.1
    """Meta step size of the last outer step (linear in between)."""
    seed: int = 0
    """Seed of the task draws, the initial weights and every inner loop."""

    def __post_init__(self) -> None:
        checks = (
            ("--outer-steps", self.outer_steps, _whole(self.outer_steps), "an integer >= 1"),
            ("--inner-episodes", self.inner_episodes, _whole(self.inner_episodes),
             "an integer >= 1"),
            ("--task-days", self.task_days, is_finite_number(self.task_days) and self.task_days > 0,
             "days > 0"),
            ("--meta-step-start", self.meta_step_start, _step_size(self.meta_step_start),
             "a step size in (0, 1]"),
            ("--meta-step-end", self.meta_step_end, _step_size(self.meta_step_end),
             "a step size in (0, 1]"),
            ("--seed", self.seed, isinstance(self.seed, int) and self.seed >= 0,
             "an integer >= 0"),
        )  # fmt: skip
        for option, value, ok, rule in checks:
            if not ok:
                raise ConfigError(f"meta-init {option}: {value!r} is not {rule}")

    def meta_step(self, step: int) -> float:
        """Epsilon of outer step ``step`` (0-based): start at 0, end at the last step."""
        if self.outer_steps == 1:
            return self.meta_step_start
        frac = step / (self.outer_steps - 1)
        return self.meta_step_start + frac * (self.meta_step_end - self.meta_step_start)

    def window_bars(self, bar_seconds: int) -> int:
        return max(2, round(self.task_days * 86400 / bar_seconds))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _whole(x: object) -> bool:
    return is_int(x) and x >= 1  # type: ignore[operator]


def _step_size(x: object) -> bool:
    return is_finite_number(x) and 0 < x <= 1  # type: ignore[operator]


@dataclass(frozen=True)
class MetaTask:
    """One task: bars ``[start, stop)`` of the market of ``venue``."""

    venue: str
    start: int
    stop: int

    def window(self, markets: Mapping[str, MarketData]) -> MarketData:
        return markets[self.venue].slice(self.start, self.stop)


def check_task_markets(markets: Mapping[str, MarketData], config: RunConfig, spec: MetaSpec) -> int:
    """The task window in bars, after checking that every venue's market can feed tasks of the
    same network shape; DataError/ConfigError name the venue and what is short."""
    if not markets:
        raise ConfigError("meta-init: no market to draw tasks from")
    first_venue, first = next(iter(markets.items()))
    bars = spec.window_bars(first.bar_seconds)
    env = config.market.env
    need = env.episode_length + env.obs_window + 1
    if bars < need:
        raise ConfigError(
            f"meta-init --task-days {spec.task_days:g}: {bars} bars of {first.timeframe}; one "
            f"training episode needs {need} (episode length {env.episode_length} + observation "
            "window + 1)"
        )
    per_episode = env.decisions(env.episode_length)
    transitions = spec.inner_episodes * per_episode
    starts = config.agent.learning_starts
    if transitions <= starts:
        raise ConfigError(
            f"meta-init --inner-episodes {spec.inner_episodes}: {spec.inner_episodes} episodes of "
            f"{env.episode_length} bars ({per_episode} decisions) are {transitions} "
            f"transitions, no more than agent.learning_starts {starts}: the inner loop would "
            f"make no gradient step and the meta-init would stay at its random start; give at "
            f"least {math.ceil(2 * starts / per_episode)} episodes"
        )
    for venue, market in markets.items():
        shape = (market.timeframe, market.n_pairs, market.feature_names)
        if shape != (first.timeframe, first.n_pairs, first.feature_names):
            raise DataError(
                f"meta-init venue {venue}: {market.n_pairs} pairs of {market.timeframe} with "
                f"features {list(market.feature_names)} differ from venue {first_venue}'s "
                f"{first.n_pairs} of {first.timeframe}; every task must fit the same network"
            )
        if market.n_bars < bars:
            start, end = market.span()
            raise DataError(
                f"meta-init venue {venue}: {market.n_bars} bars ({start:%Y-%m-%d} .. "
                f"{end:%Y-%m-%d}) are fewer than one task window of {spec.task_days:g} days "
                f"({bars} bars); lower --task-days or give more history"
            )
    return bars


def sample_tasks(
    markets: Mapping[str, MarketData], n_tasks: int, window_bars: int, seed: int
) -> list[MetaTask]:
    """``n_tasks`` windows of ``window_bars`` bars: a venue uniformly, then a start uniformly
    among that venue's windows. Same seed, same tasks."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 41]))
    venues = list(markets)
    tasks = []
    for _ in range(n_tasks):
        venue = venues[int(rng.integers(len(venues)))]
        start = int(rng.integers(markets[venue].n_bars - window_bars + 1))
        tasks.append(MetaTask(venue, start, start + window_bars))
    return tasks


def inner_seed(seed: int, step: int) -> int:
    """Seed of outer step ``step``'s inner loop (its env, replay sampling and noise)."""
    return int(np.random.SeedSequence([seed, 43, step]).generate_state(1)[0])


@dataclass(frozen=True)
class Adapted:
    """What an inner loop returns: the adapted online weights and how the training went."""

    state: WeightState
    loss: float
    """Mean TD loss of the last gradient steps of the inner loop."""
    gradient_steps: int
    score: float
    """Validation score of the adapted weights on the task's own window (in-sample)."""


InnerLoop = Callable[[WeightState, MarketData, int], Adapted]
"""(meta-weights, task window, seed) -> adapted weights; must not change the weights given."""


class TrainerInnerLoop:
    """The inner loop: the ordinary trainer on the task window from a copy of the meta-weights.

    One validation, at the end, on the task window itself and no weight averaging, so the
    trainer's result is the weights after the last gradient step, as Reptile needs.
    """

    def __init__(
        self, config: RunConfig, spec: MetaSpec, obs_dim: int, n_actions: int,
        log: logging.Logger,
    ) -> None:  # fmt: skip
        self.config = run_config_from_dict(
            {"train": {"eval_every": spec.inner_episodes, "swa": False, "resume_points": False,
                       "tensorboard": False, "early_stopping_patience": 0}},
            config,
        )  # fmt: skip
        self.episodes = spec.inner_episodes
        self.obs_dim, self.n_actions = obs_dim, n_actions
        self.device = resolve_device(config.train.device)
        self.log = log

    def __call__(self, meta_state: WeightState, window: MarketData, seed: int) -> Adapted:
        cfg = self.config
        agent = DQNAgent(self.obs_dim, self.n_actions, cfg.agent, self.device, seed=seed)
        agent.load_weights(meta_state)
        trainer = Trainer(window, window, cfg.market, cfg.agent, num_envs=cfg.train.num_envs,
                          eval_every=self.episodes, seed=seed, device=str(self.device),
                          logger=self.log, label="meta task",
                          practices=cfg.train)  # fmt: skip
        result = trainer.train(self.episodes, agent=agent, eps_start=cfg.pipeline.retrain_eps_start)
        last = result.history[-1] if result.history else {}
        return Adapted(
            state={k: v.detach().clone() for k, v in result.agent.online.state_dict().items()},
            loss=float(last.get("loss", math.nan)),
            gradient_steps=result.gradient_steps,
            score=result.best_score,
        )


def reptile_update(theta: WeightState, adapted: WeightState, epsilon: float) -> float:
    """``theta += epsilon * (adapted - theta)`` in place on the float tensors (integer buffers,
    e.g. batch-norm counters, take the adapted value); returns the L2 norm of the move."""
    moved_sq = 0.0
    for name, value in theta.items():
        target = adapted[name].to(value.device)
        if not value.is_floating_point():
            value.copy_(target)
            continue
        step = (target - value) * epsilon
        moved_sq += float(step.double().pow(2).sum())
        value.add_(step)
    return math.sqrt(moved_sq)


@dataclass
class MetaResult:
    """The meta-initialised agent and one record per outer step."""

    agent: DQNAgent
    steps: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _outer_step(
    k: int, task: MetaTask, markets: Mapping[str, MarketData], theta: WeightState,
    adapt: InnerLoop, spec: MetaSpec,
) -> dict[str, Any]:  # fmt: skip
    """Adapt a copy of ``theta`` to ``task``, move ``theta`` toward it; the step's record."""
    tick = time.perf_counter()
    window = task.window(markets)
    span = (window.open_time_iso(0), window.open_time_iso(window.n_bars - 1))
    adapted = adapt(theta, window, inner_seed(spec.seed, k))
    if not all(bool(torch.isfinite(v).all()) for v in adapted.state.values()):
        raise TrainingError(
            f"meta-init outer step {k + 1}: the inner loop on {task.venue} {span[0]} .. "
            f"{span[1]} gave non-finite weights; lower --learning-rate or --inner-episodes"
        )
    if adapted.gradient_steps == 0:
        raise TrainingError(
            f"meta-init outer step {k + 1}: the inner loop on {task.venue} {span[0]} .. {span[1]} "
            "made no gradient step (too few transitions after agent.learning_starts); raise "
            "--inner-episodes"
        )
    epsilon = spec.meta_step(k)
    moved = reptile_update(theta, adapted.state, epsilon)
    return {
        "step": k + 1, "venue": task.venue, "pairs": list(window.pairs), "start": span[0],
        "end": span[1], "bars": window.n_bars, "meta_step": epsilon,
        "inner_loss": _finite_or_none(adapted.loss),
        "inner_gradient_steps": adapted.gradient_steps,
        "task_score": _finite_or_none(adapted.score), "distance": moved,
        "seconds": time.perf_counter() - tick,
    }  # fmt: skip


def reptile(
    markets: Mapping[str, MarketData],
    config: RunConfig,
    spec: MetaSpec,
    *,
    log: logging.Logger | None = None,
    inner_loop: InnerLoop | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MetaResult:
    """Meta-train an initialisation on tasks drawn from ``markets`` (venue -> market, training
    bars only: the caller cuts them). ``inner_loop`` defaults to :class:`TrainerInnerLoop`."""
    started = time.perf_counter()
    log = log or logging.getLogger("nexlify.meta")
    bars = check_task_markets(markets, config, spec)
    tasks = sample_tasks(markets, spec.outer_steps, bars, spec.seed)
    probe = make_env(tasks[0].window(markets), config.market, 1, spec.seed)
    device = resolve_device(config.train.device)
    agent = DQNAgent(probe.obs_size, probe.n_actions, config.agent, device, seed=spec.seed)
    adapt = inner_loop or TrainerInnerLoop(config, spec, probe.obs_size, probe.n_actions, log)
    theta = {k: v.detach().clone() for k, v in agent.online.state_dict().items()}
    steps: list[dict[str, Any]] = []
    for k, task in enumerate(tasks):
        step = _outer_step(k, task, markets, theta, adapt, spec)
        steps.append(step)
        loss = "n/a" if step["inner_loss"] is None else f"{step['inner_loss']:.5f}"
        log.info("meta-init %d/%d | %s %s .. %s | inner loss %s | moved %.4f (eps %.3f)",
                 k + 1, len(tasks), task.venue, step["start"][:10], step["end"][:10], loss,
                 step["distance"], step["meta_step"])  # fmt: skip
        if progress is not None:
            progress(k + 1, len(tasks))
    agent.load_weights(theta)
    return MetaResult(agent, steps, time.perf_counter() - started)


def save_meta_init(
    path: str | Path,
    result: MetaResult,
    config: RunConfig,
    market: MarketData,
    spec: MetaSpec,
) -> Path:
    """Write the meta-initialisation as an ordinary checkpoint: the same ``extra`` a pipeline
    unit trained on ``market`` writes (pairs, timeframe, features, market config), plus a
    ``meta`` record of the spec and the outer steps."""
    unit = UnitTask(
        label="meta_init", seed=spec.seed, episodes=0, config=config, train_data=market,
        val_data=market, model_dir=str(Path(path).parent),
    )  # fmt: skip
    extra = {
        **checkpoint_extra(unit),
        "meta": {"method": "reptile (first-order)", "spec": spec.to_dict(),
                 "seconds": result.seconds, "steps": result.steps},
    }  # fmt: skip
    return result.agent.save(path, extra=extra)


def training_bars(market: MarketData, config: RunConfig) -> MarketData:
    """The bars a pipeline on ``market`` trains on: without its validation (and test) days, so
    a meta-init never saw the window the pipeline later selects on."""
    data = config.data
    rest = market.split_last_days(data.test_days)[0] if data.test_days > 0 else market
    return rest.split_last_days(data.validation_days)[0]
