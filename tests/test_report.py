"""HTML reports: built from a run folder, self-contained, rendered by a real headless Chromium."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from nexlify.cli import main

TINY_YAML = {
    "data": {"synthetic_days": 60, "validation_days": 10, "pairs": ["BTC/USDT", "ETH/USDT"]},
    "market": {"env": {"episode_length": 48}},
    "agent": {"hidden_sizes": [16], "batch_size": 16, "learning_starts": 32, "buffer_size": 2000},
    "train": {"num_envs": 2, "eval_every": 2},
    "pipeline": {"initial_runs": 2, "initial_episodes": 2, "retrain_episodes": 2,
                 "max_iterations": 1, "workers": 1},
}  # fmt: skip

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("report")
    config = base / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_YAML))
    out = base / "run"
    assert main(["train", "--automated", "--config", str(config), "--output-dir", str(out)]) == 0
    return out


def test_report_command_writes_a_self_contained_page(run_dir: Path) -> None:
    page = run_dir / "report.html"
    page.unlink(missing_ok=True)
    assert main(["report", str(run_dir)]) == 0
    text = page.read_text()
    assert "<script src=" not in text  # nothing fetched from the network: plotly.js is inlined
    for heading in ("Score progress", "Statistics", "Equity", "Drawdown", "Trades: BTC/USDT"):
        assert f"<h2>{heading}</h2>" in text, heading
    assert "deflated Sharpe ratio" in text and "SYNTHETIC" in text
    assert text.count("Plotly.newPlot") >= 6
    summary = json.loads((run_dir / "complete_training_summary.json").read_text())
    verdict = "EDGE OVER CASH" if summary["edge"]["found"] else "NO EDGE OVER CASH"
    style = "good" if summary["edge"]["found"] else "warn"
    assert "<h2>Edge over cash</h2>" in text and f"<p class='{style}'>{verdict}:" in text
    for name in ("cash", "buy_and_hold", "trend", "always_long", "sma_crossover", "random"):
        assert f"<td>{name}</td>" in text, name  # every baseline in the results table
    assert "excess %/day [95% CI]" in text
    assert "<th>market beta</th>" in text and "<th>alpha %/day [95% CI]</th>" in text
    hold = re.search(
        r"<tr><td>buy_and_hold</td>(?:<td>[^<]*</td>)*?<td>([^<]*)</td><td>([^<]*)</td></tr>", text
    )
    assert hold is not None and hold.group(1) == "1.000"  # the market against itself
    assert hold.group(2).startswith(("+0.0000 [", "-0.0000 [")), hold.group(2)


def test_report_refuses_a_folder_without_a_run(tmp_path: Path) -> None:
    assert main(["report", str(tmp_path)]) == 3


def test_report_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    """The page loads without console errors, draws its charts, and we keep a screenshot."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (scripts/test.sh installs Debian's chromium)")
    if not (run_dir / "report.html").exists():
        assert main(["report", str(run_dir)]) == 0
    url = (run_dir / "report.html").resolve().as_uri()
    profile = tmp_path / "profile"
    common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
              "--virtual-time-budget=10000", "--run-all-compositor-stages-before-draw"]  # fmt: skip
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    assert len(re.findall(r'class="main-svg"', dom.stdout)) >= 6  # plotly drew the charts
    errors = [line for line in dom.stderr.splitlines()
              if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]  # fmt: skip
    assert not errors, errors
    shot = tmp_path / "report.png"
    subprocess.run([*common, "--window-size=1280,2400", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one


def test_backtest_html(run_dir: Path, tmp_path: Path) -> None:
    summary = json.loads((run_dir / "complete_training_summary.json").read_text())
    out = tmp_path / "bt.html"
    code = main(["backtest", "--model", summary["final_model_path"], "--source", "synthetic",
                 "--start", "2022-03-01", "--end", "2022-03-31", "--html", str(out)])  # fmt: skip
    assert code == 0
    text = out.read_text()
    assert "Nexlify backtest" in text and "buy_and_hold" in text
    assert "<th>market beta</th>" in text and "exposure, not skill" in text


def test_paper_session_report(tmp_path: Path) -> None:
    from tests.test_paper_support import candles, save_model, write_candles

    model = save_model(tmp_path / "model.pt")
    files = write_candles(tmp_path / "data", candles())
    db = tmp_path / "paper.db"
    assert main(["paper", "--model", str(model), "--feed", "replay", "--data", *files,
                 "--db", str(db), "--no-view"]) == 0  # fmt: skip
    out = tmp_path / "paper.html"
    assert main(["paper", "report", "--db", str(db), "--out", str(out)]) == 0
    text = out.read_text()
    for heading in ("Against cash and buy-and-hold", "Equity", "Drawdown", "Trades: BTC/USDT",
                    "Closed trades (last 200)"):  # fmt: skip
        assert f"<h2>{heading}</h2>" in text, heading
    for name in ("session", "cash", "buy_and_hold"):
        assert f"<td>{name}</td>" in text, name
    assert "<th>market beta</th>" in text and "The no-edge gate on the starting model" in text
    assert main(["paper", "report", "--db", str(tmp_path / "missing.db")]) == 3


def test_the_session_against_buy_and_hold_by_hand(tmp_path: Path) -> None:
    """The report's comparison: the session's own curve, and buy-and-hold of its pairs from
    the stored candles bought at the open after its first decision, sold at the last close."""
    from nexlify.live.session_report import read_session, session_comparison
    from tests.test_paper_support import candles, save_model, write_candles

    model = save_model(tmp_path / "model.pt")
    files = write_candles(tmp_path / "data", candles())
    db = tmp_path / "paper.db"
    assert main(["paper", "--model", str(model), "--feed", "replay", "--data", *files,
                 "--db", str(db), "--no-view"]) == 0  # fmt: skip
    record = read_session(db)
    session, equity, trades, stored = record.session, record.equity, record.trades, record.candles
    found = session_comparison(record)
    assert not isinstance(found, str)
    data, runs = found
    assert data.n_bars == len(equity) and data.time[0] == equity[0]["bar_time"]
    mine = runs["session"].metrics[0]
    assert mine.total_return_pct == pytest.approx((equity[-1]["equity"] / equity[0]["equity"]
                                                   - 1) * 100)  # fmt: skip
    assert mine.n_trades == len(trades)
    execution = session["market_config"]["execution"]
    fee, slip = execution["fee_rate"], execution["slippage_bps"] / 10_000
    growth = []
    for pair in session["pairs"]:
        rows = stored[pair]
        times = list(rows[:, 0])
        first = rows[times.index(equity[1]["bar_time"])]  # the open after the first decision
        last = rows[times.index(equity[-1]["bar_time"])]
        growth.append(last[4] * (1 - slip) * (1 - fee) / (first[1] * (1 + slip) * (1 + fee)))
    hold = runs["buy_and_hold"].metrics[0]  # from float32 prices, as every market holds them
    assert hold.total_return_pct == pytest.approx((np.mean(growth) - 1) * 100, rel=1e-5)
    assert runs["cash"].metrics[0].total_return_pct == 0.0
    one_bar = dataclasses.replace(record, equity=equity[:1])
    assert (
        session_comparison(one_bar) == "the session has processed one bar; nothing to compare yet"
    )
    short = dataclasses.replace(record, candles={p: rows[:-5] for p, rows in stored.items()})
    assert "have no stored BTC/USDT candle" in str(session_comparison(short))
    odd = {**session["market_config"], "leverage": 3}  # a setting this version does not know
    other = dataclasses.replace(record, session={**session, "market_config": odd})
    assert "recorded market settings do not load" in str(session_comparison(other))
