"""A pipeline run's folder: its log, summary, report, resume checks and identity.

The file names are in :mod:`nexlify.run_layout`; a run is identified by :func:`run_key`, the hash of
everything its results depend on, so a resume can refuse other data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np

from nexlify.data.market_data import MarketData
from nexlify.errors import ConfigError
from nexlify.io import atomic_write_json
from nexlify.pipeline.runs import market_fingerprint
from nexlify.run_layout import LOG_FILE, SUMMARY_FILE
from nexlify.train.config import RunConfig


def versions() -> dict[str, str]:
    import gymnasium
    import numba
    import torch

    import nexlify

    return {
        "nexlify": nexlify.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "gymnasium": gymnasium.__version__,
        "platform": platform.platform(),
    }


def attach_run_log(log: logging.Logger, out_dir: Path) -> logging.Handler | None:
    """Send ``log`` to ``out_dir/training.log`` (flushed per line) unless it already goes there."""
    path = (out_dir / LOG_FILE).resolve()
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path:
            return None
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    return handler


def write_html_report(
    summary: dict[str, Any], out_dir: Path, market: MarketData, log: logging.Logger
) -> None:
    """report.html next to the summary; a failure here is reported, and the run's files stay."""
    from nexlify.report.html import build_run_report

    try:
        path = build_run_report(out_dir, summary, market)
    except Exception as exc:  # the models and summary are already safe on disk
        summary["report_error"] = f"{type(exc).__name__}: {exc}"
        atomic_write_json(out_dir / SUMMARY_FILE, summary)
        log.error("the HTML report could not be built (%s); rebuild it with: nexlify report %s",
                  summary["report_error"], out_dir)  # fmt: skip
        return
    log.info("report: %s", path)


EXECUTION_ONLY = {"pipeline": ("workers", "share_cores", "backend", "ray_address", "output_dir")}
"""Settings that change how a run executes but not its results: a resume may change them."""


NEUTRAL_ADDITIONS: dict[tuple[str, ...], object] = {
    ("market", "env", "turnover_penalty"): 0.0,
    ("market", "env", "min_hold_bars"): 0,
    ("market", "env", "decision_interval"): 1,
    ("agent", "hold_margin"): 0.0,
    ("data", "long_memory"): False,
    ("data", "cross_pair"): False,
    ("pipeline", "ensemble_members"): "top",
    ("pipeline", "selection"): "score",
    ("train", "dyna_ratio"): 0.0,
    ("train", "dyna_refit_every"): 20_000,
}
"""Settings added after results were recorded, at the value that reproduces the earlier
behaviour exactly: left out of the hashes there, so adding a setting does not orphan finished
runs and studies (any other value is hashed as usual)."""


def result_config(config: RunConfig) -> dict[str, Any]:
    """``config`` as a dict of what results depend on: less execution-only settings and the
    later additions at their neutral values."""
    plain = config.to_dict()
    for section, keys in EXECUTION_ONLY.items():
        for key in keys:
            plain.get(section, {}).pop(key, None)
    for path, neutral in NEUTRAL_ADDITIONS.items():
        *parents, name = path
        node = plain
        for part in parents:
            node = node.get(part, {})
        if name in node and node[name] == neutral:
            del node[name]
    return plain


def run_key(config: RunConfig, market: MarketData) -> str:
    """Hash of everything a run's results depend on: its config (less execution-only settings)
    and the data's bars."""
    plain = result_config(config)
    text = json.dumps(plain, sort_keys=True, default=str) + market_fingerprint(market)
    return hashlib.sha256(text.encode()).hexdigest()


def remove_stale_temp_files(out_dir: Path) -> list[Path]:
    """Delete the temp files of writes a crash cut short (never a finished file)."""
    stale = [p for p in out_dir.rglob(".*.tmp") if p.is_file()]
    stale += [p for p in out_dir.rglob("*.pt.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def check_resumable(out_dir: Path, market: MarketData) -> dict[str, Any] | None:
    """The summary of the interrupted run in ``out_dir`` (None when it never wrote one).

    Raises ConfigError when the folder holds no run or the data differ from the run's.
    """
    path = out_dir / SUMMARY_FILE
    if not path.is_file():
        if not (out_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume {out_dir}: no pipeline run here (no config.yaml)")
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume {out_dir}: {path.name} is unreadable: {exc}") from exc
    recorded = summary.get("data", {}).get("sha256")
    if recorded is not None and recorded != market_fingerprint(market):
        raise ConfigError(
            f"--resume {out_dir}: the data differ from the data this run started on "
            f"({summary['data'].get('source')}, {summary['data'].get('start')} .. "
            f"{summary['data'].get('end')}); resume with the same data or start a new run"
        )
    return dict(summary)
