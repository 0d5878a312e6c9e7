"""Training and pipeline configuration, and ``RunConfig``: everything one run needs, in one place.

A run folder holds the resolved ``RunConfig`` (``config.yaml``) so a result can be traced back to
every setting that produced it. ``--config FILE`` reads the same YAML layout; command-line flags
override the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nexlify.agent.config import AgentConfig
from nexlify.config import TIMEFRAMES, MarketConfig, from_dict, require, to_dict
from nexlify.errors import ConfigError

SOURCES = ("auto", "files", "store", "synthetic")
"""Where candles come from: auto = files if --data-dir, else the local store, else synthetic."""


def _positive_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


@dataclass(frozen=True)
class TrainConfig:
    """One training run: how much experience, how often to validate, where to compute."""

    num_envs: int = 8
    """Envs collecting experience at once (one network call per step for all of them)."""
    eval_every: int = 50
    """Validate every this many training episodes (and always at the end of the run)."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N or mps."""
    torch_threads: int = 1
    """Torch CPU threads per training unit. Results depend on it (float sums split differently),
    so it is fixed rather than derived from the core count; raise it for large networks."""

    def __post_init__(self) -> None:
        for name in ("num_envs", "eval_every"):
            v = getattr(self, name)
            require(_positive_int(v), "train", name, v, "an integer >= 1")
        require(
            _positive_int(self.torch_threads),
            "train",
            "torch_threads",
            self.torch_threads,
            "an integer >= 1",
        )


@dataclass(frozen=True)
class DataConfig:
    """Which market to train on."""

    pairs: tuple[str, ...] = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    """Pairs in ccxt form (BASE/QUOTE)."""
    timeframe: str = "1h"
    """Candle timeframe: 1m, 5m, 15m, 1h, 4h or 1d."""
    source: str = "auto"
    """auto (files if data_dir, else the local store, else synthetic), files, store or synthetic."""
    data_dir: str | None = None
    """Directory of candle files named <BASE>_<QUOTE>-<tf>.{parquet,feather,csv}."""
    store_dir: str | None = None
    """The local store (default: $NEXLIFY_DATA_DIR or ~/.nexlify/data), one folder per exchange."""
    synthetic_days: float = 730.0
    """Length of the built-in synthetic market in days."""
    synthetic_seed: int = 0
    """Seed of the built-in synthetic market (same seed, same market)."""
    validation_days: float = 90.0
    """The last days before the test period, held out for validation and never trained on."""
    test_days: float = 0.0
    """Days at the very end held out from training and validation (0 = none)."""

    def __post_init__(self) -> None:
        if isinstance(self.pairs, (list, str)):
            pairs = [self.pairs] if isinstance(self.pairs, str) else self.pairs
            object.__setattr__(self, "pairs", tuple(pairs))
        require(len(self.pairs) >= 1, "data", "pairs", self.pairs, "at least one pair")
        require(
            len(set(self.pairs)) == len(self.pairs), "data", "pairs", self.pairs, "no duplicates"
        )
        for pair in self.pairs:
            base, _, quote = pair.partition("/")
            require(
                bool(base) and bool(quote) and base.isalnum() and quote.isalnum()
                and pair.upper() == pair,
                "data", "pairs", pair, "ccxt form BASE/QUOTE in capitals, e.g. BTC/USDT",
            )  # fmt: skip
        require(
            self.timeframe in TIMEFRAMES,
            "data",
            "timeframe",
            self.timeframe,
            f"one of {', '.join(TIMEFRAMES)}",
        )
        require(self.source in SOURCES, "data", "source", self.source, f"one of {SOURCES}")
        require(
            self.source != "files" or self.data_dir is not None,
            "data",
            "source",
            self.source,
            "'files' needs data_dir (--data-dir)",
        )
        require(self.synthetic_days >= 30, "data", "synthetic_days", self.synthetic_days, ">= 30")
        require(self.validation_days > 0, "data", "validation_days", self.validation_days, "> 0")
        require(self.test_days >= 0, "data", "test_days", self.test_days, ">= 0")


