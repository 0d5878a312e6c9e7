"""A human-readable Markdown report of a pipeline run, next to the JSON summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nexlify.evaluation.edge import describe_edge, describe_selection
from nexlify.io import atomic_write_text
from nexlify.market.strategies import APPROXIMATIONS, STRATEGIES, strategy_pnl

REPORT_FILE = "training_report.md"


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def _metrics_row(name: str, score: Any, m: dict[str, Any]) -> str:
    return (
        f"| {name} | {_fmt(score)} | {_fmt(m.get('avg_return'), '+.3f')} | "
        f"{_fmt(m.get('avg_sharpe'), '.2f')} | {_fmt(m.get('avg_win_rate'), '.2f')} | "
        f"{_fmt(m.get('avg_drawdown'), '.2f')} | {_fmt(m.get('avg_trades'), '.1f')} |"
    )


def render_report(summary: dict[str, Any]) -> str:
    """Markdown text of the report."""
    data = summary.get("data", {})
    val = summary.get("validation_window", {})
    lines = [
        "# Nexlify training report",
        "",
        f"- Data: **{summary.get('data_source')}**, {', '.join(data.get('pairs', []))} "
        f"({data.get('timeframe')}), {data.get('start')} .. {data.get('end')}",
        f"- Validation window (never trained on): {val.get('start')} .. {val.get('end')} "
        f"({val.get('bars')} bars)",
        f"- Stop reason: {summary.get('stop_reason')}",
        f"- Best initial score: {_fmt(summary.get('best_initial_score'))}; final best score: "
        f"{_fmt(summary.get('final_best_score'))} "
        f"({_fmt(summary.get('total_improvement_pct'), '+.2f')}%)",
        f"- Final model: `{summary.get('final_model_path')}` ({describe_selection(summary)})",
        f"- Edge over cash: {_edge_line(summary.get('edge'))}",
        f"- Wall time: {_fmt(summary.get('timings', {}).get('total_seconds'), '.0f')} s",
        "",
        "Score = avg_return x 0.4 + avg_sharpe x 10 x 0.3 + avg_win_rate x 100 x 0.2 "
        "- avg_drawdown x 0.1 (returns and drawdown in percent, Sharpe annualised).",
        "",
        "## Validation results",
        "",
        "| policy | score | return % | Sharpe | win rate | max DD % | trades |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in summary.get("initial_runs", []):
        name = f"run_{run['run_id']} (seed {run['seed']})"
        lines.append(_metrics_row(name, run.get("val_score"), run.get("val_metrics", {})))
    for it in summary.get("retraining_iterations", []):
        name = f"retrain iteration {it['iteration']}" + (
            " (new best)" if it.get("new_best") else ""
        )
        lines.append(_metrics_row(name, it.get("score"), it.get("metrics", {})))
    for name, entry in summary.get("baselines", {}).items():
        lines.append(_metrics_row(f"baseline: {name}", entry["val_score"], entry["val_metrics"]))
    lines += _strategy_lines(summary)
    if summary.get("data_source") == "synthetic":
        lines += ["", "**These results come from the built-in synthetic market, not real data.**"]
    lines += [
        "",
        "The validation window picks the best run and the best checkpoint, so its scores are "
        "optimistic for the chosen model; judge it on data it has not seen (`--test-days`, "
        "walk-forward).",
        "",
    ]
    return "\n".join(lines)


def _edge_line(edge: dict[str, Any] | None) -> str:
    """The no-edge gate's verdict in plain words (bold when there is none)."""
    if not isinstance(edge, dict):
        return "**not tested** (this run predates the no-edge gate)"
    text = describe_edge(edge)
    return text if edge.get("found") else f"**{text}**"


def _strategy_lines(summary: dict[str, Any]) -> list[str]:
    """PnL by strategy (runs with strategies beyond spot only)."""
    runs = summary.get("initial_runs", [])
    rows = [(f"run_{r['run_id']}", r.get("val_metrics", {})) for r in runs]
    rows += [(f"retrain iteration {i['iteration']}", i.get("metrics", {}))
             for i in summary.get("retraining_iterations", [])]  # fmt: skip
    rows = [(name, strategy_pnl(m)) for name, m in rows if strategy_pnl(m)]
    if not rows:
        return []
    names = [s for s in STRATEGIES if any(s in pnl for _, pnl in rows)]
    lines = ["", "## PnL by strategy (average per validation window, quote currency)", "",
             "| policy | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]  # fmt: skip
    for name, pnl in rows:
        lines.append(f"| {name} | " + " | ".join(_fmt(pnl.get(s), "+.2f") for s in names) + " |")
    simulated = any(r.get("val_metrics", {}).get("avg_arb_spreads_simulated") for r in runs)
    if simulated:
        lines += ["", "**Arbitrage ran on SIMULATED venue spreads** (no --arb-venue given)."]
    lines += ["", "Approximations: " + "; ".join(APPROXIMATIONS) + "."]
    return lines


def write_report(summary: dict[str, Any], out_dir: Path) -> Path:
    """Write ``training_report.md`` atomically."""
    return atomic_write_text(out_dir / REPORT_FILE, render_report(summary))
