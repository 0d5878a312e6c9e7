"""Rolling retraining over a test span: fine-tune on recent bars, swap only on a win.

Every ``every_days`` (the retrain points ``t_k``) the trading model is fine-tuned from its own
weights on the ``window_days`` before the last ``score_days`` (bars ``[t_k - score - window,
t_k - score)``). The candidate and the trading model are then both scored with the pipeline's
validation score on the last ``score_days`` (``[t_k - score, t_k)``), bars neither trained on:
``score_days <= every_days`` keeps them after every earlier model's training window, and after
the test span's start, so the frozen model's training and selection never reach them either.
The candidate trades from bar ``t_k`` on only when it beats the trading model by ``margin``;
a fine-tune that diverges or scores NaN is discarded with an event and the trading model keeps
trading. A model that decided at bar ``t`` saw only bars ``<= t``: every fine-tune window ends
before the bar its model starts deciding on.

A fine-tune trains ``episodes`` episodes with one validation, at its end, and no weight
averaging, so nothing in it is selected on the score bars. An ensemble is fine-tuned from its
best member (the file's first); the ensemble trades until a candidate beats it.

Each retrain is recorded in ``rolling.json`` (written atomically after its model file): a rerun
reuses the recorded retrains whose inputs match and redoes the one a crash cut, so a retrain is
never half-applied.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nexlify.agent.ensemble import load_policy
from nexlify.config import is_finite_number
from nexlify.data.market_data import MarketData
from nexlify.errors import ConfigError, DataError, TrainingError
from nexlify.io import atomic_write_json
from nexlify.market.env import VecMarketEnv
from nexlify.market.evaluate import EvaluationResult, GreedyActor, evaluate_policy
from nexlify.pipeline.run_files import result_config
from nexlify.pipeline.runs import UnitTask, market_fingerprint, train_unit
from nexlify.train.callbacks import validate
from nexlify.train.config import RunConfig, run_config_from_dict

ROLLING_FILE = "rolling.json"


@dataclass(frozen=True)
class RollingSpec:
    """When and on what the trading model is fine-tuned during a test span."""

    every_days: float
    """Days between retrain points."""
    window_days: float = 180.0
    """Days of candles each fine-tune trains on (ending where the score bars begin)."""
    score_days: float = 14.0
    """Latest days before a retrain point on which candidate and trading model are scored."""
    episodes: int = 100
    """Episodes of each fine-tune."""
    margin: float = 0.0
    """Validation-score points the candidate must beat the trading model by to replace it."""

    def __post_init__(self) -> None:
        checks = (
            ("--retrain-every", self.every_days, _positive(self.every_days), "days > 0"),
            ("--retrain-window", self.window_days, _positive(self.window_days), "days > 0"),
            ("--retrain-score-days", self.score_days,
             _positive(self.score_days) and self.score_days <= self.every_days,
             f"days in (0, --retrain-every={self.every_days:g}] (the score bars must be newer "
             "than every earlier model's training)"),
            ("--fine-tune-episodes", self.episodes,
             isinstance(self.episodes, int) and self.episodes >= 1, "an integer >= 1"),
            ("--retrain-margin", self.margin, math.isfinite(self.margin) and self.margin >= 0,
             "a score difference >= 0"),
        )  # fmt: skip
        for option, value, ok, rule in checks:
            if not ok:
                raise ConfigError(f"{option}: {value!r} is not {rule}")

    def bars(self, bar_seconds: int) -> tuple[int, int, int]:
        """(every, window, score) in bars of ``bar_seconds``."""
        per_day = 86400 / bar_seconds
        return tuple(  # type: ignore[return-value]
            max(1, round(days * per_day))
            for days in (self.every_days, self.window_days, self.score_days)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _positive(x: object) -> bool:
    return is_finite_number(x) and x > 0  # type: ignore[operator]


def retrain_points(market: MarketData, first: int, spec: RollingSpec) -> list[int]:
    """Bars ``t_k = first + k * every`` (k >= 1) at which a fine-tune happens; the last one
    leaves at least one bar to trade."""
    every, _, _ = spec.bars(market.bar_seconds)
    return list(range(first + every, market.n_bars - 1, every))


def check_schedule(
    market: MarketData, first: int, spec: RollingSpec, config: RunConfig, where: str
) -> list[int]:
    """The retrain points, refused before any training when the data cannot feed them."""
    _, window, score = spec.bars(market.bar_seconds)
    points = retrain_points(market, first, spec)
    if not points:
        raise DataError(
            f"{where}: --retrain-every {spec.every_days:g} days is longer than the "
            f"{market.n_bars - first} bars traded; no retrain would happen"
        )
    check_fine_tune_sizes(spec, config, market.bar_seconds, where)
    earliest = points[0] - score - window
    if earliest < 0:
        start = market.span()[0]
        raise DataError(
            f"{where}: the first retrain ({market.open_time_iso(points[0])}) needs "
            f"{spec.window_days + spec.score_days:g} days of candles before it "
            f"({window + score} bars); the data starts {start:%Y-%m-%d %H:%M} "
            f"({points[0]} bars before)"
        )
    return points


def check_fine_tune_sizes(spec: RollingSpec, config: RunConfig, bar_seconds: int,
                          where: str) -> None:  # fmt: skip
    """Refuse a window shorter than one training episode, or too few score bars."""
    _, window, score = spec.bars(bar_seconds)
    need_train = config.market.env.episode_length + config.market.env.obs_window + 1
    if window < need_train:
        raise DataError(
            f"{where}: --retrain-window {spec.window_days:g} days is {window} bars; one training "
            f"episode needs {need_train} (episode length + observation window + 1)"
        )
    if score < config.market.env.obs_window + 1:
        raise DataError(
            f"{where}: --retrain-score-days {spec.score_days:g} is {score} bars, too few to "
            "score a model on"
        )


def fine_tune_config(config: RunConfig, spec: RollingSpec) -> RunConfig:
    """The run's config with one validation at the end and no weight averaging, so a
    fine-tune selects nothing on the score bars."""
    return run_config_from_dict(
        {"train": {"eval_every": spec.episodes, "swa": False, "resume_points": False}}, config
    )


class SwitchingPolicy:
    """Greedy actions of the model that trades at each env's current bar: model ``j`` decides
    from bar ``starts[j]`` on (bars of the data the policy runs over)."""

    def __init__(self, starts: list[int], actors: list[GreedyActor]) -> None:
        if len(starts) != len(actors) or not starts or starts != sorted(starts):
            raise ValueError("SwitchingPolicy needs one actor per start, starts ascending")
        self.starts = np.asarray(starts, dtype=np.int64)
        self.actors = actors

    def __call__(self, obs: np.ndarray, env: VecMarketEnv) -> np.ndarray:
        which = np.searchsorted(self.starts, env.current_bars(), side="right") - 1
        actions = np.zeros(obs.shape[0], dtype=np.int64)
        for j in np.unique(which):
            rows = which == j
            actions[rows] = self.actors[max(int(j), 0)].greedy(obs[rows])
        return actions


@dataclass
class RollingOutcome:
    """The traded span with rolling retraining, and one record per retrain."""

    result: EvaluationResult
    retrains: list[dict[str, Any]]
    seconds: float


def _inputs_key(initial_model: str, market: MarketData, config: RunConfig, spec: RollingSpec,
                seed: int) -> str:  # fmt: skip
    model = hashlib.sha256(Path(initial_model).read_bytes()).hexdigest()
    plain = {"model": model, "market": market_fingerprint(market), "spec": spec.to_dict(),
             "config": result_config(config), "seed": seed}  # fmt: skip
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


def _recorded(path: Path, key: str, log: logging.Logger) -> list[dict[str, Any]]:
    """Retrains recorded by an earlier run with the same inputs whose trading model is on disk."""
    if not path.is_file():
        return []
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable rolling-retrain record: {exc}") from exc
    if state.get("inputs") != key:
        log.info("rolling retrain: %s was made from other inputs; starting afresh", path)
        return []
    done = []
    for record in state.get("retrains", []):
        if not Path(record["trading_model"]).is_file():
            break
        done.append(record)
    return done


def rolling_run(
    initial_model: str,
    market: MarketData,
    first: int,
    config: RunConfig,
    spec: RollingSpec,
    out_dir: Path,
    seed: int,
    log: logging.Logger,
    trade_from: int | None = None,
) -> RollingOutcome:
    """Trade ``market`` from bar ``first`` (the first decision bar; ``trade_from`` the first
    bar of the traded data, default ``first - obs_window``) with a fine-tune every
    ``spec.every_days``; earlier bars feed the fine-tunes only."""
    started = time.perf_counter()
    where = f"rolling retrain from {market.open_time_iso(first)}"
    points = check_schedule(market, first, spec, config, where)
    _, window, score = spec.bars(market.bar_seconds)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = _inputs_key(initial_model, market, config, spec, seed)
    path = out_dir / ROLLING_FILE
    retrains = _recorded(path, key, log)
    tune_config = fine_tune_config(config, spec)
    trading = retrains[-1]["trading_model"] if retrains else initial_model
    for k, t in enumerate(points[len(retrains) :], start=len(retrains) + 1):
        record = retrain(k, t, trading, market, window, score, tune_config, spec,
                         out_dir, seed + k, log)  # fmt: skip
        trading = record["trading_model"]
        retrains.append(record)
        atomic_write_json(path, {"inputs": key, "spec": spec.to_dict(), "retrains": retrains})
    start = first - config.market.env.obs_window if trade_from is None else trade_from
    traded = market.slice(start, market.n_bars)
    policy = _switching_policy(initial_model, retrains, start, first)
    result = evaluate_policy(policy, traded, config.market, episode_length=0)
    return RollingOutcome(result, retrains, time.perf_counter() - started)


def _switching_policy(
    initial_model: str, retrains: list[dict[str, Any]], offset: int, first: int
) -> Callable[[np.ndarray, VecMarketEnv], np.ndarray]:
    """Models by the bar (of the traded slice starting at ``offset``) they decide from."""
    loaded: dict[str, GreedyActor] = {}

    def actor(path: str) -> GreedyActor:
        if path not in loaded:
            loaded[path] = load_policy(path)[0]
        return loaded[path]

    starts, actors = [first - offset], [actor(initial_model)]
    for record in retrains:
        starts.append(record["bar"] - offset)
        actors.append(actor(record["trading_model"]))
    return SwitchingPolicy(starts, actors)


def _score(model: str, data: MarketData, config: RunConfig) -> float:
    return float(validate(load_policy(model)[0], data, config.market).score())


def fine_tune_task(
    label: str, start_model: str, market: MarketData, t: int, window: int, score: int,
    config: RunConfig, spec: RollingSpec, model_dir: Path, seed: int, log: logging.Logger,
) -> UnitTask:  # fmt: skip
    """The fine-tune of ``start_model`` for bar ``t``: trains on the ``window`` bars before the
    last ``score`` bars before ``t``, validates once on those ``score`` bars (``val_data``);
    ``config`` from :func:`fine_tune_config`."""
    return UnitTask(label=label, seed=seed, episodes=spec.episodes, config=config,
                    train_data=market.slice(t - score - window, t - score),
                    val_data=market.slice(t - score, t), model_dir=str(model_dir),
                    init_model=start_model, eps_start=config.pipeline.retrain_eps_start,
                    threads=config.train.torch_threads, logger_name=log.name)  # fmt: skip


def retrain(
    k: int, t: int, trading: str, market: MarketData, window: int, score: int,
    config: RunConfig, spec: RollingSpec, out_dir: Path, seed: int, log: logging.Logger,
) -> dict[str, Any]:  # fmt: skip
    """Retrain ``k`` at bar ``t`` (the first bar the winner decides on; ``t`` may be
    ``market.n_bars``, the bar after the data): fine-tune ``trading`` (``config`` from
    :func:`fine_tune_config`) on the ``window`` bars before the last ``score`` bars before
    ``t``, score both models on those ``score`` bars, keep the winner. The record says what
    was done; a diverged or NaN-scoring candidate is discarded with its ``event``. Used by
    the study (:func:`rolling_run`) and by paper sessions (:mod:`nexlify.live.retrain`)."""
    task = fine_tune_task(f"retrain_{k}", trading, market, t, window, score, config, spec,
                          out_dir / f"retrain_{k}", seed, log)  # fmt: skip
    scored = task.val_data
    record: dict[str, Any] = {
        "k": k, "bar": t, "at": market.open_time_iso(t),
        "train": [market.open_time_iso(t - score - window), market.open_time_iso(t - score - 1)],
        "score_bars": [market.open_time_iso(t - score), market.open_time_iso(t - 1)],
        "seed": seed, "previous_model": trading,
    }  # fmt: skip
    tick = time.perf_counter()
    current = _score(trading, scored, config)
    try:
        outcome = train_unit(task)
        candidate = _score(outcome["model_path"], scored, config)
        event = None if math.isfinite(candidate) else "candidate scored NaN: discarded"
    except TrainingError as exc:
        outcome, candidate, event = {}, math.nan, f"fine-tune diverged: {exc}"
    swapped = event is None and candidate > current + spec.margin
    record.update(
        current_score=current,
        candidate_score=candidate if math.isfinite(candidate) else None,
        candidate_model=outcome.get("model_path"),
        swapped=swapped,
        trading_model=outcome["model_path"] if swapped else trading,
        event=event,
        seconds=time.perf_counter() - tick,
    )
    if event is not None:
        log.warning("rolling retrain %d at %s: %s; the trading model keeps trading", k,
                    record["at"], event)  # fmt: skip
    log.info("rolling retrain %d at %s: trading model %.3f, candidate %s -> %s", k,
             record["at"], current,
             "n/a" if record["candidate_score"] is None else f"{candidate:.3f}",
             "swapped" if swapped else "kept")  # fmt: skip
    return record
