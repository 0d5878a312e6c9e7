"""The markdown table of an out-of-sample study (``study.md``), from its results dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nexlify.evaluation.edge import describe_market
from nexlify.pipeline.study_stats import MODEL_ROWS

_COLUMNS = "| policy | return % | Sharpe | max DD % | trades | fees | excess/day % [95% CI] |"


def beats_everything(cell: Mapping[str, Any], policy: str = "model") -> bool:
    """The issue's target for one year and venue: ``policy`` (the frozen or a rolling model,
    or a baseline judged by the same bar) makes money after fees and its Sharpe is above 0 and
    above every other baseline's (the model rows never count as baselines)."""
    row = cell[policy]
    others = [other["sharpe"] for name, other in _policies(cell)
              if name != policy and not name.startswith("model")]  # fmt: skip
    return row["total_return_pct"] > 0 and row["sharpe"] > max([0.0, *others])


def _policies(cell: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, row) of the model and every baseline, in the order the results list them."""
    return [(k, v) for k, v in cell.items() if isinstance(v, dict) and "sharpe" in v]


def _row(name: str, row: Mapping[str, Any]) -> str:
    low, high = row["excess_daily_ci95_pct"]
    return (
        f"| {name} | {row['total_return_pct']:+.2f} | {row['sharpe']:.2f} | "
        f"{row['max_drawdown_pct']:.2f} | {row['n_trades']} | {row['fees_paid']:.2f} | "
        f"{row['excess_daily_pct']:+.4f} [{low:+.4f}, {high:+.4f}] |"
    )


def market_sentence(market: Mapping[str, Any] | None) -> str:
    """`` Beyond its exposure to buy-and-hold (beta 0.12): alpha ...``, a sentence of its own
    after a table's verdict; empty for results recorded before the exposure was."""
    text = describe_market(dict(market) if market else None)
    return f" {text[:1].upper()}{text[1:]}." if text else ""


def _dsr_text(dsr: Mapping[str, Any] | None) -> str:
    if not dsr:
        return "n/a"
    if dsr.get("value") is None:
        return f"n/a ({dsr.get('why')})"
    tried = dsr["n_trials"]
    return f"{dsr['value']:.3f} ({tried} configuration{'' if tried == 1 else 's'} tried)"


def _gate_line(edge: Mapping[str, Any] | None) -> str:
    """The no-edge gate's verdict on the selection window (empty for studies run before it
    was recorded)."""
    if not edge:
        return ""
    verdict = "edge found" if edge.get("found") else "no edge"
    return f" The pipeline's no-edge gate said: {verdict} ({edge.get('test')} p = {edge['p']:.3f})."


def _year_section(year: str, entry: Mapping[str, Any]) -> list[str]:
    train = entry["train"]
    val = entry["validation_window"]
    pipe = entry["pipeline"]
    lines = [
        f"## {year}",
        "",
        f"Trained on {train['start'][:16]} .. {train['end'][:16]} ({train['bars']} bars), "
        f"selected on {val['start'][:10]} .. {val['end'][:10]}; final model: "
        f"{pipe.get('final_model_kind')} (validation score {pipe.get('final_model_score'):.3f})."
        + _gate_line(pipe.get("edge")),
        "",
    ]
    for venue, cell in entry["venues"].items():
        test = cell["test"]
        verdict = "yes" if beats_everything(cell) else "no"
        lines += [
            f"### {year} on {venue} (test {test['start'][:10]} .. {test['end'][:10]})",
            "",
            _COLUMNS,
            "|---|---|---|---|---|---|---|",
            *(_row(name, row) for name, row in _policies(cell)),
            "",
            f"Deflated Sharpe of the model: {_dsr_text(cell['model'].get('deflated_sharpe'))}. "
            f"Return > 0 and Sharpe above 0 and every baseline: **{verdict}**."
            + market_sentence(cell["model"].get("market")),
            "",
            *_late_start(test),
        ]
        if "model_rolling" in cell:
            lines += _rolling_lines(cell, entry.get("rolling") or {})
        if "model_meta_rolling" in cell:
            lines += _meta_lines(cell, (entry.get("rolling") or {}).get("meta") or {})
    return lines


def _late_start(test: Mapping[str, Any]) -> list[str]:
    """The note of a venue tested from later than the year's first day, when there is one."""
    late = [n.removeprefix("study: ") for n in test.get("notes", [])
            if n.startswith("study: tested from")]  # fmt: skip
    return [f"Note: {late[0]}.", ""] if late else []


