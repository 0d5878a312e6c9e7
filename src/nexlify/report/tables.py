"""Console tables of results: metrics as rows, policies as columns.

Seven policies by ten metrics do not fit 80 columns with one policy per row (rich cuts the
headers to "retu…"); with policies as columns every metric name stays whole, a policy name wraps
between its words, and the numbers keep their full width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.table import Table

EXCESS_ROWS = (
    ("mean_pct", "excess %/day"),
    ("low_pct", "95% low"),
    ("high_pct", "95% high"),
)
"""Rows of the mean daily return over cash and its bootstrap interval."""


def policy_table(
    title: str,
    policies: Sequence[str],
    rows: Sequence[tuple[str, Sequence[str]]],
    caption: str | None = None,
) -> Table:
    """``rows`` are (metric title, one cell per policy); a title starting with ``-`` draws a
    line above that row instead of showing the dash."""
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, collapse_padding=True,
                  pad_edge=False)  # fmt: skip
    table.add_column("metric", no_wrap=True)
    for name in policies:
        # Underscores become spaces so a long name wraps between words, not inside one.
        table.add_column(name.replace("_", " "), justify="right")
    for k, (label, cells) in enumerate(rows):
        next_label = rows[k + 1][0] if k + 1 < len(rows) else ""
        table.add_row(label.lstrip("-"), *cells, end_section=next_label.startswith("-"))
    return table


def excess_rows(
    excess: dict[str, dict[str, Any]], policies: Sequence[str]
) -> list[tuple[str, list[str]]]:
    """The excess-return rows (mean and interval, percent per day), set off by a line."""
    rows = []
    for k, (key, title) in enumerate(EXCESS_ROWS):
        cells = [_pct(excess[name][key]) for name in policies]
        rows.append((("-" if k == 0 else "") + title, cells))
    return rows


def exposure_rows(
    exposure: dict[str, dict[str, Any]], policies: Sequence[str]
) -> list[tuple[str, list[str]]]:
    """Beta to buy-and-hold and the alpha beyond it (percent per day, with its interval), set
    off by a line; none without buy-and-hold."""
    if not exposure:
        return []
    cells = [exposure[name] for name in policies]
    return [
        ("-market beta", ["n/a" if c["beta"] is None else f"{c['beta']:.3f}" for c in cells]),
        ("alpha %/day", [_pct(c["alpha_daily_pct"]) for c in cells]),
        ("95% low", [_pct(c["alpha_ci95_pct"][0]) for c in cells]),
        ("95% high", [_pct(c["alpha_ci95_pct"][1]) for c in cells]),
    ]


EXPOSURE_CAPTION = (
    "market beta, alpha: daily returns regressed on buy-and-hold's; alpha is the mean daily return "
    "beyond that market exposure (an excess with an alpha near 0 is exposure, not skill)"
)


def exposure_caption(exposure: dict[str, dict[str, Any]]) -> str:
    """``; market beta, alpha: ...`` to append to a table's caption; empty without the rows."""
    return "; " + EXPOSURE_CAPTION if exposure else ""


def excess_caption(method: str) -> str:
    """What the excess rows mean and how their interval was made."""
    return f"excess %/day: mean daily return over cash (which earns 0); 95% interval by {method}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"
