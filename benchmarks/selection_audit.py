"""Does what the pipeline sees before a test year say anything about the test year?

    .venv/bin/python benchmarks/selection_audit.py [benchmarks/results/study]

Every tested year of every ``study.json`` under the root is one year-model: a final model
chosen on the validation window before a test year, the no-edge gate's verdict on that window,
and the model's result on the untouched year. This pairs the two for every year-model the
studies have made (all configurations and seeds, failures included) and records:

- the gate's verdicts (``edge.found``) and its p-values, beside how many year-models beat cash
  out of sample;
- the rank correlation (Spearman) between the model's excess daily return over cash on the
  validation window and on the test year, and between the two Sharpe ratios: pooled, and
  within each test year (ranks taken inside the year, so a bull or a crash year does not make
  a correlation of its own), with a permutation p-value (ranks shuffled inside each year,
  10,000 draws, seeded);
- the medians of both Sharpe ratios: how much validation flatters a model;
- where the test-year loss comes from: the return before fees (the return plus the fees paid,
  both in percent of the starting balance: an approximation that ignores the compounding of
  fees) and the rank correlation of a model's trade count with its excess return.

Reads only files the studies wrote (no training, seconds): the gate's verdict from each
``study.json`` where the study recorded it there, else from the pipeline summary under the
study's ``runs/``, which stays on the machine that ran it (git keeps ``study.json`` and
``study.md`` only), else from the row of the previous ``selection_audit.json`` for the same
study and year, used only when its test-year figures equal the study's (``gate_sources``
counts each). So a fresh checkout keeps the older studies' verdicts instead of dropping them.
Writes ``benchmarks/results/selection_audit.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nexlify.io import atomic_write_json

ROOT = Path(__file__).parent / "results" / "study"
OUT = Path(__file__).parent / "results" / "selection_audit.json"
DRAWS = 10_000
STARTING_BALANCE = 10_000.0
"""The study's starting balance (its fees are in quote currency from it)."""


def gate_verdict(folder: Path, year: str, tested: dict[str, Any]) -> dict[str, Any] | None:
    """The gate's record for one year: from ``study.json`` (studies since the gate was
    recorded there, so git has it), else from the year's pipeline summary under ``runs/``."""
    recorded = tested.get("pipeline", {}).get("edge")
    if recorded:
        return dict(recorded)
    summary_path = folder / "runs" / year / "complete_training_summary.json"
    if not summary_path.is_file():
        return None
    edge = json.loads(summary_path.read_text()).get("edge")
    return dict(edge) if edge else None


GATE_COLUMNS = ("gate_found", "gate_p", "val_excess_daily_pct", "val_sharpe")