def _rolling_lines(cell: Mapping[str, Any], rolling: Mapping[str, Any]) -> list[str]:
    """The rolling-retrain row's verdict and what the retrains did."""
    spec = rolling.get("spec", {})
    verdict = "yes" if beats_everything(cell, "model_rolling") else "no"
    dsr = _dsr_text(cell["model_rolling"].get("deflated_sharpe"))
    return [
        f"model_rolling: the final model fine-tuned every {spec.get('every_days', 0):g} days "
        f"on the {spec.get('window_days', 0):g} days before the last "
        f"{spec.get('score_days', 0):g} ({spec.get('episodes')} episodes), swapped in when it "
        f"beat the trading model there by {spec.get('margin', 0):g}: {rolling.get('retrains')} "
        f"retrains, {rolling.get('swaps')} swaps, {rolling.get('discarded')} discarded, "
        f"{rolling.get('fine_tune_seconds', 0):.0f} s of fine-tuning. Deflated Sharpe {dsr}. "
        f"Return > 0 and Sharpe above 0 and every baseline: **{verdict}**.",
        "",
    ]


def study_markdown(results: Mapping[str, Any]) -> str:
    """Per year and venue: the model beside every baseline; then the pooled excess return."""
    spec = results["spec"]
    lines = [
        "# Out-of-sample study",
        "",
        f"Anchored walk-forward over whole test years {', '.join(map(str, spec['years']))} on "
        f"{spec['venue']} (`{spec['data_dir']}`); pairs "
        f"{', '.join(results['config']['data']['pairs'])}, {results['config']['data']['timeframe']}"
        f". Config hash `{results['config_hash'][:12]}`; configurations tried by the studies "
        f"sharing `{results['trials_file']}`: **{results['n_trials']}**.",
        "",
        "Each year's model trained and was selected only on candles before the year, then traded "
        "it once. Returns are after fees; Sharpe is annualised; excess/day is the mean daily "
        "return over cash in percent with its 95% stationary-bootstrap interval; fees are "
        "in quote currency from a starting balance of "
        f"{results['config']['market']['execution']['initial_balance']:,.0f}.",
        "",
    ]
    for year, entry in results["years"].items():
        lines += _year_section(year, entry)
    lines += ["## Pooled over the finished years", ""]
    for policy, key in MODEL_ROWS.items():
        for venue, pooled in results.get(key, {}).items():
            if pooled is not None:
                lines.append(_pooled_line(results, venue, policy, pooled))
    return "\n".join(lines) + "\n"


def _meta_lines(cell: Mapping[str, Any], meta: Mapping[str, Any]) -> list[str]:
    """The meta-init row's verdict and its cost."""
    verdict = "yes" if beats_everything(cell, "model_meta_rolling") else "no"
    dsr = _dsr_text(cell["model_meta_rolling"].get("deflated_sharpe"))
    outer = (meta.get("meta_spec") or {}).get("outer_steps")
    return [
        f"model_meta_rolling: a Reptile meta-init ({outer} "
        f"outer steps on the training bars, {meta.get('meta_seconds', 0):.0f} s) adapted on the "
        "window before the year, then retrained on the same schedule: "
        f"{meta.get('retrains')} retrains, {meta.get('swaps')} swaps, "
        f"{meta.get('fine_tune_seconds', 0):.0f} s of fine-tuning. Deflated Sharpe {dsr}. "
        f"Return > 0 and Sharpe above 0 and every baseline: **{verdict}**.",
        "",
    ]


def _pooled_line(
    results: Mapping[str, Any], venue: str, policy: str, pooled: Mapping[str, Any]
) -> str:
    low, high = pooled["excess_daily_ci95_pct"]
    cells = [e["venues"][venue] for e in results["years"].values()
             if policy in e["venues"].get(venue, {})]  # fmt: skip
    met = sum(beats_everything(cell, policy) for cell in cells)
    return (
        f"- {venue}, {policy}: {pooled['years']} year(s), {pooled['days']} days, excess over "
        f"cash {pooled['excess_daily_pct']:+.4f}%/day [{low:+.4f}, {high:+.4f}]; return > 0 and "
        f"Sharpe above 0 and every baseline in {met} of {len(cells)} year(s)"
    )
