"""Settings of the strategies beyond spot (``MarketConfig.strategies``), one docstring per field.

Sizes and caps are fractions of equity at decision time. ``None`` in a staking field means "the
documented default of the staked asset" (:data:`STAKING_DEFAULTS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nexlify.config import is_finite_number, require

STRATEGIES = ("spot", "staking", "lending", "liquidity", "arbitrage")
"""Every strategy name ``--strategies`` accepts, in the order their actions are laid out."""

FEE_TIERS = (0.0001, 0.0005, 0.003, 0.01)
"""Uniswap V3's fee tiers as fractions."""


@dataclass(frozen=True)
class StakingDefaults:
    """Documented staking parameters of one proof-of-stake asset."""

    apy: float
    """Annual percentage yield as a fraction (compounded per epoch)."""
    epoch_hours: float
    """Length of one reward epoch in hours."""
    unbonding_hours: float
    """Delay between unstaking and the funds being usable."""
    slashing_fraction: float
    """Share of the stake lost in one slashing event."""
    source: str
    """Where the numbers come from."""


STAKING_DEFAULTS: dict[str, StakingDefaults] = {
    "ETH": StakingDefaults(
        apy=0.032,
        epoch_hours=32 * 12 / 3600,
        unbonding_hours=120.0,
        slashing_fraction=1 / 32,
        source="Ethereum consensus layer 2024: ~3.2% APY (consensus + execution rewards), "
        "epoch = 32 slots x 12 s = 6.4 min, exit = 256-epoch (27.3 h) withdrawability delay "
        "plus exit queue and withdrawal sweep (5 days assumed), initial slashing penalty 1/32",
    ),
    "SOL": StakingDefaults(
        apy=0.07,
        epoch_hours=48.0,
        unbonding_hours=48.0,
        slashing_fraction=0.0,
        source="Solana 2024: ~7% APY, epoch = 432,000 slots x ~0.4 s = ~2 days, deactivation "
        "at the end of the epoch (up to one epoch), no slashing on mainnet",
    ),
}
"""Defaults of the assets Nexlify knows; any other asset needs ``apy``, ``epoch_hours`` and
``unbonding_hours`` set."""


def _fraction(v: object, low_open: bool = True) -> bool:
    return is_finite_number(v) and (0 < v <= 1 if low_open else 0 <= v <= 1)  # type: ignore[operator]


def _nonneg(v: object) -> bool:
    return is_finite_number(v) and v >= 0  # type: ignore[operator]


