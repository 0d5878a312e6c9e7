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
from nexlify.config import TIMEFRAMES, MarketConfig, from_dict, is_int, require, to_dict
from nexlify.config.augment import AugmentConfig
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
    early_stopping_patience: int = 3
    """Stop a run after this many validations in a row without a new best (0 = never)."""
    early_stopping_min_delta: float = 0.0
    """A validation score must beat the best by more than this to count as a new best."""
    swa: bool = True
    """Stochastic weight averaging over the late part of the run, validated like a checkpoint."""
    swa_start: float = 0.75
    """Fraction of the run's transitions after which weights are averaged."""
    augment: bool = True
    """Augment training windows (price jitter, time shift, volume scaling, regime mixing)."""
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    """How strong each augmentation is (used while ``augment`` is on)."""
    curriculum: bool = True
    """Four-phase curriculum: calm/small positions, medium vol, high vol, all + stress windows."""
    curriculum_phases: tuple[float, float, float] = (0.1, 0.2, 0.35)
    """Fractions of a run's transitions at which phases 2, 3 and 4 begin (increasing)."""
    curriculum_position_scale: float = 0.5
    """Multiplier of max_position in phase 1 (small positions)."""
    divergence_rollbacks: int = 3
    """A NaN/infinite loss or weight rolls the learner back to its last good state with a lower
    learning rate; after this many rollbacks in one run, the run fails (0 = fail at once)."""
    divergence_lr_factor: float = 0.5
    """Learning-rate multiplier applied at each rollback."""
    auto_batch: bool = False
    """Pick agent.batch_size and agent.buffer_size from free memory and the network size
    (see nexlify.train.batch_size); the planned values are logged and saved with the model."""
    auto_batch_max: int = 1024
    """Largest batch auto_batch picks for a GPU (on the CPU it stays at most agent.batch_size)."""
    memory_fraction: float = 0.5
    """Share of free GPU memory (batches) and of available RAM (replay) auto_batch plans for."""
    min_batch_size: int = 16
    """Out of memory in a gradient step halves the batch and retries, down to this; then fails."""
    thermal_pause_c: float = 0.0
    """Pause (or slow) training while a GPU or CPU sensor reads this many °C or more (0 = off)."""
    thermal_resume_c: float = 75.0
    """Resume full speed once every sensor reads below this (°C, below thermal_pause_c)."""
    thermal_action: str = "pause"
    """What heat does: pause (sleep until cool) or slow (half speed until cool)."""
    tensorboard: bool = False
    """Training curves to <output_dir>/tensorboard/<unit> (needs the tensorboard extra)."""
    resume_points: bool = True
    """Save each unit's whole training state at every validation, so an interrupted unit
    continues from its last validation (see nexlify.train.resume)."""
    resume_replay: bool = True
    """Include the replay buffer in resume points: an exact resume, at the cost of the buffer's
    size on disk (off: small files, the buffer refills after a resume and results differ)."""
    dyna_ratio: float = 0.0
    """Imagined transitions per real one from a learned market model, Dyna-style (0 = off;
    the account state is not simulated, see nexlify.train.dyna)."""
    dyna_refit_every: int = 20_000
    """Real transitions between refits of the market model on the replay buffer (dyna only)."""

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
        _check_practices(self)
        _check_system(self)
        for name in ("resume_points", "resume_replay"):
            require(isinstance(getattr(self, name), bool), "train", name, getattr(self, name),
                    "true or false")  # fmt: skip
        require(_number(self.dyna_ratio) and 0 <= self.dyna_ratio <= 10, "train", "dyna_ratio",
                self.dyna_ratio, "a number in [0, 10] (0 = off)")  # fmt: skip
        require(_positive_int(self.dyna_refit_every) and self.dyna_refit_every >= 100, "train",
                "dyna_refit_every", self.dyna_refit_every, "an integer >= 100")  # fmt: skip


