"""Typed configuration: one dataclass per concern, one source of defaults.

Every field has a one-line docstring. Validation errors name the field and the bad value.
Fractions are written as fractions (``0.02`` is 2%), not percent, unless the name ends in ``_pct``
and says otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from nexlify.errors import ConfigError

if TYPE_CHECKING:
    from nexlify.config.strategies import StrategiesConfig

TIMEFRAMES: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}
"""Supported candle timeframes and their length in seconds."""


def timeframe_seconds(timeframe: str) -> int:
    """Length of one bar in seconds; raises ConfigError for an unknown timeframe."""
    try:
        return TIMEFRAMES[timeframe]
    except KeyError:
        raise ConfigError(
            f"timeframe: unknown value {timeframe!r}; choose one of {', '.join(TIMEFRAMES)}"
        ) from None


def bars_per_year(timeframe: str) -> float:
    """Bars in a 365-day year (crypto trades every day), used to annualise Sharpe and Sortino."""
    return 365.0 * 86400.0 / timeframe_seconds(timeframe)


def require(ok: bool, section: str, name: str, value: object, rule: str) -> None:
    """Raise ConfigError ``section.name: value is invalid (rule)`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{section}.{name}: {value!r} is invalid ({rule})")


def is_finite_number(x: object) -> bool:
    """A real int or float (not a bool) that is finite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_int(x: object) -> bool:
    """An int that is not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class RiskConfig:
    """Hard risk rules the simulator enforces on every step (defaults of the original tool)."""

    stop_loss: float = 0.02
    """Stop-loss distance below the entry price as a fraction (0.02 = 2%); 0 disables it."""
    take_profit: float = 0.05
    """Take-profit distance above the entry price as a fraction; 0 disables it."""
    trailing_stop: float = 0.03
    """Trailing-stop distance below the highest high since entry, as a fraction; 0 disables it."""
    max_position: float = 0.05
    """Largest position per trade as a fraction of equity at decision time."""
    max_concurrent_trades: int = 3
    """Most positions open at once across all pairs."""
    daily_loss_limit: float = 0.05
    """No new entries for the rest of the UTC day once equity is this far below the day's open."""
    close_on_daily_limit: bool = False
    """Also close every open position (at the next open) when the daily loss limit is hit."""
    use_kelly: bool = True
    """Size trades by Kelly on the episode's recent closed trades (capped by max_position)."""
    kelly_fraction: float = 0.5
    """Multiplier on the full Kelly fraction (0.5 = half-Kelly)."""
    kelly_window: int = 50
    """How many of the most recent closed trades of the episode feed the Kelly estimate."""
    kelly_min_trades: int = 10
    """Below this many closed trades the Kelly estimate is not trusted and max_position is used."""
    kelly_min_fraction: float = 0.005
    """Floor on the Kelly size so a losing streak cannot stop trading (and learning) for good."""

    def __post_init__(self) -> None:
        s = "risk"
        for name in ("stop_loss", "take_profit", "trailing_stop"):
            v = getattr(self, name)
            require(
                is_finite_number(v) and 0.0 <= v < 1.0,
                s,
                name,
                v,
                "a fraction in [0, 1); 0 disables",
            )
        require(
            self.take_profit == 0 or self.stop_loss == 0 or self.take_profit > self.stop_loss,
            s,
            "take_profit",
            self.take_profit,
            f"must be above stop_loss={self.stop_loss}",
        )
        require(
            is_finite_number(self.max_position) and 0 < self.max_position <= 1,
            s,
            "max_position",
            self.max_position,
            "a fraction in (0, 1]",
        )
        require(
            isinstance(self.max_concurrent_trades, int) and self.max_concurrent_trades >= 1,
            s,
            "max_concurrent_trades",
            self.max_concurrent_trades,
            "an integer >= 1",
        )
        require(
            is_finite_number(self.daily_loss_limit) and 0 < self.daily_loss_limit <= 1,
            s,
            "daily_loss_limit",
            self.daily_loss_limit,
            "a fraction in (0, 1]",
        )
        require(
            is_finite_number(self.kelly_fraction) and 0 < self.kelly_fraction <= 1,
            s,
            "kelly_fraction",
            self.kelly_fraction,
            "a fraction in (0, 1]",
        )
        require(self.kelly_window >= 2, s, "kelly_window", self.kelly_window, "an integer >= 2")
        require(
            1 <= self.kelly_min_trades <= self.kelly_window,
            s,
            "kelly_min_trades",
            self.kelly_min_trades,
            f"an integer in [1, kelly_window={self.kelly_window}]",
        )
        require(
            is_finite_number(self.kelly_min_fraction)
            and 0 <= self.kelly_min_fraction <= self.max_position,
            s,
            "kelly_min_fraction",
            self.kelly_min_fraction,
            f"a fraction in [0, max_position={self.max_position}]",
        )


@dataclass(frozen=True)
class ExecutionConfig:
    """How orders fill: costs and the starting account."""

    fee_rate: float = 0.001
    """Taker fee per side as a fraction of notional (0.001 = 0.1%, Binance spot)."""
    slippage_bps: float = 5.0
    """Adverse slippage on every fill in basis points (buys fill higher, sells lower)."""
    initial_balance: float = 10_000.0
    """Starting cash in quote currency (USDT)."""

    def __post_init__(self) -> None:
        s = "execution"
        require(
            is_finite_number(self.fee_rate) and 0 <= self.fee_rate < 0.1,
            s,
            "fee_rate",
            self.fee_rate,
            "a fraction in [0, 0.1)",
        )
        require(
            is_finite_number(self.slippage_bps) and 0 <= self.slippage_bps < 1000,
            s,
            "slippage_bps",
            self.slippage_bps,
            "basis points in [0, 1000)",
        )
        require(
            is_finite_number(self.initial_balance) and self.initial_balance > 0,
            s,
            "initial_balance",
            self.initial_balance,
            "a positive amount",
        )


@dataclass(frozen=True)
class EnvConfig:
    """The trading environment: episodes, observations and termination."""

    episode_length: int = 720
    """Decision steps per episode (720 = 30 days of 1h bars); 0 runs the whole data span once."""
    random_start: bool = True
    """Start each episode at a random bar (training); False starts at the first usable bar."""
    obs_window: int = 1
    """How many past bars of market features each observation stacks (1 = the current bar only)."""
    ruin_equity: float = 0.5
    """An episode terminates when equity falls below this fraction of the starting balance."""
    close_at_end: bool = True
    """Liquidate open positions at an episode's last close (with fees) so results are realised."""
    max_trade_log: int = 4096
    """Closed trades kept per env and episode when trades are recorded (evaluation only)."""
    turnover_penalty: float = 0.0
    """Extra cost of every spot fill in the reward only, as a multiple of the fee it paid (1.0:
    the agent learns as if fees were doubled); equity and every reported figure are unaffected."""
    min_hold_bars: int = 0
    """A sell signal closes a position only once it has been held this many bars (0: at once).
    The stop-loss, take-profit, trailing stop, daily-loss lock and episode end still close it
    at any age: the rule slows the agent's own exits, never the risk rules'."""
    decision_interval: int = 1
    """Bars per decision: the agent's action fills at the next bar's open and it holds through
    the rest of the interval, one transition with the interval's summed reward (action repeat
    as in DQN's frame skip). Stops, take-profit and the daily-loss rules still act on every bar;
    ``episode_length`` stays in bars."""

    def decisions(self, bars: int) -> int:
        """Decisions (transitions) in ``bars`` bars: one per ``decision_interval``, the last
        interval cut short by the end."""
        return -(-bars // self.decision_interval)

    def __post_init__(self) -> None:
        s = "env"
        require(
            isinstance(self.episode_length, int) and self.episode_length >= 0,
            s,
            "episode_length",
            self.episode_length,
            "an integer >= 0 (0 = whole span)",
        )
        require(
            isinstance(self.obs_window, int) and 1 <= self.obs_window <= 512,
            s,
            "obs_window",
            self.obs_window,
            "an integer in [1, 512]",
        )
        require(
            is_finite_number(self.ruin_equity) and 0 <= self.ruin_equity < 1,
            s,
            "ruin_equity",
            self.ruin_equity,
            "a fraction in [0, 1)",
        )
        require(self.max_trade_log >= 1, s, "max_trade_log", self.max_trade_log, "an integer >= 1")
        require(
            is_finite_number(self.turnover_penalty) and 0 <= self.turnover_penalty <= 100,
            s,
            "turnover_penalty",
            self.turnover_penalty,
            "a multiple of the fee in [0, 100]",
        )
        require(
            is_int(self.min_hold_bars) and 0 <= self.min_hold_bars <= 10_000,
            s,
            "min_hold_bars",
            self.min_hold_bars,
            "an integer number of bars in [0, 10000]",
        )
        require(
            is_int(self.decision_interval) and 1 <= self.decision_interval <= 10_000,
            s,
            "decision_interval",
            self.decision_interval,
            "an integer number of bars in [1, 10000]",
        )


@dataclass(frozen=True)
class MarketConfig:
    """Everything the simulator needs: risk rules, execution costs and the environment shape."""

    risk: RiskConfig = field(default_factory=RiskConfig)
    """Hard risk rules."""
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    """Fees, slippage and starting balance."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """Episodes and observations."""
    strategies: StrategiesConfig = field(default_factory=lambda: _default_strategies())
    """Strategies beyond spot (staking, lending, liquidity, arbitrage); default spot only."""


def _default_strategies() -> StrategiesConfig:
    # Imported here: nexlify.config.strategies uses this module's validation helpers.
    from nexlify.config.strategies import StrategiesConfig

    return StrategiesConfig()


T = TypeVar("T")


def from_dict(cls: type[T], values: dict[str, Any], section: str = "") -> T:
    """Build a (nested) config dataclass from a plain dict, refusing unknown keys by name."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(values, dict):
        raise ConfigError(f"{section or cls.__name__}: expected a mapping, got {values!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        where = f"{section}.{key}" if section else key
        if key not in known:
            raise ConfigError(f"{where}: unknown setting; known: {', '.join(sorted(known))}")
        ftype = known[key].type
        nested = _nested_dataclass(cls, key, ftype)
        kwargs[key] = from_dict(nested, value, where) if nested is not None else value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{section or cls.__name__}: {exc}") from None


def _nested_dataclass(cls: type, name: str, ftype: object) -> type | None:
    default = next(f for f in dataclasses.fields(cls) if f.name == name)
    if default.default_factory is not dataclasses.MISSING:
        probe = default.default_factory()
        if dataclasses.is_dataclass(probe):
            return type(probe)
    return None


def to_dict(config: object) -> dict[str, Any]:
    """Plain-dict form of a config dataclass (for YAML/JSON run records)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"{config!r} is not a dataclass instance")
    return dataclasses.asdict(config)