def earlier_rows(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The rows of a previous audit by (study, year); empty when there is none."""
    if not path.is_file():
        return {}
    return {(r["study"], r["year"]): r for r in json.loads(path.read_text()).get("rows", [])}


def _from_earlier(row: dict[str, Any], earlier: dict[str, Any] | None) -> bool:
    """Copy the gate columns of ``earlier`` into ``row`` when it describes the same test year."""
    if earlier is None:
        return False
    same = all(np.isclose(earlier[k], row[k], rtol=1e-9, atol=1e-12)
               for k in ("test_excess_daily_pct", "test_return_pct", "test_trades"))  # fmt: skip
    if same:
        row.update({k: earlier[k] for k in GATE_COLUMNS})
    return same


def year_models(
    root: Path, earlier: dict[tuple[str, str], dict[str, Any]] | None = None
) -> pd.DataFrame:
    """One row per (study folder, test year) with a gate record and a finished test year; the
    record from the study's files, else from ``earlier`` (a previous audit's rows)."""
    rows: list[dict[str, Any]] = []
    for study_path in sorted(root.glob("**/study.json")):
        folder = study_path.parent
        study = str(folder.relative_to(root))
        for year, tested in json.loads(study_path.read_text()).get("years", {}).items():
            result = tested.get("venues", {}).get("binance")
            if not result:  # a year still running
                continue
            model = result["model"]
            row: dict[str, Any] = {
                "study": study,
                "year": year,
                "test_excess_daily_pct": float(model["excess_daily_pct"]),
                "test_sharpe": float(model["sharpe"]),
                "test_return_pct": float(model["total_return_pct"]),
                "test_trades": int(model["n_trades"]),
                "test_fees_pct": 100.0 * float(model["fees_paid"]) / STARTING_BALANCE,
            }
            edge = gate_verdict(folder, year, tested)
            if edge:
                row.update({
                    "gate_found": bool(edge["found"]),
                    "gate_p": float(edge["p"]),
                    "val_excess_daily_pct": float(edge["excess_daily_return"]["mean_pct"]),
                    "val_sharpe": float(edge["sharpe"]),
                    "gate_source": "study files",
                })  # fmt: skip
            elif _from_earlier(row, (earlier or {}).get((study, year))):
                row["gate_source"] = "earlier audit"
            else:  # a study run before the gate
                continue
            rows.append(row)
    return pd.DataFrame(rows)


def within_year_ranks(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame.groupby("year")[column].rank().to_numpy(dtype=np.float64)


def rank_correlation(
    frame: pd.DataFrame, before: str, after: str, rng: np.random.Generator
) -> dict[str, float]:
    # The year-models are not independent draws (seeds and configurations share years and
    # code), so the permutation p-value is a guide, not an exact test.
    """Spearman's rho pooled and within years, and the permutation p-value of the latter."""
    pooled = float(frame[before].rank().corr(frame[after].rank()))
    x, y = within_year_ranks(frame, before), within_year_ranks(frame, after)
    observed = float(np.corrcoef(x, y)[0, 1])
    groups = [np.flatnonzero(frame["year"].to_numpy() == yr) for yr in frame["year"].unique()]
    shuffled = x.copy()
    hits = 0
    for _ in range(DRAWS):
        for idx in groups:
            shuffled[idx] = rng.permutation(x[idx])
        hits += abs(np.corrcoef(shuffled, y)[0, 1]) >= abs(observed)
    return {"pooled_rho": pooled, "within_year_rho": observed,
            "within_year_p": (hits + 1) / (DRAWS + 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    frame = year_models(args.root, earlier_rows(OUT))
    if frame.empty:
        print(f"{args.root}: no study year-models with a gate record found", file=sys.stderr)
        return 1
    rng = np.random.default_rng(20261207)
    frame["test_gross_return_pct"] = frame["test_return_pct"] + frame["test_fees_pct"]
    per_year = {
        str(year): {"year_models": len(group),
                    "beat_cash": int((group["test_excess_daily_pct"] > 0).sum()),
                    "median_return_pct": float(group["test_return_pct"].median()),
                    "median_gross_return_pct": float(group["test_gross_return_pct"].median()),
                    "median_fees_pct": float(group["test_fees_pct"].median()),
                    "median_val_sharpe": float(group["val_sharpe"].median()),
                    "median_test_sharpe": float(group["test_sharpe"].median())}
        for year, group in frame.groupby("year")
    }  # fmt: skip
    result = {
        "what": "each study year-model's validation window (what the gate and selection saw) "
        "against its untouched test year, Binance",
        "year_models": len(frame),
        "studies": int(frame["study"].nunique()),
        "gate_sources": {str(k): int(v) for k, v in frame["gate_source"].value_counts().items()},
        "gate": {
            "edge_found": int(frame["gate_found"].sum()),
            "min_p": float(frame["gate_p"].min()),
            "median_p": float(frame["gate_p"].median()),
        },
        "test_beat_cash": int((frame["test_excess_daily_pct"] > 0).sum()),
        "median_val_sharpe": float(frame["val_sharpe"].median()),
        "median_test_sharpe": float(frame["test_sharpe"].median()),
        "excess_daily": rank_correlation(
            frame, "val_excess_daily_pct", "test_excess_daily_pct", rng
        ),
        "sharpe": rank_correlation(frame, "val_sharpe", "test_sharpe", rng),
        "gross": {
            "positive": int((frame["test_gross_return_pct"] > 0).sum()),
            "median_pct": float(frame["test_gross_return_pct"].median()),
            "mean_pct": float(frame["test_gross_return_pct"].mean()),
        },
        "trades_vs_test_excess": rank_correlation(
            frame, "test_trades", "test_excess_daily_pct", rng
        ),
        "val_excess_vs_test_trades": rank_correlation(
            frame, "val_excess_daily_pct", "test_trades", rng
        ),
        "per_year": per_year,
        "rows": frame.to_dict(orient="records"),
    }
    atomic_write_json(OUT, result)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