def _check_practices(c: TrainConfig) -> None:
    t = "train"
    if isinstance(c.curriculum_phases, list):
        object.__setattr__(c, "curriculum_phases", tuple(c.curriculum_phases))
    v = c.early_stopping_patience
    require(isinstance(v, int) and not isinstance(v, bool) and v >= 0, t,
            "early_stopping_patience", v, "an integer >= 0 (0 = never stop early)")  # fmt: skip
    delta = c.early_stopping_min_delta
    require(_number(delta) and delta >= 0, t, "early_stopping_min_delta", delta, "a number >= 0")
    for name in ("swa", "augment", "curriculum"):
        v = getattr(c, name)
        require(isinstance(v, bool), t, name, v, "true or false")
    require(_number(c.swa_start) and 0 <= c.swa_start <= 1, t, "swa_start", c.swa_start,
            "in [0, 1]")  # fmt: skip
    require(_number(c.curriculum_position_scale) and 0 < c.curriculum_position_scale <= 1, t,
            "curriculum_position_scale", c.curriculum_position_scale, "in (0, 1]")  # fmt: skip
    v = c.divergence_rollbacks
    require(isinstance(v, int) and not isinstance(v, bool) and v >= 0, t,
            "divergence_rollbacks", v, "an integer >= 0")  # fmt: skip
    factor = c.divergence_lr_factor
    require(_number(factor) and 0 < factor < 1, t, "divergence_lr_factor", factor, "in (0, 1)")
    phases = c.curriculum_phases
    require(
        isinstance(phases, tuple) and len(phases) == 3 and all(_number(b) for b in phases)
        and 0 <= phases[0] <= phases[1] <= phases[2] <= 1,
        t, "curriculum_phases", phases, "three increasing fractions in [0, 1]",
    )  # fmt: skip


def _check_system(c: TrainConfig) -> None:
    t = "train"
    for name in ("auto_batch", "tensorboard"):
        require(isinstance(getattr(c, name), bool), t, name, getattr(c, name), "true or false")
    for name in ("auto_batch_max", "min_batch_size"):
        require(_positive_int(getattr(c, name)), t, name, getattr(c, name), "an integer >= 1")
    require(c.min_batch_size <= c.auto_batch_max, t, "min_batch_size", c.min_batch_size,
            f"at most auto_batch_max={c.auto_batch_max}")  # fmt: skip
    require(_number(c.memory_fraction) and 0 < c.memory_fraction <= 1, t, "memory_fraction",
            c.memory_fraction, "in (0, 1]")  # fmt: skip
    require(_number(c.thermal_pause_c) and 0 <= c.thermal_pause_c < 150, t, "thermal_pause_c",
            c.thermal_pause_c, "°C in [0, 150) (0 = no thermal guard)")  # fmt: skip
    require(_number(c.thermal_resume_c) and (c.thermal_pause_c == 0
            or c.thermal_resume_c < c.thermal_pause_c), t, "thermal_resume_c",
            c.thermal_resume_c, f"°C below thermal_pause_c={c.thermal_pause_c}")  # fmt: skip
    require(c.thermal_action in ("pause", "slow"), t, "thermal_action", c.thermal_action,
            "pause or slow")  # fmt: skip


BACKENDS = ("inprocess", "process", "ray")
"""Execution backends of the pipeline's units (see nexlify.pipeline.backends)."""


