"""Does a model beat holding cash, once the selection that picked it is accounted for?

- ``excess_daily_return``: the mean daily return over cash (cash earns 0) of one run, from its
  equity curve resampled to UTC days, with a 95% stationary-bootstrap interval (daily returns
  are serially dependent, so blocks are resampled rather than single days).
- ``exposure_to_market``: a run's beta to buy-and-hold's daily returns and the alpha beyond it
  (``stats.market_exposure``), or why none can be fitted; ``describe_market`` says it in words.
- ``edge_verdict``: the no-edge gate. The deflated Sharpe ratio (Bailey & Lopez de Prado 2014)
  of the chosen model on the data it was selected on, with every candidate the selection scored
  counted as a trial: the probability that its true Sharpe beats the best Sharpe as many
  unskilled candidates would show. ``p = 1 - DSR``; an edge is found when ``p < alpha`` and
  the selection is not overfit: the probability of backtest overfitting (CSCV, Bailey et al.
  2015) of choosing among the saved candidates by their in-sample Sharpe is at most ``PBO_MAX``
  (``run_edge_gate``), and the excess is not only the market's: the model's daily excess
  regressed on buy-and-hold's over the same bars (``market``) leaves an alpha whose 95% interval
  lies above 0 (``beyond_market``). A model long a few percent of a rising basket beats cash
  with about buy-and-hold's Sharpe; a strong enough bull window could pass it without this.
- ``read_model_edge`` / ``write_model_edge``: the verdict stored in a model's checkpoint.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nexlify.agent.dqn import read_checkpoint
from nexlify.config import MarketConfig, bars_per_year
from nexlify.data.market_data import MarketData
from nexlify.errors import CheckpointError
from nexlify.evaluation.stats import (
    daily_returns,
    default_mean_block,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    market_exposure,
    probability_of_backtest_overfitting,
    skew_kurtosis,
    stationary_bootstrap_ci,
)
from nexlify.io import atomic_write
from nexlify.market.evaluate import EvaluationResult, evaluate_policy, greedy_policy, greedy_run
from nexlify.market.metrics import annualised_sharpe, simple_returns

EDGE_ALPHA = 0.05
"""An edge is found when the deflated Sharpe test's p-value is below this."""
PBO_MAX = 0.5
"""Above this probability of backtest overfitting, picking the best candidate in sample does
no better out of sample than picking one at random: no edge is claimed."""
CONFIDENCE = 0.95
"""Confidence of the excess-return interval."""
_SECONDS_PER_DAY = 86_400


