"""Pre-flight checks: is this machine and this config ready to train? Run before any work.

Each check gives ``pass``, ``warn`` or ``fail``. ``nexlify preflight`` prints them; ``nexlify
train`` runs them first and stops on a fail (exit 3 when only data checks failed, else 2);
warnings never stop training.

Checks: Python version; required packages (ccxt only warns: it is needed for downloads);
compute device; CPU cores vs workers; memory for the replay buffers (estimate below) against
available RAM; free disk space and write access where the output folder goes; the market data
the run will use (files, store or synthetic) and the external series it asks for.

Replay memory per training unit, in bytes::

    buffer_size * obs_dim * 4 * 2          observations and next observations (float32)
  + buffer_size * (8 + 4 + 1 + 1)          action (int64), reward (float32), terminated, truncated
  + buffer_size * 8 * 2 * 2                sum and min trees of prioritized replay (float64)

with ``obs_dim`` the env's observation size (``obs_window * P * F + 3 * P + 4``, plus the
strategy books' observations, :mod:`nexlify.market.obs_layout`); initial runs trained at once
multiply it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from nexlify.errors import ConfigError, DataError, NexlifyError
from nexlify.system.memory import available_memory
from nexlify.train.config import RunConfig

PASS, WARN, FAIL = "pass", "warn", "fail"
REQUIRED = ("numpy", "pandas", "pyarrow", "numba", "torch", "gymnasium", "rich", "yaml")
MIN_FREE_DISK = 1 << 30
"""Less free disk than this (1 GiB) where the outputs go fails the check; 5 GiB warns."""


@dataclass(frozen=True)
class CheckResult:
    """One pre-flight check."""

    name: str
    status: str
    detail: str
    data_related: bool = False
    """A failure here is bad data (exit 3) rather than a bad setting or machine (exit 2)."""


def obs_dim(config: RunConfig) -> int:
    """Observation size of the env for ``config``: market and external features, account state
    and the enabled strategies' observations, by the function the env sizes itself with."""
    from nexlify.data.features import feature_names
    from nexlify.market.obs_layout import observation_size
    from nexlify.pipeline.data_choice import run_features

    n_features = len(feature_names(run_features(config.data))) + 2 * len(config.data.external)
    return observation_size(config.market, len(config.data.pairs), n_features)


def replay_bytes(config: RunConfig) -> int:
    """Replay memory of one training unit (see the module docstring)."""
    n = config.agent.buffer_size
    total = n * obs_dim(config) * 4 * 2 + n * (8 + 4 + 1 + 1)
    if getattr(config.agent, "prioritized_replay", False):
        total += n * 8 * 2 * 2
    return total


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_python() -> CheckResult:
    v = sys.version_info
    ok = v >= (3, 10)
    return CheckResult("python", PASS if ok else FAIL, f"{v.major}.{v.minor}.{v.micro} (>= 3.10)")


def check_packages() -> list[CheckResult]:
    missing = [m for m in REQUIRED if find_spec(m) is None]
    out = [
        CheckResult(
            "packages",
            FAIL if missing else PASS,
            f"missing: {', '.join(missing)}; run bash scripts/setup.sh"
            if missing
            else "all required packages import",
        )
    ]
    has_ccxt = find_spec("ccxt") is not None
    out.append(
        CheckResult(
            "ccxt",
            PASS if has_ccxt else WARN,
            "installed (exchange downloads)" if has_ccxt else "not installed: no downloads",
        )
    )
    return out


def check_device(config: RunConfig) -> CheckResult:
    from nexlify.train.trainer import resolve_device

    try:
        device = resolve_device(config.train.device)
    except ConfigError as exc:
        return CheckResult("device", FAIL, str(exc))
    return CheckResult("device", PASS, f"{config.train.device} -> {device}")


def _parallel_units(config: RunConfig) -> int:
    from nexlify.pipeline.placement import units_at_once

    p = config.pipeline
    return units_at_once(p.backend, p.workers, p.initial_runs, p.share_cores)