@dataclass(frozen=True)
class StakingConfig:
    """Stake a proof-of-stake asset (bought at the next open) and earn APY per epoch."""

    asset: str = "auto"
    """Base asset to stake, e.g. ETH; auto = the first pair whose base has defaults (ETH, SOL)."""
    apy: float | None = None
    """Annual yield as a fraction; None = the asset's default."""
    epoch_hours: float | None = None
    """Reward epoch in hours (rewards compound once per epoch); None = the asset's default."""
    unbonding_hours: float | None = None
    """Hours from unstaking until the asset is sold back to cash; None = the asset's default."""
    slashing_events_per_year: float = 0.0
    """Expected slashing events per year (random, seeded); 0 = no slashing."""
    slashing_fraction: float | None = None
    """Share of the stake (and of unbonding funds) lost per event; None = the asset's default."""
    stake_size: float = 0.25
    """Each stake action moves up to this fraction of equity into staking."""
    max_allocation: float = 0.5
    """Risk cap: staked plus unbonding value may not exceed this fraction of equity."""

    def __post_init__(self) -> None:
        s = "strategies.staking"
        require(
            isinstance(self.asset, str) and bool(self.asset),
            s,
            "asset",
            self.asset,
            "an asset symbol such as ETH, or auto",
        )
        if self.apy is not None:
            require(
                is_finite_number(self.apy) and 0 <= self.apy < 1,
                s,
                "apy",
                self.apy,
                "a yearly fraction in [0, 1)",
            )
        for name in ("epoch_hours", "unbonding_hours"):
            v = getattr(self, name)
            if v is not None:
                ok = is_finite_number(v) and v >= 0 and (name != "epoch_hours" or v > 0)
                require(ok, s, name, v, "hours > 0" if name == "epoch_hours" else "hours >= 0")
        require(
            _nonneg(self.slashing_events_per_year),
            s,
            "slashing_events_per_year",
            self.slashing_events_per_year,
            "a rate >= 0",
        )
        if self.slashing_fraction is not None:
            require(
                _fraction(self.slashing_fraction, low_open=False),
                s,
                "slashing_fraction",
                self.slashing_fraction,
                "a fraction in [0, 1]",
            )
        require(_fraction(self.stake_size), s, "stake_size", self.stake_size, "a fraction (0, 1]")
        require(
            _fraction(self.max_allocation),
            s,
            "max_allocation",
            self.max_allocation,
            "a fraction (0, 1]",
        )

    def resolved(self, bases: tuple[str, ...]) -> tuple[str, StakingDefaults]:
        """(asset, its parameters with this config's overrides) for a market of these bases."""
        s = "strategies.staking"
        asset = self.asset.upper()
        if asset == "AUTO":
            known = [b for b in bases if b in STAKING_DEFAULTS]
            require(
                bool(known),
                s,
                "asset",
                self.asset,
                f"none of the market's assets {', '.join(bases)} has staking defaults "
                f"({', '.join(STAKING_DEFAULTS)}); trade ETH/USDT or SOL/USDT, or set "
                "strategies.staking.asset to one of the pairs' bases with apy, epoch_hours "
                "and unbonding_hours",
            )
            asset = known[0]
        require(
            asset in bases,
            s,
            "asset",
            self.asset,
            f"must be the base of one of the market's pairs ({', '.join(bases)})",
        )
        base = STAKING_DEFAULTS.get(asset)
        if base is None:
            missing = [
                n for n in ("apy", "epoch_hours", "unbonding_hours") if getattr(self, n) is None
            ]
            require(
                not missing, s, "asset", asset, f"no defaults for {asset}: set {', '.join(missing)}"
            )
            base = StakingDefaults(0.0, 1.0, 0.0, 0.0, "configured")
        overridden = [
            n
            for n in ("apy", "epoch_hours", "unbonding_hours", "slashing_fraction")
            if getattr(self, n) is not None
        ]
        return asset, StakingDefaults(
            apy=base.apy if self.apy is None else self.apy,
            epoch_hours=base.epoch_hours if self.epoch_hours is None else self.epoch_hours,
            unbonding_hours=(
                base.unbonding_hours if self.unbonding_hours is None else self.unbonding_hours
            ),
            slashing_fraction=(
                base.slashing_fraction if self.slashing_fraction is None else self.slashing_fraction
            ),
            source=base.source
            if overridden == []
            else f"{base.source}; overridden: " + ", ".join(overridden),
        )


UTILIZATION_SOURCES = ("constant", "csv", "simulated")


