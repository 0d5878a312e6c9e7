"""HTML reports: built from a run folder, self-contained, rendered by a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

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
    for heading in ("Equity", "Drawdown", "Trades: BTC/USDT", "Closed trades (last 200)"):
        assert f"<h2>{heading}</h2>" in text, heading
    assert main(["paper", "report", "--db", str(tmp_path / "missing.db")]) == 3
