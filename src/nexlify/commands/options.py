"""One registry of command-line options, shared by every command that needs them.

Defaults are ``None`` here on purpose: a flag that is not given leaves the config file's value
(or the dataclass default) in place, so ``--config`` and flags compose. Help texts show the
dataclass defaults through ``{default}`` (:func:`option_help`), never a copy of them.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

from nexlify.config import TIMEFRAMES
from nexlify.market.strategies import STRATEGIES
from nexlify.train.config import BACKENDS, SOURCES, RunConfig

_MARKET_PARTS = ("risk", "execution", "env")

# (flags, section, field, argparse kwargs)
DATA_OPTIONS: list[tuple[tuple[str, ...], str, str, dict[str, Any]]] = [
    (("--pairs",), "data", "pairs",
     {"nargs": "+", "metavar": "PAIR", "help": "pairs in ccxt form, e.g. BTC/USDT ETH/USDT"}),
    (("--timeframe",), "data", "timeframe",
     {"choices": list(TIMEFRAMES), "help": "candle timeframe (default {default})"}),
    (("--data-dir",), "data", "data_dir",
     {"metavar": "DIR", "help": "folder of <BASE>_<QUOTE>-<tf>.{parquet,feather,csv} files"}),
    (("--source",), "data", "source",
     {"choices": list(SOURCES), "help": "where candles come from (default {default}: --data-dir, "
      "else the local store, else the synthetic market)"}),
    (("--validation-days",), "data", "validation_days",
     {"type": float, "metavar": "DAYS", "help": "held-out validation days (default {default})"}),
    (("--test-days",), "data", "test_days",
     {"type": float, "metavar": "DAYS", "help": "days at the end, never used (default {default})"}),
    (("--synthetic-seed",), "data", "synthetic_seed",
     {"type": int, "metavar": "SEED", "help": "seed of the synthetic market (default {default})"}),
    (("--external",), "data", "external",
     {"nargs": "+", "metavar": "NAME", "help": "external daily series as features: fear_greed "
      "onchain funding orderflow sentiment (lagged, no look-ahead)"}),
    (("--external-dir",), "data", "external_dir",
     {"metavar": "DIR", "help": "folder of external series CSVs (default <store>/external)"}),
    (("--long-memory",), "data", "long_memory",
     {"action": argparse.BooleanOptionalAction, "help": "long-memory features per pair: 7 and "
      "30-day returns, distance to the 50 and 200-day averages, drawdown from the 90-day high "
      "(warm-up 200 days; default {default})"}),
    (("--cross-pair",), "data", "cross_pair",
     {"action": argparse.BooleanOptionalAction, "help": "cross-pair features per pair: its 1, 7 "
      "and 30-day return less the pairs' mean, and its rank among them (two pairs or more; "
      "default {default})"}),
    (("--quality",), "data", "quality",
     {"nargs": "+", "metavar": "FINDING=POLICY", "help": "data quality policy overrides, "
      "e.g. gap=fail outlier=drop (see nexlify data check)"}),
    (("--stop-loss",), "risk", "stop_loss",
     {"type": float, "metavar": "FRAC", "help": "stop-loss below entry (default {default})"}),
    (("--take-profit",), "risk", "take_profit",
     {"type": float, "metavar": "FRAC", "help": "take-profit above entry (default {default})"}),
    (("--trailing-stop",), "risk", "trailing_stop",
     {"type": float, "metavar": "FRAC", "help": "trailing stop below the high (default "
      "{default})"}),
    (("--max-position",), "risk", "max_position",
     {"type": float, "metavar": "FRAC", "help": "largest position, of equity (default {default})"}),
    (("--max-trades",), "risk", "max_concurrent_trades",
     {"type": int, "metavar": "N", "help": "most open positions (default {default})"}),
    (("--daily-loss-limit",), "risk", "daily_loss_limit",
     {"type": float, "metavar": "FRAC", "help": "daily loss limit (default {default})"}),
    (("--fee",), "execution", "fee_rate",
     {"type": float, "metavar": "FRAC", "help": "taker fee per side (default {default})"}),
    (("--slippage-bps",), "execution", "slippage_bps",
     {"type": float, "metavar": "BPS", "help": "slippage per fill, basis points (default "
      "{default})"}),
    (("--episode-length",), "env", "episode_length",
     {"type": int, "metavar": "BARS", "help": "bars per episode (default {default})"}),
    (("--turnover-penalty",), "env", "turnover_penalty",
     {"type": float, "metavar": "X", "help": "extra cost of each fill in the reward only, as a "
      "multiple of its fee (default {default}; reported figures are unaffected)"}),
    (("--min-hold-bars",), "env", "min_hold_bars",
     {"type": int, "metavar": "BARS", "help": "a sell signal closes a position only once it is "
      "this many bars old (default {default}); stops and take-profit still exit at any age"}),
    (("--decision-interval",), "env", "decision_interval",
     {"type": int, "metavar": "BARS", "help": "the agent decides every BARS bars and holds in "
      "between, learning on the interval's summed reward (default {default}: every bar); stops "
      "and take-profit still act on every bar"}),
]  # fmt: skip

_S = "strategies__"  # strategy flags land in market.strategies (nested, see overrides_from_args)
STRATEGY_OPTIONS: list[tuple[tuple[str, ...], str, str, dict[str, Any]]] = [
    (("--strategies",), "market", _S + "enabled",
     {"nargs": "+", "choices": list(STRATEGIES), "metavar": "NAME", "help": "what the agent may "
      "do: any of spot staking lending liquidity arbitrage (default {default})"}),
    (("--stake-asset",), "market", _S + "staking__asset",
     {"metavar": "ASSET", "help": "asset to stake (default {default}: ETH or SOL among the "
      "pairs)"}),
    (("--staking-apy",), "market", _S + "staking__apy",
     {"type": float, "metavar": "FRAC", "help": "staking APY (default ETH 0.032, SOL 0.07)"}),
    (("--unbonding-hours",), "market", _S + "staking__unbonding_hours",
     {"type": float, "metavar": "H", "help": "unbonding delay (default ETH 120, SOL 48)"}),
    (("--slashing-per-year",), "market", _S + "staking__slashing_events_per_year",
     {"type": float, "metavar": "N", "help": "expected slashing events a year (default "
      "{default})"}),
    (("--lending-utilization",), "market", _S + "lending__utilization",
     {"type": float, "metavar": "U", "help": "pool utilisation, or its simulated mean "
      "({default})"}),
    (("--lending-utilization-source",), "market", _S + "lending__utilization_source",
     {"choices": ["constant", "csv", "simulated"], "help": "utilisation series ({default})"}),
    (("--lending-utilization-csv",), "market", _S + "lending__utilization_csv",
     {"metavar": "CSV", "help": "timestamp,utilization CSV (with --lending-utilization-source "
      "csv)"}),
    (("--lp-pair",), "market", _S + "liquidity__pair",
     {"metavar": "PAIR", "help": "Uniswap V3 pool pair (default the first pair)"}),
    (("--lp-range-width",), "market", _S + "liquidity__range_width",
     {"type": float, "metavar": "W", "help": "LP range [P/(1+W), P(1+W)] (default {default})"}),
    (("--lp-fee-tier",), "market", _S + "liquidity__fee_tier",
     {"type": float, "metavar": "FRAC", "help": "pool fee tier (default {default})"}),
    (("--lp-pool-csv",), "market", _S + "liquidity__pool_csv",
     {"metavar": "CSV", "help": "pool volume_usd / depth_2pct_usd by timestamp"}),
    (("--lp-gas",), "market", _S + "liquidity__gas_cost",
     {"type": float, "metavar": "QUOTE", "help": "gas per LP transaction (default {default})"}),
    (("--arb-venue",), "market", _S + "arbitrage__venues",
     {"nargs": "+", "metavar": "NAME=DIR", "help": "other venues' candle folders for arbitrage "
      "(none: simulated spreads)"}),
    (("--arb-primary-dir",), "market", _S + "arbitrage__primary_dir",
     {"metavar": "DIR", "help": "candles of the training venue (default --data-dir)"}),
    (("--arb-venue-fees",), "market", _S + "arbitrage__venue_fee_rates",
     {"type": float, "nargs": "+", "metavar": "FRAC", "help": "taker fee of each --arb-venue "
      "(default --fee)"}),
    (("--arb-mode",), "market", _S + "arbitrage__mode",
     {"choices": ["rule", "agent"], "help": "arbitrage as a rule or as agent actions ({default})"}),
]  # fmt: skip

VALIDATION_OPTIONS: list[tuple[tuple[str, ...], str, str, dict[str, Any]]] = [
    (("--validation",), "pipeline", "validation",
     {"choices": ["holdout", "walk-forward"], "help": "score candidates on the last validation "
      "days ({default}, the default) or walk-forward: those days cut into windows, each scored "
      "by a "
      "model trained only before it, the score being the mean (folds x the training cost)"}),
    (("--validation-folds",), "pipeline", "validation_folds",
     {"type": int, "metavar": "K", "help": "walk-forward windows (default {default})"}),
    (("--validation-embargo",), "pipeline", "validation_embargo_bars",
     {"type": int, "metavar": "BARS", "help": "bars left out before each walk-forward window "
      "(default {default})"}),
]  # fmt: skip

TRAIN_OPTIONS: list[tuple[tuple[str, ...], str, str, dict[str, Any]]] = [
    (("--initial-runs",), "pipeline", "initial_runs",
     {"type": int, "metavar": "N", "help": "independent runs in phase 1 (default {default})"}),
    (("--initial-episodes",), "pipeline", "initial_episodes",
     {"type": int, "metavar": "N", "help": "episodes per initial run (default {default})"}),
    (("--retrain-episodes",), "pipeline", "retrain_episodes",
     {"type": int, "metavar": "N", "help": "episodes per retraining iteration (default "
      "{default})"}),
    (("--improvement-threshold",), "pipeline", "improvement_threshold",
     {"type": float, "metavar": "PCT", "help": "a new best improving less than this percent "
      "ends retraining (default {default})"}),
    (("--patience",), "pipeline", "patience",
     {"type": int, "metavar": "N", "help": "iterations with no new best (default {default})"}),
    (("--max-iterations",), "pipeline", "max_iterations",
     {"type": int, "metavar": "N", "help": "most retraining iterations (default {default})"}),
    (("--seed",), "pipeline", "base_seed",
     {"type": int, "metavar": "SEED", "help": "seed of the first run (default {default}, then "
      "+1000)"}),
    (("--workers",), "pipeline", "workers",
     {"type": int, "metavar": "N", "help": "initial runs trained at once (default {default} = as "
      "many "
      "as finish them soonest: one per core, or up to two per core taking turns; with "
      "--backend ray all at once; 1 = in-process)"}),
    (("--output-dir",), "pipeline", "output_dir",
     {"metavar": "DIR", "help": "output folder (default {default})"}),
    (("--num-envs",), "train", "num_envs",
     {"type": int, "metavar": "N", "help": "envs collecting experience at once (default "
      "{default})"}),
    (("--eval-every",), "train", "eval_every",
     {"type": int, "metavar": "EPISODES", "help": "validate every N episodes (default {default})"}),
    (("--device",), "train", "device",
     {"metavar": "DEV", "help": "auto, cpu, cuda, cuda:N or mps (default {default})"}),
    (("--auto-batch",), "train", "auto_batch",
     {"action": argparse.BooleanOptionalAction, "help": "pick the batch size and replay "
      "capacity from free memory and the network size (default {default})"}),
    (("--min-batch-size",), "train", "min_batch_size",
     {"type": int, "metavar": "N", "help": "out of memory halves the batch down to N, then "
      "fails (default {default})"}),
    (("--memory-fraction",), "train", "memory_fraction",
     {"type": float, "metavar": "FRAC", "help": "share of free memory --auto-batch plans for "
      "(default {default})"}),
    (("--thermal-pause",), "train", "thermal_pause_c",
     {"type": float, "metavar": "C", "help": "pause training while a GPU/CPU sensor reads C "
      "degrees or more (default {default} = off)"}),
    (("--thermal-resume",), "train", "thermal_resume_c",
     {"type": float, "metavar": "C", "help": "resume below C degrees (default {default})"}),
    (("--thermal-action",), "train", "thermal_action",
     {"choices": ["pause", "slow"], "help": "pause, or slow to half speed, while hot ({default})"}),
    (("--tensorboard",), "train", "tensorboard",
     {"action": argparse.BooleanOptionalAction, "help": "training curves to "
      "<output-dir>/tensorboard, one run per unit; default {default} (needs pip install "
      "'nexlify[tensorboard]')"}),
    (("--early-stopping-patience",), "train", "early_stopping_patience",
     {"type": int, "metavar": "N", "help": "stop a run after N validations without a new best "
      "(default {default}; 0 = never)"}),
    (("--early-stopping-min-delta",), "train", "early_stopping_min_delta",
     {"type": float, "metavar": "D", "help": "a new best must beat the old by more than D "
      "({default})"}),
    (("--swa",), "train", "swa",
     {"action": argparse.BooleanOptionalAction, "help": "stochastic weight averaging over the "
      "late part of each run (default {default})"}),
    (("--swa-start",), "train", "swa_start",
     {"type": float, "metavar": "FRAC", "help": "fraction of a run after which SWA averages "
      "(default {default})"}),
    (("--augment",), "train", "augment",
     {"action": argparse.BooleanOptionalAction, "help": "augment training windows: price "
      "jitter, time shift, volume scaling, regime mixing (default {default})"}),
    (("--augment-price-jitter",), "train", "augmentation__price_jitter",
     {"type": float, "metavar": "STD", "help": "per-bar log price noise (default {default})"}),
    (("--augment-time-shift",), "train", "augmentation__time_shift_bars",
     {"type": int, "metavar": "BARS", "help": "most leading bars dropped (default {default})"}),
    (("--augment-volume-scale",), "train", "augmentation__volume_scale",
     {"type": float, "metavar": "STD", "help": "per-pair log volume factor (default {default})"}),
    (("--augment-regime-mix",), "train", "augmentation__regime_mix_prob",
     {"type": float, "metavar": "P", "help": "probability of a bull/bear splice (default "
      "{default})"}),
    (("--curriculum",), "train", "curriculum",
     {"action": argparse.BooleanOptionalAction, "help": "four-phase curriculum for fresh runs "
      "(default {default})"}),
    (("--curriculum-phases",), "train", "curriculum_phases",
     {"type": float, "nargs": 3, "metavar": "FRAC", "help": "run fractions at which phases 2, 3 "
      "and 4 begin (default {default})"}),
    (("--dyna-ratio",), "train", "dyna_ratio",
     {"type": float, "metavar": "R", "help": "imagined transitions per real one from a learned "
      "market model, Dyna-style; the account state is not simulated (default {default} = off)"}),
    (("--dyna-refit-every",), "train", "dyna_refit_every",
     {"type": int, "metavar": "N", "help": "real transitions between refits of the market model "
      "on the replay buffer (default {default})"}),
    (("--ensemble-size",), "pipeline", "ensemble_size",
     {"type": int, "metavar": "K", "help": "best models combined into an ensemble (default "
      "{default}; "
      "0 = none)"}),
    (("--ensemble-method",), "pipeline", "ensemble_method",
     {"choices": ["mean", "vote"], "help": "ensemble acts on mean Q-values or by vote "
      "({default})"}),
    (("--ensemble-members",), "pipeline", "ensemble_members",
     {"choices": ["top", "seeds"], "help": "top: the best models by validation score, final "
      "when better; seeds: one model per seed, always final ({default})"}),
    (("--selection",), "pipeline", "selection",
     {"choices": ["score", "lcb"], "help": "final model by the best validation score, or by the "
      "highest lower bound of its daily excess return over cash on the newest validation window "
      "({default})"}),
]  # fmt: skip

_ON_OFF = argparse.BooleanOptionalAction

AGENT_OPTIONS: list[tuple[tuple[str, ...], str, str, dict[str, Any]]] = [
    (("--double-dqn",), "agent", "double_dqn",
     {"action": _ON_OFF, "help": "double DQN targets (default {default})"}),
    (("--dueling",), "agent", "dueling",
     {"action": _ON_OFF, "help": "dueling value/advantage heads (default {default})"}),
    (("--per",), "agent", "prioritized_replay",
     {"action": _ON_OFF, "help": "prioritized experience replay (default {default})"}),
    (("--per-alpha",), "agent", "per_alpha",
     {"type": float, "metavar": "A", "help": "priority exponent (default {default})"}),
    (("--per-beta",), "agent", "per_beta_start",
     {"type": float, "metavar": "B", "help": "importance exponent at the start, annealed to 1 "
      "(default {default})"}),
    (("--n-step",), "agent", "n_step",
     {"type": int, "metavar": "N", "help": "n-step returns (default {default}; 1 = one-step)"}),
    (("--noisy",), "agent", "noisy",
     {"action": _ON_OFF, "help": "noisy output layers instead of epsilon-greedy (default "
      "{default})"}),
    (("--distributional",), "agent", "distributional",
     {"choices": ["none", "c51", "qr"], "help": "value head: none, c51 or qr (default {default})"}),
    (("--n-atoms",), "agent", "n_atoms",
     {"type": int, "metavar": "Z", "help": "C51 atoms or QR quantiles (default {default})"}),
    (("--v-min",), "agent", "v_min",
     {"type": float, "metavar": "V", "help": "lowest C51 atom (default {default})"}),
    (("--v-max",), "agent", "v_max",
     {"type": float, "metavar": "V", "help": "highest C51 atom (default {default})"}),
    (("--reward-scale",), "agent", "reward_scale",
     {"type": float, "metavar": "S", "help": "rewards times S before learning (default {default}; "
      "100 = percent log-returns)"}),
    (("--hold-margin",), "agent", "hold_margin",
     {"type": float, "metavar": "Q", "help": "greedy decisions hold unless the best action beats "
      "hold by Q in Q units (default {default}; a full-cap round trip costs about reward scale x "
      "max position x 2 x (fee + slippage))"}),
    (("--learning-rate",), "agent", "learning_rate",
     {"type": float, "metavar": "LR", "help": "Adam learning rate (default {default})"}),
    (("--lr-schedule",), "agent", "lr_schedule",
     {"choices": ["constant", "cosine", "plateau", "step"], "help": "learning-rate schedule "
      "(default {default})"}),
    (("--max-grad-norm",), "agent", "max_grad_norm",
     {"type": float, "metavar": "N", "help": "clip the gradient norm (default {default}; 0 = "
      "off)"}),
    (("--weight-decay",), "agent", "weight_decay",
     {"type": float, "metavar": "L2", "help": "L2 weight decay (default {default})"}),
    (("--dropout",), "agent", "dropout",
     {"type": float, "metavar": "P", "help": "dropout after hidden layers (default {default})"}),
    (("--norm",), "agent", "norm",
     {"choices": ["none", "layer", "batch"], "help": "normalisation of hidden layers ({default})"}),
    (("--amp",), "agent", "amp",
     {"choices": ["off", "bf16", "fp16"], "help": "mixed precision ({default}; fp16 needs CUDA)"}),
    (("--cpu-kernels",), "agent", "cpu_kernels",
     {"choices": ["auto", "off"], "help": "learner's CPU fast path: compiled kernels for "
      "float32 on the CPU (auto) or the plain-torch reference (off); default {default}"}),
]  # fmt: skip


BACKEND_OPTIONS: list[tuple[tuple[str, ...], str, str, dict[str, Any]]] = [
    (("--backend",), "pipeline", "backend",
     {"choices": list(BACKENDS), "help": "where independent runs execute: inprocess (one by "
      "one, for debugging), process (local processes), default {default}, or ray (a Ray cluster; "
      "pip "
      "install 'nexlify[ray]'); results are the same on each"}),
    (("--ray-address",), "pipeline", "ray_address",
     {"metavar": "ADDR", "help": "Ray cluster for --backend ray: local (a private cluster "
      "here), auto (the running `ray start` cluster), ray://HOST:PORT or HOST:PORT "
      "(default $RAY_ADDRESS, else local)"}),
    (("--share-cores",), "pipeline", "share_cores",
     {"action": argparse.BooleanOptionalAction, "help": "with more runs at once than cores, "
      "local processes take turns on the cores in 0.5 s slices (default {default}); results are "
      "the "
      "same either way"}),
]  # fmt: skip


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--ray-address`` (commands that define their own ``--workers``)."""
    _add(parser, BACKEND_OPTIONS)