@dataclass(frozen=True)
class LendingConfig:
    """Supply an asset to an Aave-style pool; the supply rate follows the kinked rate curve.

    Defaults follow Aave V3 stablecoin reserves after the April 2024 amendment (optimal usage
    90%, base 0, slope 1 = 9%, slope 2 = 60%, reserve factor 10%); check the live parameters.
    """

    asset: str = "quote"
    """What is supplied: quote (the pairs' quote currency, no price risk) or a pair's base."""
    base_rate: float = 0.0
    """Base variable borrow rate per year (fraction)."""
    slope1: float = 0.09
    """Borrow-rate increase from 0 to the optimal utilisation (fraction per year)."""
    slope2: float = 0.60
    """Further borrow-rate increase from the optimal utilisation to 100% (fraction per year)."""
    optimal_utilization: float = 0.90
    """The kink of the curve, a fraction in (0, 1)."""
    reserve_factor: float = 0.10
    """Share of borrow interest kept by the protocol (suppliers get the rest)."""
    utilization_source: str = "constant"
    """constant (the value below), csv (utilization_csv) or simulated (seeded, mean-reverting)."""
    utilization: float = 0.80
    """Constant utilisation, and the mean of the simulated series."""
    utilization_csv: str | None = None
    """CSV with columns timestamp (or date) and utilization, matched to bars by time (as of)."""
    utilization_volatility: float = 0.05
    """Daily volatility of the simulated utilisation (in logit units)."""
    utilization_halflife_days: float = 7.0
    """Half-life in days of the simulated utilisation's mean reversion."""
    supply_size: float = 0.25
    """Each supply action moves up to this fraction of equity into the pool."""
    max_allocation: float = 0.8
    """Risk cap: the supplied balance may not exceed this fraction of equity."""

    def __post_init__(self) -> None:
        s = "strategies.lending"
        require(
            isinstance(self.asset, str) and bool(self.asset),
            s,
            "asset",
            self.asset,
            "quote or a base asset such as ETH",
        )
        for name in ("base_rate", "slope1", "slope2"):
            v = getattr(self, name)
            require(is_finite_number(v) and 0 <= v <= 10, s, name, v, "a yearly rate in [0, 10]")
        require(
            is_finite_number(self.optimal_utilization) and 0 < self.optimal_utilization < 1,
            s,
            "optimal_utilization",
            self.optimal_utilization,
            "a fraction in (0, 1)",
        )
        require(
            is_finite_number(self.reserve_factor) and 0 <= self.reserve_factor < 1,
            s,
            "reserve_factor",
            self.reserve_factor,
            "a fraction in [0, 1)",
        )
        require(
            self.utilization_source in UTILIZATION_SOURCES,
            s,
            "utilization_source",
            self.utilization_source,
            f"one of {', '.join(UTILIZATION_SOURCES)}",
        )
        require(
            is_finite_number(self.utilization) and 0 <= self.utilization <= 1,
            s,
            "utilization",
            self.utilization,
            "a fraction in [0, 1]",
        )
        require(
            self.utilization_source != "csv" or bool(self.utilization_csv),
            s,
            "utilization_csv",
            self.utilization_csv,
            "utilization_source=csv needs a CSV path (--lending-utilization-csv)",
        )
        require(
            _nonneg(self.utilization_volatility),
            s,
            "utilization_volatility",
            self.utilization_volatility,
            "a number >= 0",
        )
        require(
            is_finite_number(self.utilization_halflife_days) and self.utilization_halflife_days > 0,
            s,
            "utilization_halflife_days",
            self.utilization_halflife_days,
            "days > 0",
        )
        require(
            _fraction(self.supply_size), s, "supply_size", self.supply_size, "a fraction (0, 1]"
        )
        require(
            _fraction(self.max_allocation),
            s,
            "max_allocation",
            self.max_allocation,
            "a fraction (0, 1]",
        )