def _ray_address(v: object) -> bool:
    if not isinstance(v, str):
        return False
    if v in ("local", "auto"):
        return True
    host, _, port = v.removeprefix("ray://").rpartition(":")
    return bool(host) and port.isdigit()


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) < 1e300


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
    quality: tuple[str, ...] = ()
    """Quality policy overrides FINDING=POLICY, e.g. gap=fail (see nexlify.data.quality)."""
    quality_max_fill_bars: int = 24
    """Longest gap (bars) the gap repair fills flat; a longer gap splits the data (latest kept)."""
    external: tuple[str, ...] = ()
    """External daily series as features: fear_greed, onchain, funding, orderflow, sentiment."""
    external_dir: str | None = None
    """Folder of the external series' CSVs (default: <store>/external)."""
    external_max_age_days: float = 3.0
    """A daily value older than this (days since it became known) counts as missing."""
    long_memory: bool = False
    """Add long-memory features per pair: log returns over 7 and 30 days, log distance to the
    50- and 200-day averages, drawdown from the 90-day high (warm-up: 200 days of bars)."""
    cross_pair: bool = False
    """Add cross-pair features per pair: its log return over 1, 7 and 30 days less the mean over
    the pairs, and its rank among them by that return (needs at least two pairs)."""

    def __post_init__(self) -> None:
        from nexlify.data.external import PROVIDERS
        from nexlify.data.quality import parse_policy_overrides

        if isinstance(self.quality, dict):
            items = tuple(f"{k}={v}" for k, v in self.quality.items())
            object.__setattr__(self, "quality", items)
        for name in ("quality", "external"):
            value = getattr(self, name)
            if isinstance(value, (list, str)):
                object.__setattr__(self, name, tuple([value] if isinstance(value, str) else value))
        parse_policy_overrides(self.quality)
        for series in self.external:
            require(series in PROVIDERS, "data", "external", series, f"one of {tuple(PROVIDERS)}")
        require(len(set(self.external)) == len(self.external), "data", "external",
                self.external, "no duplicates")  # fmt: skip
        require(
            is_int(self.quality_max_fill_bars) and self.quality_max_fill_bars >= 0,
            "data", "quality_max_fill_bars", self.quality_max_fill_bars, "an integer >= 0",
        )  # fmt: skip
        require(isinstance(self.long_memory, bool), "data", "long_memory", self.long_memory,
                "true or false")  # fmt: skip
        require(isinstance(self.cross_pair, bool), "data", "cross_pair", self.cross_pair,
                "true or false")  # fmt: skip
        require(
            self.external_max_age_days > 0,
            "data", "external_max_age_days", self.external_max_age_days, "> 0",
        )  # fmt: skip
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
        require(
            not self.cross_pair or len(self.pairs) >= 2,
            "data", "cross_pair", self.cross_pair, f"two pairs or more, got {list(self.pairs)}",
        )  # fmt: skip