@functools.cache
def _default_config() -> RunConfig:
    """Built once per process: the help text of every option reads its default here."""
    return RunConfig()


def config_default(section: str, name: str) -> Any:
    """The default of the config field an option sets (``risk``/``execution``/``env`` live in
    ``market``; ``__`` nests, e.g. ``strategies__staking__apy``)."""
    config = _default_config()
    owner: Any = (
        getattr(config.market, section) if section in _MARKET_PARTS else getattr(config, section)
    )
    for part in name.split("__"):
        owner = getattr(owner, part)
    return owner


def describe_default(value: Any) -> str:
    """A default as help text shows it: on/off, space-separated lists, ``none``."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return " ".join(describe_default(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def option_help(section: str, name: str, text: str) -> str:
    """``text`` with ``{default}`` replaced by the config's own default: the configs are the
    one source of every default, help text never restates one."""
    if "{default}" not in text:
        return text
    return text.replace("{default}", describe_default(config_default(section, name)))


def _add(parser: argparse.ArgumentParser, options: list[Any]) -> None:
    for flags, section, name, kwargs in options:
        shown = {**kwargs, "help": option_help(section, name, kwargs.get("help", ""))}
        parser.add_argument(*flags, dest=f"{section}__{name}", default=None, **shown)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Market, risk and cost options."""
    parser.add_argument("--config", metavar="FILE", help="YAML config (flags override it)")
    _add(parser, DATA_OPTIONS)
    _add(parser, STRATEGY_OPTIONS)
    parser.add_argument(
        "--no-kelly", action="store_true", help="size every trade at --max-position"
    )


