"""Statistics that guard against fooling ourselves.

- ``iqm``: interquartile mean (mean of the middle 50%, as in Agarwal et al. 2021, "Deep RL at the
  edge of the statistical precipice"): robust to a few lucky or broken seeds.
- ``bootstrap_ci``: percentile bootstrap confidence interval of any statistic, seeded.
- ``stationary_bootstrap_ci``: the same for the mean of a serially dependent series (daily
  returns), resampling random-length blocks (Politis & Romano 1994) so autocorrelation and
  volatility clusters survive the resampling; ``daily_returns`` builds that series.
- ``market_exposure``: how much of a return series its exposure to a market explains: beta
  by least squares and the alpha left over (Jensen's alpha, in daily returns), with a
  stationary-bootstrap interval over pairs of days.
- ``probabilistic_sharpe_ratio`` and ``deflated_sharpe_ratio``: Bailey & Lopez de Prado (2012,
  2014). The deflated Sharpe ratio is the probability that the true Sharpe ratio exceeds the
  best one expected from ``n_trials`` unskilled strategies, given the sample length and the
  returns' skewness and kurtosis. Sharpe ratios here are per observation (not annualised).
- ``probability_of_backtest_overfitting``: combinatorially symmetric cross-validation (CSCV,
  Bailey, Borwein, Lopez de Prado & Zhu 2015): how often the configuration that is best in
  sample ranks below the median out of sample.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

EULER_GAMMA = 0.5772156649015329
_NORMAL = NormalDist()


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean of the values between the 25th and 75th percentiles.

    Trims ``floor(n / 4)`` values from each end (scipy's ``trim_mean(x, 0.25)``); with fewer
    than 4 values nothing is trimmed.
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x.size == 0:
        raise ValueError("iqm: no values")
    cut = x.size // 4
    return float(x[cut : x.size - cut].mean())


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = iqm,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (resampling values with replacement)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("bootstrap_ci: no values")
    _check_confidence("bootstrap_ci", confidence)
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, x.size, size=(n_resamples, x.size))]
    return _percentile_interval(np.array([statistic(row) for row in samples]), confidence)


def _check_confidence(who: str, confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"{who}: confidence {confidence} is not in (0, 1)")


def _percentile_interval(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap ``draws`` by percentiles."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def stationary_bootstrap_indices(
    n: int, n_resamples: int, mean_block: float, rng: np.random.Generator
) -> np.ndarray:
    """int [n_resamples, n] indices of the stationary bootstrap (Politis & Romano 1994).

    Each resample is a chain of blocks with geometric lengths of mean ``mean_block``, each
    starting at a uniform random index and wrapping around the end of the series.
    """
    if n < 1 or mean_block < 1:
        raise ValueError(f"stationary bootstrap: need n >= 1 and mean_block >= 1 (n={n}, "
                         f"mean_block={mean_block})")  # fmt: skip
    new_block_RN = rng.random((n_resamples, n)) < 1.0 / mean_block
    new_block_RN[:, 0] = True
    block_start_RN = rng.integers(0, n, size=(n_resamples, n))
    position_N = np.arange(n)
    # For every draw: where its block began (in the resample) and where that block starts.
    began_RN = np.maximum.accumulate(np.where(new_block_RN, position_N, 0), axis=1)
    first_RN = np.take_along_axis(block_start_RN, began_RN, axis=1)
    return np.asarray((first_RN + position_N - began_RN) % n)


def default_mean_block(n: int) -> float:
    """Mean block length ``max(1, n^(1/3))``: the usual rate for a mean's bootstrap."""
    return max(1.0, float(n) ** (1.0 / 3.0))


def stationary_bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    mean_block: float | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the mean of a serially dependent series (stationary bootstrap).

    ``mean_block`` defaults to :func:`default_mean_block` of the series length.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("stationary_bootstrap_ci: no values")
    _check_confidence("stationary_bootstrap_ci", confidence)
    block = default_mean_block(x.size) if mean_block is None else mean_block
    rng = np.random.default_rng(seed)
    means = x[stationary_bootstrap_indices(x.size, n_resamples, block, rng)].mean(axis=1)
    return _percentile_interval(means, confidence)


