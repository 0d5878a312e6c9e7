"""What the training loop calls around its core (collect, learn, validate).

- :class:`EarlyStopping`: stop when the validation score stops improving.
- :class:`Validation`: greedy validation when due, the best weights, the learning-rate
  schedule, early stopping and the log line.
- :class:`Callback` and its kinds: machine guards before each vector step (thermal, core
  share), TensorBoard after each validation, resume points after a validation that ends a
  round, and the curriculum's next market at the end of each round.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nexlify.config import MarketConfig
from nexlify.data.market_data import MarketData
from nexlify.market.evaluate import EvaluationResult, GreedyActor, evaluate_policy, greedy_policy

if TYPE_CHECKING:
    from nexlify.system.core_share import CoreShare
    from nexlify.system.thermal import ThermalGuard
    from nexlify.train.collector import EndedEpisodes
    from nexlify.train.dyna import DynaPlanner
    from nexlify.train.resume import ResumePoint
    from nexlify.train.run_state import TrainingRun
    from nexlify.train.tensorboard import TensorBoardLogger

ValidationCallback = Callable[[int, float], None]
"""Called with (episodes done, validation score) after every validation."""


@dataclass
class EarlyStopping:
    """Stop when ``patience`` validations in a row fail to beat the best by more than min_delta.

    ``patience`` 0 never stops. The score is "higher is better" (the validation score).
    """

    patience: int
    min_delta: float = 0.0
    best: float = -math.inf
    bad_validations: int = 0

    def step(self, score: float) -> bool:
        """Record one validation score; True when training should stop."""
        if score > self.best + self.min_delta:
            self.best = score
            self.bad_validations = 0
            return False
        self.bad_validations += 1
        return self.patience > 0 and self.bad_validations >= self.patience


def validate(agent: GreedyActor, data: MarketData, config: MarketConfig) -> EvaluationResult:
    """Greedy policy over the validation windows."""
    return evaluate_policy(greedy_policy(agent), data, config)


class Callback:
    """Hooks of the training loop; each does nothing unless a subclass overrides it."""

    def before_vector_step(self, run: TrainingRun) -> None:
        """Before each vector step of collection."""

    def after_collect(self, run: TrainingRun) -> None:
        """After a vector step's transitions are in replay, before the learner's steps."""

    def on_validation(self, run: TrainingRun, entry: dict[str, float]) -> None:
        """Right after a validation's history entry is made (before it is judged)."""

    def after_validation(self, run: TrainingRun, ended: EndedEpisodes) -> None:
        """After a validation has been judged and logged."""

    def end_of_round(self, run: TrainingRun) -> None:
        """When every env has just finished an episode and training goes on."""


class Validation:
    """Validates when due; keeps the best weights; steps the LR schedule and early stopping."""

    def __init__(
        self,
        val_data: MarketData,
        market: MarketConfig,
        eval_every: int,
        *,
        log: logging.Logger,
        label: str,
        on_validation: ValidationCallback | None,
        callbacks: list[Callback],
    ) -> None:
        self.val_data = val_data
        self.market = market
        self.eval_every = eval_every
        self.log = log
        self.label = label
        self.on_validation = on_validation
        self.callbacks = callbacks

    def due(self, run: TrainingRun) -> bool:
        return run.done_episodes >= run.next_eval or run.done_episodes >= run.episodes

    def run(self, run: TrainingRun, epsilon: float) -> None:
        run.learner.ensure_finite_weights()
        result = validate(run.agent, self.val_data, self.market)
        score = result.score()
        avg = result.average()
        entry = self._entry(run, epsilon, score, avg)
        run.history.append(entry)
        for callback in self.callbacks:
            callback.on_validation(run, entry)
        # A network that has taken no gradient step is its random start: it is scored and
        # logged, but neither kept as the best nor counted by the LR schedule or early stopping.
        untrained = run.agent.n_updates == 0
        improved = False
        if untrained:
            entry["untrained"] = 1.0
        else:
            improved = run.best.offer(score, avg, run.done_episodes, run.agent)
            run.agent.lr_schedule.after_validation(score)
            run.stopped_early = run.stopper.step(score) and run.done_episodes < run.episodes
        if self.on_validation is not None:
            self.on_validation(run.done_episodes, score)
        self.log.info(
            "%s | episode %d/%d | train return %+.3f%% | eps %.3f | loss %.5f | "
            "val score %.3f (return %+.3f%%, sharpe %.2f)%s%s",
            self.label, run.done_episodes, run.episodes, entry["train_return_pct"], epsilon,
            entry["loss"], score, avg["avg_return"], avg["avg_sharpe"],
            " | untrained (no gradient step yet): not a candidate" if untrained else
            " *best*" if improved else "", " | early stop" if run.stopped_early else "",
        )  # fmt: skip
        run.next_eval = run.done_episodes + self.eval_every

    @staticmethod
    def _entry(
        run: TrainingRun, epsilon: float, score: float, avg: dict[str, float]
    ) -> dict[str, float]:
        window = run.recent_returns[-max(run.collector.env.num_envs, 10) :]
        losses = run.learner.losses
        return {
            "episode": float(run.done_episodes),
            "epsilon": epsilon,
            "train_return_pct": float(np.mean(window)) if window else 0.0,
            "loss": float(np.mean(losses[-20:])) if losses else float("nan"),
            "learning_rate": run.agent.lr_schedule.learning_rate,
            "phase": float(run.phase),
            "val_score": score,
            **{f"val_{k}": v for k, v in avg.items()},
        }


class MachineGuards(Callback):
    """Waits while the machine is too hot or while other units have the cores."""

    def __init__(self, thermal: ThermalGuard | None, core_share: CoreShare | None) -> None:
        self.thermal = thermal
        self.core_share = core_share

    def before_vector_step(self, run: TrainingRun) -> None:
        if self.thermal is not None:
            self.thermal.check()
        if self.core_share is not None:
            self.core_share.wait_for_turn()


class TensorBoardCallback(Callback):
    """Every validation's history entry as TensorBoard scalars."""

    def __init__(self, writer: TensorBoardLogger) -> None:
        self.writer = writer

    def on_validation(self, run: TrainingRun, entry: dict[str, float]) -> None:
        self.writer.log(entry)


class Imagination(Callback):
    """Dyna: imagined transitions after each collection, and the market model's error vs
    persistence in the run's history (and TensorBoard) once per fit."""

    def __init__(self, planner: DynaPlanner, writer: TensorBoardLogger | None) -> None:
        self.planner = planner
        self.writer = writer

    def after_collect(self, run: TrainingRun) -> None:
        entry = self.planner.after_collect(run.collector.transitions, run.done_episodes)
        if entry is None:
            return
        run.history.append(entry)
        if self.writer is not None:
            self.writer.log(entry)


class ResumePoints(Callback):
    """Saves the run's whole state after a validation that ends a round (not the last)."""

    def __init__(self, point: ResumePoint) -> None:
        self.point = point

    def after_validation(self, run: TrainingRun, ended: EndedEpisodes) -> None:
        if ended.all_envs and not run.stopped_early and run.done_episodes < run.episodes:
            self.point.save(run.state_dict(with_replay=self.point.replay))


class NextRoundMarket(Callback):
    """With the curriculum or augmentation: a new market (and env) for every round."""

    def end_of_round(self, run: TrainingRun) -> None:
        if run.markets is not None:
            run.start_next_round()


def resume_note(saved: dict[str, Any]) -> str:
    if saved["replay"] is not None:
        return ""
    return (
        " (without the replay buffer: refilling it first; results differ from an uninterrupted run)"
    )