VALIDATIONS = ("holdout", "walk-forward")
"""How the pipeline scores candidates (see PipelineConfig.validation)."""
SELECTIONS = ("score", "lcb")
"""How the pipeline picks its final model (see PipelineConfig.selection)."""


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
    """Units (initial runs, folds, variants) trained at once (0 = as many as finish them soonest:
    one per CPU core, or up to two per core taking turns, see share_cores; with Ray, all at once;
    1 = in this process). Results do not depend on it."""
    share_cores: bool = True
    """With more units at once than cores (e.g. 3 seeds on 2 cores), local worker processes take
    turns on the cores in 0.5 s slices instead of all competing for them, which the OS
    scheduler sometimes shares badly (``nexlify.system.core_share``). Results do not depend on
    it."""
    backend: str = "process"
    """Where units run: inprocess (one by one, for debugging), process (local worker
    processes) or ray (a Ray cluster, ``pip install 'nexlify[ray]'``). Results do not depend on
    it."""
    ray_address: str | None = None
    """Ray cluster for backend ray: local (a private cluster on this machine), auto (the one
    ``ray start`` runs here), ray://HOST:PORT (Ray Client) or HOST:PORT; unset = $RAY_ADDRESS,
    else local."""
    output_dir: str = "complete_auto_training_output"
    """Where models, the summary, the log and the report go."""
    validation: str = "holdout"
    """How candidates are scored: holdout (the last validation_days) or walk-forward (those days
    cut into validation_folds windows, each scored by a model trained only on the bars before
    it; a candidate's score is the mean over the windows, at validation_folds times the cost)."""
    validation_folds: int = 3
    """Walk-forward windows over the validation days (validation walk-forward only)."""
    validation_embargo_bars: int = 24
    """Bars left out between each walk-forward fold's training data and its window."""
    ensemble_size: int = 3
    """Best models (initial runs and retraining iterations) in the ensemble (0 or 1 = none)."""
    ensemble_method: str = "mean"
    """How the ensemble acts: mean (average Q-values) or vote (majority of greedy actions)."""
    ensemble_members: str = "top"
    """top: the ensemble_size best models by validation score, final when it validates better;
    seeds: one model per initial run (the retrained best for the winning seed, the initial
    model for the others), always final: no choice among seeds by validation score."""
    selection: str = "score"
    """How the final model is picked. score: the best validation score (the original tool's
    rule; the ensemble when it scores higher, or always with ensemble_members seeds). lcb: every
    saved candidate (initial runs, retraining iterations, and the ensemble when one is built,
    the seed ensemble included, then as one candidate among the others) trades the newest
    validation window once, greedily; the one whose mean daily excess return over cash has the
    highest 95% bootstrap lower bound wins, so a steady edge beats a lucky peak. Retraining
    still follows the score."""

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
            "an integer >= 0 (0 = automatic)",
        )
        require(isinstance(self.share_cores, bool), s, "share_cores", self.share_cores,
                "true or false")  # fmt: skip
        require(self.backend in BACKENDS, s, "backend", self.backend, f"one of {BACKENDS}")
        require(
            self.ray_address is None or _ray_address(self.ray_address),
            s,
            "ray_address",
            self.ray_address,
            "local, auto, ray://HOST:PORT or HOST:PORT",
        )
        require(bool(self.output_dir), s, "output_dir", self.output_dir, "a directory path")
        require(self.validation in VALIDATIONS, s, "validation", self.validation,
                f"one of {', '.join(VALIDATIONS)}")  # fmt: skip
        require(_positive_int(self.validation_folds) and self.validation_folds >= 2, s,
                "validation_folds", self.validation_folds, "an integer >= 2")  # fmt: skip
        v = self.validation_embargo_bars
        require(isinstance(v, int) and not isinstance(v, bool) and v >= 0, s,
                "validation_embargo_bars", v, "an integer >= 0")  # fmt: skip
        require(
            isinstance(self.ensemble_size, int) and 0 <= self.ensemble_size <= 10,
            s,
            "ensemble_size",
            self.ensemble_size,
            "an integer in [0, 10] (0 or 1 = no ensemble)",
        )
        require(
            self.ensemble_method in ("mean", "vote"),
            s,
            "ensemble_method",
            self.ensemble_method,
            "mean or vote",
        )
        require(self.ensemble_members in ("top", "seeds"), s, "ensemble_members",
                self.ensemble_members, "top or seeds")  # fmt: skip
        require(self.ensemble_members != "seeds" or
                (self.validation == "holdout" and self.initial_runs >= 2), s, "ensemble_members",
                self.ensemble_members, "top, or seeds with holdout validation and >= 2 initial "
                "runs")  # fmt: skip
        require(self.selection in SELECTIONS, s, "selection", self.selection,
                f"one of {', '.join(SELECTIONS)}")  # fmt: skip

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


RENAMED = {
    "train": {
        "augment_price_jitter": ("augmentation", "price_jitter"),
        "augment_time_shift": ("augmentation", "time_shift_bars"),
        "augment_volume_scale": ("augmentation", "volume_scale"),
        "augment_regime_mix": ("augmentation", "regime_mix_prob"),
    }
}
"""Settings of earlier versions and where they live now: the config.yaml of a run made then
(``--resume``) still loads."""


def _renamed(values: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for section, moves in RENAMED.items():
        items = out.get(section)
        if not isinstance(items, dict):
            continue
        for old, (group, name) in moves.items():
            if old in items:
                nested = items.setdefault(group, {})
                if isinstance(nested, dict):
                    nested = items[group] = dict(nested)
                    nested.setdefault(name, items.pop(old))
    return out


def run_config_from_dict(values: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """A RunConfig from a nested dict (YAML layout), on top of ``base`` (defaults if None)."""
    base_dict = (base or RunConfig()).to_dict()
    for section, items in _renamed(values).items():
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