def market_exposure(
    returns: Sequence[float] | np.ndarray,
    market: Sequence[float] | np.ndarray,
    *,
    mean_block: float | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """``returns = alpha + beta * market + noise``, fitted by least squares on the same days.

    Both series are excess returns over cash, per day. ``alpha`` is the mean daily return the
    series earned beyond what holding ``beta`` of the market all the time would have made: a
    policy that is long a rising market for part of the time shows a positive mean and a beta
    above 0, and only the alpha is its own. Timing the market well (more exposure before rises)
    shows in the alpha too. The interval resamples pairs of days with the stationary bootstrap
    (``mean_block`` defaults to :func:`default_mean_block`), refitting both coefficients.

    Raises:
        ValueError: different lengths, fewer than 3 days, non-finite values, or a market
            that never moves (no beta can be fitted).
    """
    y = np.asarray(returns, dtype=np.float64).ravel()
    x = np.asarray(market, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"market_exposure: {y.size} returns and {x.size} market days differ")
    if y.size < 3:
        raise ValueError(f"market_exposure: {y.size} days; at least 3 are needed")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("market_exposure: non-finite returns")
    _check_confidence("market_exposure", confidence)
    if np.var(x) <= 0.0:
        raise ValueError("market_exposure: the market's returns never change; no beta")
    beta, alpha = _least_squares(x[None, :], y[None, :])
    block = default_mean_block(y.size) if mean_block is None else mean_block
    rng = np.random.default_rng(seed)
    idx_RN = stationary_bootstrap_indices(y.size, n_resamples, block, rng)
    _, alphas_R = _least_squares(x[idx_RN], y[idx_RN])
    # a resample whose market days are all one value has no line (NaN): left out
    low, high = _percentile_interval(alphas_R[np.isfinite(alphas_R)], confidence)
    return {
        "beta": float(beta[0]),
        "alpha_daily_pct": float(alpha[0]) * 100.0,
        "alpha_ci95_pct": [low * 100.0, high * 100.0],
        "correlation": float(np.corrcoef(x, y)[0, 1]) if np.var(y) > 0 else 0.0,
        "days": int(y.size),
        "method": f"least squares; stationary bootstrap of days, mean block {block:.1f}",
    }


def _least_squares(x_RN: np.ndarray, y_RN: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slope and intercept of ``y`` on ``x`` per row (NaN where a row's ``x`` is constant)."""
    dx_RN = x_RN - x_RN.mean(axis=1, keepdims=True)
    var_R = (dx_RN * dx_RN).mean(axis=1)
    cov_R = (dx_RN * (y_RN - y_RN.mean(axis=1, keepdims=True))).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        beta_R = np.where(var_R > 0.0, cov_R / np.where(var_R > 0.0, var_R, 1.0), np.nan)
    return beta_R, y_RN.mean(axis=1) - beta_R * x_RN.mean(axis=1)


def daily_returns(
    equity: Sequence[float] | np.ndarray, day: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Simple returns of an equity curve resampled to days (the last value of each day).

    ``day[k]`` is the day number (e.g. UTC ``unix_seconds // 86400``) of ``equity[k]``; days must
    not decrease. The first day's return is measured from ``equity[0]``.
    """
    eq = np.asarray(equity, dtype=np.float64)
    d = np.asarray(day, dtype=np.int64)
    if eq.ndim != 1 or eq.shape != d.shape or eq.size == 0:
        raise ValueError(f"daily_returns: equity {eq.shape} and day {d.shape} must be the same 1-D")
    if np.any(np.diff(d) < 0):
        raise ValueError("daily_returns: days must not decrease")
    last_of_day = np.flatnonzero(np.append(d[1:] != d[:-1], True))
    closes = np.concatenate([[eq[0]], eq[last_of_day]])
    if last_of_day[0] == 0:  # the first point closes its own day: no return from it to itself
        closes = closes[1:]
    return np.asarray(closes[1:] / closes[:-1] - 1.0)


def skew_kurtosis(returns: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(skewness, raw kurtosis) of a return series: (0, 3), a normal's, when it has fewer than
    three values or no spread (a flat curve), where neither can be estimated."""
    r = np.asarray(returns, dtype=np.float64)
    std = float(r.std()) if r.size >= 3 else 0.0
    if std <= 1e-12:
        return 0.0, 3.0
    z = (r - r.mean()) / std
    return float(np.mean(z**3)), float(np.mean(z**4))


def sharpe_ratio(returns: Sequence[float] | np.ndarray) -> float:
    """Per-observation Sharpe ratio mean / std (ddof=1); 0 when the std is 0."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return 0.0
    std = r.std(ddof=1)
    return float(r.mean() / std) if std > 0 else 0.0


def _sharpe_std_factor(sharpe: float, skew: float, kurtosis: float) -> float:
    value = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if value <= 0:
        raise ValueError(
            f"skew={skew} and kurtosis={kurtosis} give a non-positive Sharpe variance term"
        )
    return math.sqrt(value)


def probabilistic_sharpe_ratio(
    sharpe: float, benchmark: float, n_obs: int, skew: float = 0.0, kurtosis: float = 3.0
) -> float:
    """P(true Sharpe > benchmark) given an observed per-observation Sharpe over ``n_obs``.

    ``kurtosis`` is the raw (not excess) kurtosis: 3 for normal returns.
    """
    if n_obs < 2:
        raise ValueError("probabilistic_sharpe_ratio: need at least 2 observations")
    z = (sharpe - benchmark) * math.sqrt(n_obs - 1) / _sharpe_std_factor(sharpe, skew, kurtosis)
    return _NORMAL.cdf(z)


def expected_max_sharpe(n_trials: int, sharpe_variance: float, mean: float = 0.0) -> float:
    """Expected best Sharpe ratio among ``n_trials`` unskilled trials (the deflation threshold).

    ``sqrt(V) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e)))`` with g Euler's constant.
    """
    if n_trials < 2:
        return mean
    if sharpe_variance < 0:
        raise ValueError("expected_max_sharpe: the variance of Sharpe ratios cannot be negative")
    first = _NORMAL.inv_cdf(1.0 - 1.0 / n_trials)
    second = _NORMAL.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return mean + math.sqrt(sharpe_variance) * ((1 - EULER_GAMMA) * first + EULER_GAMMA * second)


def deflated_sharpe_ratio(
    sharpe: float,
    n_trials: int,
    sharpe_variance: float,
    n_obs: int,
    skew: float = 0.0,
    kurtosis: float = 3.0,
) -> float:
    """Deflated Sharpe ratio: the PSR against the expected maximum Sharpe of ``n_trials``.

    All Sharpe values are per observation; ``sharpe_variance`` is the variance of the Sharpe
    ratios across the trials that were tried (the selection the deflation corrects for).
    """
    threshold = expected_max_sharpe(n_trials, sharpe_variance)
    return probabilistic_sharpe_ratio(sharpe, threshold, n_obs, skew, kurtosis)


@dataclass(frozen=True)
class PBOResult:
    """Outcome of CSCV: the probability of backtest overfitting and its ingredients."""

    pbo: float
    """Share of splits where the in-sample best ranks at or below the out-of-sample median."""
    logits: tuple[float, ...]
    """Per split: log(w / (1 - w)) of the in-sample best's relative out-of-sample rank w."""
    n_splits: int
    """Number of train/test combinations evaluated: C(S, S/2)."""


def probability_of_backtest_overfitting(
    returns_TN: np.ndarray,
    n_blocks: int = 16,
    metric: Callable[[np.ndarray], np.ndarray] | None = None,
) -> PBOResult:
    """CSCV on a [T observations, N configurations] matrix of per-period returns.

    The rows are cut into ``n_blocks`` (even) contiguous blocks; for every choice of half the
    blocks as in-sample, the configuration with the best in-sample metric (default: Sharpe) is
    ranked out of sample; its relative rank w = rank / (N + 1) gives a logit, and PBO is the
    share of logits <= 0.
    """
    m = np.asarray(returns_TN, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError("PBO: need a [T, N] matrix with at least 2 configurations")
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"PBO: n_blocks must be even and >= 2, got {n_blocks}")
    if m.shape[0] < n_blocks:
        raise ValueError(f"PBO: {m.shape[0]} observations cannot fill {n_blocks} blocks")
    score = metric or _column_sharpe
    blocks = np.array_split(np.arange(m.shape[0]), n_blocks)
    n = m.shape[1]
    logits = []
    for chosen in itertools.combinations(range(n_blocks), n_blocks // 2):
        train_rows = np.concatenate([blocks[i] for i in chosen])
        test_rows = np.concatenate([blocks[i] for i in range(n_blocks) if i not in chosen])
        best = int(np.argmax(score(m[train_rows])))
        oos = score(m[test_rows])
        rank = 1 + int(np.sum(oos < oos[best])) + 0.5 * int(np.sum(oos == oos[best]) - 1)
        w = rank / (n + 1)
        logits.append(math.log(w / (1 - w)))
    arr = np.array(logits)
    return PBOResult(pbo=float(np.mean(arr <= 0)), logits=tuple(logits), n_splits=len(logits))


def _column_sharpe(m: np.ndarray) -> np.ndarray:
    std = m.std(axis=0, ddof=1)
    mean = m.mean(axis=0)
    return np.divide(mean, std, out=np.zeros_like(mean), where=std > 0)


def generalization_gap(train_score: float, validation_score: float) -> float:
    """Validation minus training score, relative to |training score| (negative = worse)."""
    return (validation_score - train_score) / max(abs(train_score), 1e-9)
