"""Self-contained HTML reports (plotly.js inlined: the file opens offline, anywhere).

``build_run_report`` rebuilds a pipeline run's report from its folder (``nexlify report``);
``backtest_report_html`` renders a backtest.
"""

from __future__ import annotations

import html
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.offline

from nexlify.agent.ensemble import load_policy
from nexlify.data.market_data import MarketData, holdout_split
from nexlify.errors import DataError
from nexlify.evaluation.backtest import METRIC_COLUMNS, BacktestResult
from nexlify.evaluation.edge import (
    candidate_paths,
    candidate_returns,
    describe_edge,
    describe_selection,
    excess_of_returns,
    exposures_to_market,
    format_excess,
    window_daily_returns,
)
from nexlify.evaluation.stats import (
    bootstrap_ci,
    deflated_sharpe_ratio,
    generalization_gap,
    iqm,
    probability_of_backtest_overfitting,
)
from nexlify.io import atomic_write_text
from nexlify.market.baselines import run_baselines
from nexlify.market.evaluate import EvaluationResult, evaluate_policy, greedy_policy, greedy_run
from nexlify.report.figures import (
    drawdown_figure,
    equity_figure,
    history_figure,
    progress_figure,
    trades_figure,
)
from nexlify.report.tables import EXPOSURE_CAPTION

REPORT_HTML = "report.html"
GAP_FLAG = -0.5
"""A validation score below training by more than half of |training score| is flagged."""

_STYLE = """body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.warn{color:#b00;font-weight:bold}.good{color:#070;font-weight:bold}.note{color:#555}"""


def figure_html(fig: go.Figure) -> str:
    return str(fig.to_html(full_html=False, include_plotlyjs=False, config={"responsive": True}))