def add_validation_options(parser: argparse.ArgumentParser) -> None:
    """How candidates are scored: holdout or walk-forward (train and tune)."""
    _add(parser, VALIDATION_OPTIONS)


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Everything ``train`` takes (the original tool's flags plus Nexlify's)."""
    add_data_options(parser)
    _add(parser, TRAIN_OPTIONS)
    add_validation_options(parser)
    _add(parser, BACKEND_OPTIONS)
    _add(parser, AGENT_OPTIONS)
    parser.add_argument(
        "--quick-test",
        action="store_true",
        help="1 pair (the first the strategies can use), 2 initial runs, 3 max iterations, few "
        "episodes (about two minutes)",
    )
    parser.add_argument("--automated", action="store_true", help="no prompts; run with defaults")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run in RUN_DIR with its saved config and data; finished "
        "runs and iterations are kept (only --workers/--share-cores/--backend/--ray-address may "
        "change)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging on the console")


def overrides_from_args(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Flag values that were given, as {section: {field: value}} (None = not given).

    A field path with ``__`` nests (``market__strategies__staking__apy`` ->
    ``{"market": {"strategies": {"staking": {"apy": ...}}}}``).
    """
    out: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if "__" not in key or value is None:
            continue
        section, name = key.split("__", 1)
        target = out.setdefault(section, {})
        *parents, leaf = name.split("__")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    if getattr(args, "no_kelly", False):
        out.setdefault("risk", {})["use_kelly"] = False
    return out