def equity_days(data: MarketData, result: EvaluationResult, window: int = 0) -> np.ndarray:
    """UTC day number of each point of ``result``'s equity curve in ``window``.

    Point k is the equity after bar ``start + k`` closes; it is dated by that bar's open day.
    """
    curve = result.equity_curves[window]
    start = result.starts[window]
    return np.asarray(data.time[start : start + curve.size] // _SECONDS_PER_DAY)


def window_daily_returns(
    data: MarketData, result: EvaluationResult, window: int | None = 0
) -> np.ndarray:
    """Daily simple returns of one window's equity curve (``None``: every window, in order)."""
    windows = range(len(result.equity_curves)) if window is None else [window]
    return np.concatenate(
        [daily_returns(result.equity_curves[w], equity_days(data, result, w)) for w in windows]
    )


def excess_daily_return(
    data: MarketData,
    result: EvaluationResult,
    *,
    window: int | None = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean daily return over cash of one window (``None``: all windows, one after the
    other), in percent, with its bootstrap interval (see :func:`excess_of_returns`)."""
    return excess_of_returns(window_daily_returns(data, result, window), seed=seed)


def excess_of_returns(returns: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """Mean of daily returns (cash earns 0, so it is the excess over cash), in percent, with a
    95% stationary-bootstrap interval; ``low_pct``/``high_pct`` are None with fewer than 2 days
    (no interval can be estimated)."""
    out: dict[str, Any] = {
        "mean_pct": float(returns.mean()) * 100.0 if returns.size else 0.0,
        "low_pct": None,
        "high_pct": None,
        "confidence": CONFIDENCE,
        "n_days": int(returns.size),
        "method": "n/a: fewer than 2 days",
    }
    if returns.size >= 2:
        block = default_mean_block(returns.size)
        low, high = stationary_bootstrap_ci(returns, mean_block=block, confidence=CONFIDENCE,
                                            seed=seed)  # fmt: skip
        out.update(low_pct=low * 100.0, high_pct=high * 100.0,
                   method=f"stationary bootstrap, mean block {block:.1f} days")  # fmt: skip
    return out


def exposure_to_market(returns: np.ndarray, market: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """:func:`~nexlify.evaluation.stats.market_exposure` of daily excess ``returns`` on the
    market's (buy-and-hold's); where no line can be fitted (a market that never moved, fewer
    than 3 days) the same keys are None and ``why`` says what was missing."""
    try:
        return market_exposure(returns, market, seed=seed)
    except ValueError as exc:
        return {"beta": None, "alpha_daily_pct": None, "alpha_ci95_pct": [None, None],
                "why": str(exc)}  # fmt: skip


def exposures_to_market(
    daily: Mapping[str, np.ndarray], *, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """:func:`exposure_to_market` of every policy's daily excess returns in ``daily`` on
    ``daily["buy_and_hold"]`` (the same days); empty without buy-and-hold."""
    market = daily.get("buy_and_hold")
    if market is None:
        return {}
    return {name: exposure_to_market(days, market, seed=seed) for name, days in daily.items()}


def describe_market(market: dict[str, Any] | None) -> str:
    """``beyond its exposure to buy-and-hold (beta 0.12): alpha +0.0010%/day [-0.0021,
    +0.0040]``; empty for results recorded before the exposure was."""
    if not market:
        return ""
    if market.get("alpha_daily_pct") is None:
        return f"exposure to buy-and-hold: n/a ({market.get('why')})"
    low, high = market["alpha_ci95_pct"]
    return (
        f"beyond its exposure to buy-and-hold (beta {market['beta']:.2f}): alpha "
        f"{market['alpha_daily_pct']:+.4f}%/day [{low:+.4f}, {high:+.4f}]"
    )


def format_excess(excess: dict[str, Any]) -> str:
    """``+0.012% [-0.030, +0.051]``: the mean daily excess return and its interval."""
    text = f"{excess['mean_pct']:+.3f}%"
    if excess.get("low_pct") is not None:
        text += f" [{excess['low_pct']:+.3f}, {excess['high_pct']:+.3f}]"
    return text


def edge_verdict(
    data: MarketData,
    result: EvaluationResult,
    trial_sharpes: Sequence[float],
    *,
    seed: int = 0,
    alpha: float = EDGE_ALPHA,
) -> dict[str, Any]:
    """The no-edge gate on one continuous run of the chosen model (window 0 of ``result``).

    ``trial_sharpes`` are the annualised Sharpe ratios of every candidate the selection scored
    (the chosen one included); their spread sets the Sharpe that luck alone would reach.
    """
    if not trial_sharpes:
        raise ValueError("edge_verdict: no trials (the selection scored no candidate)")
    scale = math.sqrt(bars_per_year(data.timeframe))
    returns = simple_returns(result.equity_curves[0])
    std = float(returns.std(ddof=1)) if returns.size >= 2 else 0.0
    sharpe = float(returns.mean()) / std if std > 1e-12 else 0.0  # per bar; a flat curve: 0
    skew, kurtosis = skew_kurtosis(returns)
    per_bar = np.asarray(trial_sharpes, dtype=np.float64) / scale
    variance = float(per_bar.var(ddof=1)) if per_bar.size >= 2 else 0.0
    dsr = deflated_sharpe_ratio(sharpe, len(per_bar), variance, returns.size, skew, kurtosis)
    p_value = 1.0 - dsr
    start = result.starts[0]
    return {
        "found": bool(p_value < alpha),
        "test": "deflated_sharpe",
        "p": p_value,
        "alpha": alpha,
        "trials": len(per_bar),
        "sharpe": annualised_sharpe(returns, data.timeframe),
        "sharpe_luck_alone": expected_max_sharpe(len(per_bar), variance) * scale,
        "deflated_sharpe": dsr,
        "skew": skew,
        "kurtosis": kurtosis,
        "bars": int(returns.size),
        "period": {
            "start": _iso(int(data.time[start])),
            "end": _iso(int(data.time[start + returns.size])),
        },
        "excess_daily_return": excess_daily_return(data, result, seed=seed),
    }


def describe_selection(summary: dict[str, Any]) -> str:
    """How a pipeline run chose its final model: by validation score, or by the lower bound of
    the daily excess over cash (``pipeline.selection lcb``), with the winner's figures."""
    kind = summary.get("final_model_kind", "single")
    selection = summary.get("selection")
    if not isinstance(selection, dict):
        return f"{kind}, chosen by validation score"
    chosen = selection["candidates"][selection["chosen_index"]]
    return (
        f"{kind}, chosen by the highest lower bound of the daily excess over cash among "
        f"{len(selection['candidates'])} candidates: {chosen['excess_daily_pct']:+.4f}%/day, "
        f"95% interval [{chosen['low_pct']:+.4f}, {chosen['high_pct']:+.4f}]"
    )


def describe_edge(edge: dict[str, Any]) -> str:
    """One plain sentence of the verdict."""
    if "error" in edge:
        return f"NO EDGE SHOWN: the edge test could not run ({edge['error']})"
    what = "EDGE OVER CASH" if edge["found"] else "NO EDGE OVER CASH"
    pbo = edge.get("pbo") or {}
    overfit = (
        f"; probability of backtest overfitting {pbo['value']:.2f} over {pbo['candidates']} "
        f"saved candidates (no edge when > {PBO_MAX:g})"
        if pbo.get("value") is not None
        else ""
    )
    market = edge.get("market")
    if market and edge["p"] < edge["alpha"] and not beyond_market(market):
        what += " BEYOND THE MARKET'S MOVE"  # the deflated Sharpe passed; the alpha did not
    return (
        f"{what}: Sharpe {edge['sharpe']:.2f} vs {edge['sharpe_luck_alone']:.2f} expected from "
        f"the best of {edge['trials']} unskilled candidates; deflated Sharpe p = {edge['p']:.3f} "
        f"(edge when < {edge['alpha']:g}){overfit}; mean daily excess return "
        f"{format_excess(edge['excess_daily_return'])}"
        + (f"; {line}" if (line := describe_market(market)) else "")
        + ("" if not market or beyond_market(market) else " (no edge unless above 0)")
    )


def _iso(unix_seconds: int) -> str:
    import pandas as pd

    return pd.Timestamp(unix_seconds, unit="s", tz="UTC").isoformat()


def write_model_edge(model_path: str | Path, edge: dict[str, Any]) -> None:
    """Store ``edge`` in the checkpoint's ``extra`` (rewritten atomically; weights untouched)."""
    path = Path(model_path)
    checkpoint = read_checkpoint(path)
    checkpoint["extra"] = {**dict(checkpoint.get("extra") or {}), "edge": _plain(edge)}
    atomic_write(path, lambda handle: torch.save(checkpoint, handle))


def _plain(value: Any) -> Any:
    """JSON-style data only, so the checkpoint still loads with ``weights_only=True``."""
    return json.loads(json.dumps(value))


def read_model_edge(model_path: str | Path) -> dict[str, Any] | None:
    """The no-edge gate's verdict for a model: from its checkpoint, else from the pipeline
    summary next to it (when that summary's final model is this file); None when unknown.

    Raises CheckpointError when the file is missing or is not a checkpoint.
    """
    from nexlify.run_layout import SUMMARY_FILE

    path = Path(model_path)
    extra = read_checkpoint(path).get("extra") or {}
    edge = extra.get("edge") if isinstance(extra, dict) else None
    if isinstance(edge, dict):
        return dict(edge)
    summary_path = path.parent / SUMMARY_FILE
    if not summary_path.is_file():
        return None
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{summary_path}: unreadable run summary: {exc}") from exc
    final = summary.get("final_model_path")
    if not final or Path(final).name != path.name:  # the summary describes another model
        return None
    edge = summary.get("edge")
    return dict(edge) if isinstance(edge, dict) else None


def candidate_sharpes(summary: dict[str, Any]) -> list[float]:
    """Annualised validation Sharpe of every checkpoint the selection looked at.

    Selection took the best of every validation of every candidate (each run keeps its best
    checkpoint, then the best run and iteration win), so each validation in a candidate's
    history is a trial: initial runs and retraining iterations (with walk-forward folds, each
    fold's final figure and the newest fold's history), SWA averages, and the ensemble.
    These are averages over the validation windows, used for how many trials there were and
    how widely their Sharpe ratios spread (the deflation's variance).
    """
    sharpes = []
    for unit in summary.get("initial_runs", []):
        sharpes += _unit_sharpes(unit, "val_metrics")
    for unit in summary.get("retraining_iterations", []):
        sharpes += _unit_sharpes(unit, "metrics")
    if "ensemble" in summary:
        sharpes.append(float(summary["ensemble"]["val_metrics"]["avg_sharpe"]))
    return [s for s in sharpes if math.isfinite(s)]


def _unit_sharpes(unit: dict[str, Any], key: str) -> list[float]:
    history = [float(h["val_avg_sharpe"]) for h in unit.get("history") or []
               if "val_avg_sharpe" in h]  # fmt: skip
    folds = [float(fold["val_metrics"]["avg_sharpe"]) for fold in unit.get("folds", [])]
    if folds:
        return folds[:-1] + (history or folds[-1:])
    return history or [float(unit[key]["avg_sharpe"])]


def candidate_paths(summary: dict[str, Any]) -> list[str]:
    """Model files of the pipeline's candidates still on disk: initial runs, then iterations."""
    paths = [r["model_path"] for r in summary.get("initial_runs", [])]
    paths += [i["model_path"] for i in summary.get("retraining_iterations", [])]
    return [p for p in paths if Path(p).is_file()]


def candidate_returns(paths: Sequence[str], data: MarketData, market: MarketConfig) -> np.ndarray:
    """Per-bar simple returns [bars, models] of each saved model, one greedy run over ``data``."""
    from nexlify.agent.ensemble import load_policy

    columns = []
    for path in paths:
        agent, _ = load_policy(path)
        run = evaluate_policy(greedy_policy(agent), data, market, episode_length=0)
        curve = run.equity_curves[0]
        columns.append(curve[1:] / curve[:-1] - 1.0)
    return np.stack(columns, axis=1)


def overfitting_check(returns_TN: np.ndarray) -> dict[str, Any]:
    """PBO of picking the best of the candidates (columns) by in-sample Sharpe, CSCV over 8
    contiguous blocks (2 when fewer than 80 bars): what the gate records under ``pbo``."""
    n_bars, n_models = returns_TN.shape
    blocks = 8 if n_bars >= 80 else 2
    if n_models < 2 or n_bars < blocks:
        why = "fewer than 2 candidates" if n_models < 2 else f"{n_bars} bars"
        return {"value": None, "why": why, "candidates": n_models}
    result = probability_of_backtest_overfitting(returns_TN, n_blocks=blocks)
    return {"value": result.pbo, "n_splits": result.n_splits, "n_blocks": blocks,
            "candidates": n_models, "max": PBO_MAX}  # fmt: skip


def run_edge_gate(
    model_path: str | Path,
    val: MarketData,
    market: MarketConfig,
    summary: dict[str, Any],
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """The gate on a pipeline's final model: one continuous greedy run over its validation
    data, judged against every candidate in ``summary`` (see :func:`edge_verdict`); then the
    selection's probability of backtest overfitting over the saved candidates on the same bars:
    above ``PBO_MAX`` no edge is claimed whatever the deflated Sharpe says."""
    from nexlify.agent.ensemble import load_policy

    agent, _ = load_policy(model_path)
    result = greedy_run(agent, val, market)
    edge = edge_verdict(val, result, candidate_sharpes(summary), seed=seed)
    edge["market"] = market_line(val, result, market, seed=seed)
    paths = candidate_paths(summary)
    continuous = replace(market, env=replace(market.env, episode_length=0))
    returns = candidate_returns(paths, val, continuous) if paths else np.zeros((val.n_bars, 0))
    edge["pbo"] = overfitting_check(returns)
    if edge["found"] and (edge["pbo"]["value"] or 0.0) > PBO_MAX:
        edge["found"] = False
    if edge["found"] and not beyond_market(edge["market"]):
        edge["found"] = False
    return edge


def beyond_market(market: dict[str, Any]) -> bool:
    """Whether a market line (:func:`exposure_to_market`) shows an excess the market's move does
    not explain: the alpha's 95% interval lies above 0. True where no line could be fitted (a
    market that never moved explains nothing; ``why`` in the line says so)."""
    low = market["alpha_ci95_pct"][0]
    return low is None or low > 0


def market_line(
    val: MarketData, result: EvaluationResult, market: MarketConfig, *, seed: int = 0
) -> dict[str, Any]:
    """:func:`exposure_to_market` of a continuous run (``result``, window 0) on buy-and-hold's
    daily returns over the same bars of ``val`` (an equal-weight basket bought once, no risk
    rules; cash earns 0, so both are excess returns over cash)."""
    from nexlify.market.baselines import run_baseline

    hold = run_baseline("buy_and_hold", val, market, episode_length=0)
    return exposure_to_market(
        window_daily_returns(val, result), window_daily_returns(val, hold), seed=seed
    )