@dataclass(frozen=True)
class PipelineConfig:
    """Multi-start and auto-retraining, exactly as the original tool's pipeline."""

    initial_runs: int = 3
    """Independent runs in phase 1, with seeds base_seed, base_seed + 1000, ..."""
    initial_episodes: int = 300
    """Training episodes of each initial run."""
    retrain_episodes: int = 200
    """Training episodes of each retraining iteration (phase 2)."""
    improvement_threshold: float = 1.0
    """Percent: a new best that improves the score by less than this ends retraining (plateau)."""
    patience: int = 3
    """Retraining iterations in a row without a new best before stopping."""
    max_iterations: int = 10
    """Most retraining iterations."""
    base_seed: int = 42
    """Seed of the first initial run."""
    seed_stride: int = 1000
    """Difference between the seeds of consecutive initial runs."""
    retrain_eps_start: float = 0.2
    """Exploration epsilon at the start of a retraining iteration (decays to agent.eps_end)."""
    workers: int = 0
    """Initial runs trained at once in separate processes (0 = one per CPU core; 1 = in-process).
    Results do not depend on it."""
    output_dir: str = "complete_auto_training_output"
    """Where models, the summary, the log and the report go."""

    def __post_init__(self) -> None:
        s = "pipeline"
        for name in ("initial_runs", "initial_episodes", "retrain_episodes", "patience"):
            v = getattr(self, name)
            require(_positive_int(v), s, name, v, "an integer >= 1")
        require(
            isinstance(self.max_iterations, int) and self.max_iterations >= 0,
            s,
            "max_iterations",
            self.max_iterations,
            "an integer >= 0",
        )
        require(
            isinstance(self.improvement_threshold, (int, float))
            and self.improvement_threshold >= 0,
            s,
            "improvement_threshold",
            self.improvement_threshold,
            "a percentage >= 0",
        )
        require(
            0 <= self.retrain_eps_start <= 1,
            s,
            "retrain_eps_start",
            self.retrain_eps_start,
            "in [0, 1]",
        )
        require(
            isinstance(self.workers, int) and self.workers >= 0,
            s,
            "workers",
            self.workers,
            "an integer >= 0 (0 = one per core)",
        )
        require(bool(self.output_dir), s, "output_dir", self.output_dir, "a directory path")

    def seed_of_run(self, run_id: int) -> int:
        """Seed of initial run ``run_id`` (0-based): 42, 1042, 2042, ... by default."""
        return self.base_seed + self.seed_stride * run_id


@dataclass(frozen=True)
class RunConfig:
    """Everything a pipeline run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    """The market."""
    market: MarketConfig = field(default_factory=MarketConfig)
    """Risk rules, execution costs and episode shape."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """The DQN agent."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """One training run."""
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    """Multi-start and auto-retraining."""

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(_plain(self.to_dict()), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def run_config_from_dict(values: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """A RunConfig from a nested dict (YAML layout), on top of ``base`` (defaults if None)."""
    base_dict = (base or RunConfig()).to_dict()
    for section, items in values.items():
        if section not in base_dict:
            raise ConfigError(f"{section}: unknown section; known: {', '.join(base_dict)}")
        if not isinstance(items, dict):
            raise ConfigError(f"{section}: expected a mapping of settings, got {items!r}")
        _merge(base_dict[section], items)
    return from_dict(RunConfig, base_dict)


def _merge(into: dict[str, Any], items: dict[str, Any]) -> None:
    for key, value in items.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def load_run_config(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    """Read a YAML config file (sections data, market, agent, train, pipeline)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"--config {p}: cannot read the file ({exc.strerror})") from None
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {p}: not valid YAML ({exc})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {p}: expected a mapping of sections at the top level")
    try:
        return run_config_from_dict(values, base)
    except ConfigError as exc:
        raise ConfigError(f"--config {p}: {exc}") from None


def replace_section(config: RunConfig, section: str, **changes: Any) -> RunConfig:
    """A copy of ``config`` with fields of one section changed (validated)."""
    current = getattr(config, section)
    return dataclasses.replace(config, **{section: dataclasses.replace(current, **changes)})