@dataclass(frozen=True)
class LiquidityConfig:
    """Provide Uniswap V3 liquidity on a pair in a price range around the current price.

    The pool's price is taken to be the pair's candle price (arbitrageurs keep them together).
    Pool volume and depth default to a share of the candles' volume and a fixed depth, or come
    from ``pool_csv``.
    """

    pair: str = "auto"
    """Pair of the pool, e.g. ETH/USDT; auto = the market's first pair."""
    range_width: float = 0.10
    """Range [P / (1 + w), P * (1 + w)] around the price at opening or rebalancing."""
    fee_tier: float = 0.0005
    """Pool fee tier: 0.0001, 0.0005, 0.003 or 0.01; sets the tick spacing 1, 10, 60 or 200."""
    volume_ratio: float = 0.3
    """Pool volume per bar = the candle's quote volume times this (when no pool_csv volume)."""
    depth_2pct_usd: float = 30_000_000.0
    """Pool depth: quote needed to move the price up 2% (sets the pool's active liquidity)."""
    pool_csv: str | None = None
    """CSV with timestamp and volume_usd and/or depth_2pct_usd columns, matched by time (as of)."""
    gas_cost: float = 5.0
    """Gas per on-chain transaction in quote currency (open 1, remove 1, rebalance 2)."""
    lp_size: float = 0.25
    """Opening a position uses up to this fraction of equity."""
    max_allocation: float = 0.5
    """Risk cap: the position's value may not exceed this fraction of equity when opened."""

    def __post_init__(self) -> None:
        s = "strategies.liquidity"
        require(
            isinstance(self.pair, str) and bool(self.pair),
            s,
            "pair",
            self.pair,
            "a pair such as ETH/USDT, or auto",
        )
        require(
            is_finite_number(self.range_width) and 0.001 <= self.range_width <= 100,
            s,
            "range_width",
            self.range_width,
            "a fraction in [0.001, 100]",
        )
        require(
            is_finite_number(self.fee_tier)
            and any(abs(self.fee_tier - t) < 1e-12 for t in FEE_TIERS),
            s,
            "fee_tier",
            self.fee_tier,
            "a Uniswap V3 fee tier: 0.0001, 0.0005, 0.003 or 0.01 (tick spacing 1, 10, 60, 200)",
        )
        require(_nonneg(self.volume_ratio), s, "volume_ratio", self.volume_ratio, "a number >= 0")
        require(
            is_finite_number(self.depth_2pct_usd) and self.depth_2pct_usd > 0,
            s,
            "depth_2pct_usd",
            self.depth_2pct_usd,
            "an amount > 0",
        )
        require(_nonneg(self.gas_cost), s, "gas_cost", self.gas_cost, "an amount >= 0")
        require(_fraction(self.lp_size), s, "lp_size", self.lp_size, "a fraction (0, 1]")
        require(
            _fraction(self.max_allocation),
            s,
            "max_allocation",
            self.max_allocation,
            "a fraction (0, 1]",
        )


ARBITRAGE_MODES = ("rule", "agent")
MAX_VENUES = 4
"""The primary venue plus up to three more."""


@dataclass(frozen=True)
class ArbitrageConfig:
    """Cross-exchange arbitrage of the market's pairs with inventory held on every venue."""

    venues: tuple[str, ...] = ()
    """Other venues as NAME=DIR (candle files named like --data-dir's); none = simulated spreads."""
    primary_dir: str | None = None
    """Candle folder of the training data's own venue; None = the folder the data was read from."""
    venue_fee_rates: tuple[float, ...] = ()
    """Taker fee of each other venue (same order as venues); empty = execution.fee_rate."""
    mode: str = "rule"
    """rule: trade every spread above costs automatically; agent: arbitrage is an action."""
    book_size: float = 0.2
    """Capital of the arbitrage book as a fraction of equity (split over venues and pairs)."""
    max_allocation: float = 0.4
    """Risk cap: the book may not be funded above this fraction of equity."""
    max_trade_fraction: float = 0.5
    """Largest trade as a fraction of the inventory it draws on."""
    min_edge: float = 0.0
    """Extra return beyond both fees and slippage a spread must offer to be traded."""
    transfer_hours: float = 1.0
    """Time a rebalancing transfer between venues takes (funds are unusable meanwhile)."""
    withdrawal_fee_quote: float = 1.0
    """Fixed fee per quote-currency withdrawal (e.g. 1 USDT)."""
    withdrawal_fee_base_usd: float = 5.0
    """Fixed fee per base-asset withdrawal, valued in quote currency."""
    rebalance_threshold: float = 0.5
    """Rebalance when a venue holds less than this share of its even split of an asset."""
    spread_std: float = 0.0002
    """Simulated venues only: std of the venue premium (AR(1); real BTC/ETH/SOL: 1-2 bp)."""
    spread_halflife_hours: float = 2.0
    """Simulated venues only: half-life of the premium's mean reversion."""
    spread_jump_prob: float = 0.002
    """Simulated venues only: chance per bar of a dislocation (jump in the premium)."""
    spread_jump_std: float = 0.004
    """Simulated venues only: std of a dislocation."""
    simulated_venues: int = 1
    """Simulated venues only: how many other venues to simulate."""

    def __post_init__(self) -> None:
        s = "strategies.arbitrage"
        for name in ("venues", "venue_fee_rates"):
            v = getattr(self, name)
            if isinstance(v, (list, str)):
                object.__setattr__(self, name, tuple([v] if isinstance(v, str) else v))
        for entry in self.venues:
            name, sep, folder = str(entry).partition("=")
            require(
                bool(sep) and bool(name) and bool(folder),
                s,
                "venues",
                entry,
                "NAME=DIR, e.g. kucoin=data/kucoin",
            )
        require(
            len(self.venues) < MAX_VENUES,
            s,
            "venues",
            self.venues,
            f"at most {MAX_VENUES - 1} other venues",
        )
        require(
            not self.venue_fee_rates or len(self.venue_fee_rates) == len(self.venues),
            s,
            "venue_fee_rates",
            self.venue_fee_rates,
            f"one rate per venue ({len(self.venues)}) or none",
        )
        for rate in self.venue_fee_rates:
            require(
                is_finite_number(rate) and 0 <= rate < 0.1,
                s,
                "venue_fee_rates",
                rate,
                "a fraction in [0, 0.1)",
            )
        require(self.mode in ARBITRAGE_MODES, s, "mode", self.mode, "rule or agent")
        for name in ("book_size", "max_allocation", "max_trade_fraction", "rebalance_threshold"):
            v = getattr(self, name)
            require(_fraction(v), s, name, v, "a fraction (0, 1]")
        for name in (
            "min_edge",
            "transfer_hours",
            "withdrawal_fee_quote",
            "withdrawal_fee_base_usd",
            "spread_std",
            "spread_jump_std",
        ):
            v = getattr(self, name)
            require(_nonneg(v), s, name, v, "a number >= 0")
        require(
            is_finite_number(self.spread_halflife_hours) and self.spread_halflife_hours > 0,
            s,
            "spread_halflife_hours",
            self.spread_halflife_hours,
            "hours > 0",
        )
        require(
            _fraction(self.spread_jump_prob, low_open=False),
            s,
            "spread_jump_prob",
            self.spread_jump_prob,
            "a probability in [0, 1]",
        )
        require(
            isinstance(self.simulated_venues, int) and 1 <= self.simulated_venues < MAX_VENUES,
            s,
            "simulated_venues",
            self.simulated_venues,
            f"an integer in [1, {MAX_VENUES - 1}]",
        )

    def venue_folders(self) -> list[tuple[str, str]]:
        """(name, folder) of every other venue, in order."""
        return [tuple(str(e).split("=", 1)) for e in self.venues]  # type: ignore[misc]