def table_html(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a" if value is None else ("inf" if value > 0 else "-inf")
    return format(value, spec)


def metrics_table(runs: dict[str, EvaluationResult], data: MarketData | None = None) -> str:
    """One row per policy; with ``data``, also its mean daily return over cash and 95% CI,
    and (with buy-and-hold among ``runs``) its beta to buy-and-hold and the alpha beyond it."""
    rows = [[name] + [_fmt(r.metrics[0].to_dict()[key], fmt) for key, _, fmt in METRIC_COLUMNS]
            for name, r in runs.items()]  # fmt: skip
    header = ["policy"] + [title for _, title, _ in METRIC_COLUMNS]
    if data is None:
        return table_html(header, rows)
    daily = {name: window_daily_returns(data, result) for name, result in runs.items()}
    excess = {name: excess_of_returns(days) for name, days in daily.items()}
    lines = exposures_to_market(daily)
    for row, name in zip(rows, runs, strict=True):
        row.append(format_excess(excess[name]))
        if lines:
            row += _market_cells(lines[name])
    method = next(iter(excess.values()))["method"] if excess else ""
    note = (f"excess %/day: mean daily return over cash (which earns 0), [95% interval] by "
            f"{method}.")  # fmt: skip
    header.append("excess %/day [95% CI]")
    if lines:
        header += ["market beta", "alpha %/day [95% CI]"]
        note += f" {EXPOSURE_CAPTION[:1].upper()}{EXPOSURE_CAPTION[1:]}."
    return table_html(header, rows) + f"<p class='note'>{html.escape(note)}</p>"


def _market_cells(line: dict[str, Any]) -> list[str]:
    """Beta and ``alpha [low, high]`` (percent per day), n/a where no line could be fitted."""
    if line["beta"] is None:
        return ["n/a", f"n/a ({line.get('why')})"]
    low, high = line["alpha_ci95_pct"]
    return [f"{line['beta']:.3f}", f"{line['alpha_daily_pct']:+.4f} [{low:+.4f}, {high:+.4f}]"]


def render_page(title: str, sections: list[tuple[str, str]]) -> str:
    """A complete HTML document with plotly.js inlined."""
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
        f"<script>{plotly.offline.get_plotlyjs()}</script></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def strategy_table(runs: dict[str, EvaluationResult]) -> str:
    """PnL by strategy per policy ("" when only spot is on), with the modelling approximations."""
    from nexlify.market.strategies import APPROXIMATIONS, STRATEGIES

    with_books = {name: r.strategies[0] for name, r in runs.items() if r.strategies}
    if not with_books:
        return ""
    names = [s for s in STRATEGIES if any(f"pnl_{s}" in b for b in with_books.values())]
    rows = [[name] + [_fmt(b.get(f"pnl_{s}"), "+.2f") for s in names]
            for name, b in with_books.items()]  # fmt: skip
    notes = "; ".join(APPROXIMATIONS)
    if any(b.get("arb_spreads_simulated") for b in with_books.values()):
        notes = "Arbitrage ran on SIMULATED venue spreads. " + notes
    return table_html(["policy", *names], rows) + f"<p class='note'>{html.escape(notes)}.</p>"


def _policy_sections(data: MarketData, runs: dict[str, EvaluationResult]) -> list[tuple[str, str]]:
    note = ("<p class='note'>One continuous run over the whole period per policy (the validation "
            "score instead averages separate windows of the episode length).</p>")  # fmt: skip
    sections = [
        ("Results", note + metrics_table(runs, data)),
        *([("PnL by strategy", table)] if (table := strategy_table(runs)) else []),
        ("Equity", figure_html(equity_figure(data, runs))),
        ("Drawdown", figure_html(drawdown_figure(data, runs))),
    ]
    for pair in data.pairs:
        sections.append((f"Trades: {pair}", figure_html(trades_figure(data, runs["model"], pair))))
    return sections


def backtest_report_html(result: BacktestResult, model_path: str) -> str:
    """The report of ``nexlify backtest --html``."""
    runs = {"model": result.model, **result.baselines}
    start, end = result.data.span()
    title = f"Nexlify backtest: {Path(model_path).name}, {start:%Y-%m-%d} .. {end:%Y-%m-%d}"
    intro = (f"<p class='note'>Data: {html.escape(result.data.source)}, "
             f"{', '.join(result.data.pairs)} ({result.data.timeframe}), "
             f"{result.data.n_bars} bars. One continuous greedy run.</p>")  # fmt: skip
    return render_page(title, [("Period", intro), *_policy_sections(result.data, runs)])


def statistics_section(
    summary: dict[str, Any], returns_TN: np.ndarray, final: int, gap: dict[str, float] | None
) -> str:
    """IQM with a bootstrap CI over seeds, deflated Sharpe, PBO and the train/validation gap."""
    scores = [r["val_score"] for r in summary["initial_runs"]]
    low, high = bootstrap_ci(scores)
    rows = [["initial runs' validation score: IQM [95% bootstrap CI]",
             f"{iqm(scores):.3f} [{low:.3f}, {high:.3f}] over {len(scores)} seeds"]]  # fmt: skip
    r = returns_TN[:, final]
    std = r.std(ddof=1)
    if std > 0 and returns_TN.shape[1] >= 2:
        sharpes = returns_TN.mean(axis=0) / np.maximum(returns_TN.std(axis=0, ddof=1), 1e-12)
        centred = (r - r.mean()) / std
        skew, kurt = float((centred**3).mean()), float((centred**4).mean())
        dsr = deflated_sharpe_ratio(float(r.mean() / std), returns_TN.shape[1],
                                    float(sharpes.var(ddof=1)), r.size, skew, kurt)  # fmt: skip
        rows.append([f"deflated Sharpe ratio of the final model ({returns_TN.shape[1]} models "
                     "tried)", f"{dsr:.3f} (probability that its true Sharpe beats the best of "
                     "as many unskilled tries)"])  # fmt: skip
    else:
        rows.append(["deflated Sharpe ratio", "n/a (the final model did not trade)"])
    blocks = 8 if returns_TN.shape[0] >= 80 else 2
    if returns_TN.shape[1] >= 2:
        pbo = probability_of_backtest_overfitting(returns_TN, n_blocks=blocks)
        rows.append(["probability of backtest overfitting (CSCV over the saved models)",
                     f"{pbo.pbo:.2f} ({pbo.n_splits} splits of {blocks} blocks)"])  # fmt: skip
    if gap is not None:
        flag = " <- LARGE" if gap["relative"] < GAP_FLAG else ""
        rows.append(["final model: training vs validation score",
                     f"{gap['train_score']:.3f} vs {gap['validation_score']:.3f} "
                     f"({gap['relative'] * 100:+.0f}%){flag}"])  # fmt: skip
    return table_html(["statistic", "value"], rows)


def edge_section(summary: dict[str, Any]) -> str:
    """The no-edge gate's verdict, in plain words (red when there is no edge)."""
    edge = summary.get("edge")
    if not isinstance(edge, dict):
        return "<p class='warn'>This run has no edge test (its summary predates the gate).</p>"
    style = "good" if edge.get("found") else "warn"
    note = (
        "<p class='note'>The chosen model on the data it was selected on, against cash, with "
        "every candidate the pipeline scored counted as a trial (deflated Sharpe ratio, "
        "Bailey &amp; Lopez de Prado 2014). Judge it again on data it has never seen.</p>"
    )
    return f"<p class='{style}'>{html.escape(describe_edge(edge))}</p>{note}"


def build_run_report(out_dir: Path, summary: dict[str, Any], market: MarketData) -> Path:
    """Write ``report.html`` of a pipeline run from its summary and the market it ran on."""
    from nexlify.train.config import run_config_from_dict

    config = run_config_from_dict(summary["config"])
    train, val, _ = holdout_split(market, config.data.validation_days, config.data.test_days)
    if (
        val.pairs != tuple(summary["data"]["pairs"])
        or val.n_bars != summary["validation_window"]["bars"]
    ):
        raise DataError(f"{out_dir}: the data found now is not the data this run used")
    final_path = summary["final_model_path"]
    agent, _ = load_policy(final_path)
    market_cfg = replace(config.market, env=replace(config.market.env, episode_length=0))
    model = greedy_run(agent, val, market_cfg)
    runs = {"model": model, **run_baselines(val, market_cfg, episode_length=0, history=market)}
    paths = candidate_paths(summary)
    source = summary.get("final_model_source", final_path)
    final = paths.index(source) if source in paths else 0
    returns = candidate_returns(paths, val, market_cfg) if paths else np.zeros((val.n_bars, 1))
    train_score = evaluate_policy(greedy_policy(agent), train, config.market).score()
    val_score = float(summary.get("final_best_score", model.score()))
    gap = {"train_score": train_score, "validation_score": val_score,
           "relative": generalization_gap(train_score, val_score)}  # fmt: skip
    start, end = val.span()
    intro = (f"<p>Data: <b>{html.escape(str(summary.get('data_source')))}</b>; validation window "
             f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} ({val.n_bars} bars, never trained "
             f"on); stop reason: {html.escape(str(summary.get('stop_reason')))}; final score "
             f"{summary.get('final_best_score', float('nan')):.3f}; final model: "
             f"{html.escape(describe_selection(summary))}.</p><p class='note'>The "
             "validation window also picked the run and the checkpoint, so these figures flatter "
             "the chosen model; the statistics below help discount them.</p>")  # fmt: skip
    if summary.get("data_source") == "synthetic":
        intro += "<p class='warn'>Trained and validated on the SYNTHETIC market.</p>"
    sections = [
        ("Run", intro),
        ("Edge over cash", edge_section(summary)),
        (
            "Score progress",
            figure_html(progress_figure(summary)) + figure_html(history_figure(summary)),
        ),
        ("Statistics", statistics_section(summary, returns, final, gap)),
        *_policy_sections(val, runs),
    ]
    page = render_page(f"Nexlify training report: {out_dir.name}", sections)
    return atomic_write_text(out_dir / REPORT_HTML, page)