def check_cores(config: RunConfig) -> CheckResult:
    from nexlify.pipeline.placement import takes_turns

    cores = os.cpu_count() or 1
    p = config.pipeline
    units = _parallel_units(config)
    if takes_turns(p.backend, units, config.train.torch_threads, p.share_cores, cores):
        return CheckResult("cpu", PASS, f"{cores} cores, {units} runs at once taking turns")
    if units > cores:
        return CheckResult("cpu", WARN, f"{units} runs at once on {cores} cores: runs will "
                           "compete for CPU")  # fmt: skip
    return CheckResult("cpu", PASS, f"{cores} cores, {units} runs at once")


def check_memory(config: RunConfig, available: int | None) -> CheckResult:
    units = _parallel_units(config)
    need = replay_bytes(config) * units
    what = (
        f"replay {_gib(need)} ({units} x {_gib(replay_bytes(config))}, obs_dim {obs_dim(config)})"
    )
    if available is None:
        return CheckResult("memory", WARN, f"{what}; available RAM unknown")
    if need > available:
        return CheckResult(
            "memory",
            FAIL,
            f"{what} > {_gib(available)} available; lower agent.buffer_size or --workers",
        )
    status = WARN if need > available / 2 else PASS
    return CheckResult("memory", status, f"{what} of {_gib(available)} available")


def check_output(config: RunConfig, disk_free: Callable[[Path], int]) -> list[CheckResult]:
    target = Path(config.pipeline.output_dir)
    parent = _existing_parent(target)
    writable = os.access(parent if parent.is_dir() else parent.parent, os.W_OK)
    out = [
        CheckResult(
            "output",
            PASS if writable else FAIL,
            f"{target} (writable)" if writable else f"{parent} is not writable: pick --output-dir",
        )
    ]
    free = disk_free(parent)
    status = FAIL if free < MIN_FREE_DISK else WARN if free < 5 * MIN_FREE_DISK else PASS
    out.append(CheckResult("disk", status, f"{_gib(free)} free at {parent}"))
    return out


def check_data(config: RunConfig) -> list[CheckResult]:
    from nexlify.data.external import series_file
    from nexlify.data.resample import find_candle_source
    from nexlify.data.store import CandleStore, default_store_dir
    from nexlify.pipeline.data_choice import external_folder

    d = config.data
    results = []
    if d.source in ("auto", "files") and d.data_dir is not None:
        try:
            for pair in d.pairs:
                find_candle_source(d.data_dir, pair, d.timeframe)
            results.append(CheckResult("data", PASS, f"candle files in {d.data_dir}", True))
        except NexlifyError as exc:
            results.append(CheckResult("data", FAIL, str(exc), True))
    elif d.source in ("auto", "store"):
        store = Path(d.store_dir) if d.store_dir else default_store_dir()
        folder = CandleStore(store).folder_with(d.pairs, d.timeframe)
        if folder is not None:
            results.append(CheckResult("data", PASS, f"local store {folder}", True))
        elif d.source == "store":
            results.append(
                CheckResult("data", FAIL, f"no store folder with all pairs in {store}", True)
            )
        else:
            results.append(CheckResult("data", WARN, "no data given: SYNTHETIC market", True))
    else:
        results.append(CheckResult("data", WARN, "SYNTHETIC market (source=synthetic)", True))
    folder = external_folder(d)
    for name in d.external:
        path = series_file(name, folder)
        status, detail = (PASS, str(path)) if path else (FAIL, f"no {name}.csv in {folder}")
        results.append(CheckResult(f"external {name}", status, detail, True))
    return results


def run_preflight(
    config: RunConfig,
    *,
    memory: int | Callable[[], int | None] | None = available_memory,
    disk_free: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free,
) -> list[CheckResult]:
    """Every check, in order; nothing is written."""
    available = memory() if callable(memory) else memory
    return [
        check_python(),
        *check_packages(),
        check_device(config),
        check_cores(config),
        check_memory(config, available),
        *check_output(config, disk_free),
        *check_data(config),
    ]


def raise_on_failure(results: list[CheckResult]) -> None:
    """DataError (only data checks failed) or ConfigError listing every failed check."""
    failed = [r for r in results if r.status == FAIL]
    if not failed:
        return
    message = "pre-flight check failed: " + "; ".join(f"{r.name}: {r.detail}" for r in failed)
    if all(r.data_related for r in failed):
        raise DataError(message)
    raise ConfigError(message)