@dataclass(frozen=True)
class StrategiesConfig:
    """Which strategies the agent may use, and each one's settings."""

    enabled: tuple[str, ...] = ("spot",)
    """Any of spot, staking, lending, liquidity, arbitrage (default spot only)."""
    max_total_allocation: float = 0.9
    """Risk cap over staking, lending, liquidity and arbitrage together, as a fraction of equity."""
    staking: StakingConfig = field(default_factory=StakingConfig)
    """Staking settings."""
    lending: LendingConfig = field(default_factory=LendingConfig)
    """Lending settings."""
    liquidity: LiquidityConfig = field(default_factory=LiquidityConfig)
    """Uniswap V3 liquidity settings."""
    arbitrage: ArbitrageConfig = field(default_factory=ArbitrageConfig)
    """Cross-exchange arbitrage settings."""

    def __post_init__(self) -> None:
        s = "strategies"
        v = self.enabled
        if isinstance(v, (list, str)):
            object.__setattr__(self, "enabled", tuple([v] if isinstance(v, str) else v))
        for name in self.enabled:
            require(name in STRATEGIES, s, "enabled", name, f"one of {', '.join(STRATEGIES)}")
        require(len(self.enabled) >= 1, s, "enabled", self.enabled, "at least one strategy")
        require(
            len(set(self.enabled)) == len(self.enabled), s, "enabled", self.enabled, "no duplicates"
        )
        require(
            _fraction(self.max_total_allocation),
            s,
            "max_total_allocation",
            self.max_total_allocation,
            "a fraction (0, 1]",
        )

    def uses(self, name: str) -> bool:
        """Whether strategy ``name`` is enabled."""
        return name in self.enabled

    @property
    def beyond_spot(self) -> bool:
        """Whether any strategy other than spot is enabled."""
        return any(name != "spot" for name in self.enabled)
