"""How many units run at once, and on which device.

Sizing: with ``workers`` 0 a phase runs as many units at once as finish them soonest by
:func:`phase_time` (one per core, or up to two per core taking turns on the cores; see
:func:`default_workers`), each with one torch thread. ``benchmarks/bench_scaling.py``
measures the real thing.

Placement: with CUDA GPUs and ``device`` auto or cuda, unit k runs on ``cuda:(k mod n_gpus)``
(round-robin; several units share a GPU when more run at once than there are GPUs, up to what
fits in its memory). Without CUDA the device stays as configured, so CPU-only machines behave
as before. Ray places GPU tasks itself (:mod:`nexlify.pipeline.ray_backend`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any, TypeVar, cast

T = TypeVar("T")

UNIT_GPU_BYTES = 2 << 30
"""GPU memory budgeted per unit when placing several on one GPU (CUDA context, network, Adam
state, batches; the replay buffer lives in host memory)."""


MIN_SHARING_GAIN = 0.1
"""Least predicted saving of phase time for which the default runs more units than cores
(each extra unit holds its replay buffer in memory, and turns cost a little start-up)."""


def phase_time(n_units: int, workers: int, cores: int) -> float:
    """Wall time of ``n_units`` equal units run ``workers`` at a time on ``cores`` cores, in
    units of one unit's time alone (processes share the cores evenly)."""
    rounds, last = divmod(n_units, workers)
    full = rounds * max(1.0, workers / cores)
    return full + (max(1.0, last / cores) if last else 0.0)


def units_at_once(backend: str, requested: int, n_units: int, share_cores: bool = True) -> int:
    """Units one phase runs at once: 1 in-process; ``requested`` (0 = :func:`default_workers`)
    in local processes; ``requested`` (0 = all) with Ray, which schedules them on its cluster."""
    if backend == "inprocess" or n_units <= 1:
        return 1
    if backend == "ray":
        return max(1, min(requested or n_units, n_units))
    return resolve_workers(requested, n_units, share_cores=share_cores)


def default_workers(n_units: int, cores: int, share_cores: bool = True) -> int:
    """Units at once when ``workers`` is 0: the count that finishes equal units soonest.

    One per core, unless more (up to two per core) finish sooner by :func:`phase_time` while
    they take turns on the cores (``share_cores``, :mod:`nexlify.system.core_share`): 3 units
    on 2 cores run all at once (1.5 unit-times instead of 2: two, then the third alone); 4 on
    2 stay at 2 (2 either way); 5 on 2 run 3 at once (2.5 instead of 3). Ties go to fewer, and
    so does a gain under :data:`MIN_SHARING_GAIN` (50 on 4 cores: 12.5 against 13 stays at 4).

    Without turns the default stays at the core count: units the OS scheduler alone spread over
    fewer cores ran each slower, and the wall-time gain was within the machine's noise while
    the CPU cost, about a fifth more, was not (``benchmarks/bench_scaling.py``).
    """
    fewest = max(1, min(n_units, cores))
    if not share_cores:
        return fewest
    counts = range(fewest, max(fewest, min(n_units, 2 * cores)) + 1)
    best = min(counts, key=lambda w: (phase_time(n_units, w, cores), w))
    gain = 1.0 - phase_time(n_units, best, cores) / phase_time(n_units, fewest, cores)
    return best if gain >= MIN_SHARING_GAIN else fewest


def resolve_workers(
    requested: int, n_units: int, cores: int | None = None, share_cores: bool = True
) -> int:
    """Units at once: ``requested`` (0 = :func:`default_workers`), never more than the units."""
    if n_units <= 0:
        return 1
    cores = cores if cores is not None else (os.cpu_count() or 1)
    wanted = requested if requested > 0 else default_workers(n_units, cores, share_cores)
    return max(1, min(wanted, n_units))


def cores_at_once(threads: int, cores: int | None = None) -> int:
    """Units of ``threads`` torch threads each that ``cores`` (default: this machine's) run at
    once without sharing (at least 1)."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, cores // max(1, threads))


def takes_turns(
    backend: str, workers: int, threads: int, share_cores: bool, cores: int | None = None
) -> bool:
    """Whether ``workers`` units at once, ``threads`` each, take turns on the cores
    (:mod:`nexlify.system.core_share`): local processes, sharing on, more than the cores run."""
    return backend == "process" and share_cores and workers > cores_at_once(threads, cores)


def cuda_device_count() -> int:
    """CUDA (or ROCm) GPUs visible here; 0 without torch CUDA support."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def place_devices(n_units: int, device: str, n_gpus: int) -> list[str]:
    """The device of each unit: round-robin over ``n_gpus`` GPUs when ``device`` is auto or
    cuda; otherwise (an explicit cuda:N, cpu, mps, or no GPU) the configured device."""
    if n_gpus <= 0 or device not in ("auto", "cuda"):
        return [device] * n_units
    return [f"cuda:{k % n_gpus}" for k in range(n_units)]


def units_per_gpu(gpu_bytes: int, unit_bytes: int = UNIT_GPU_BYTES) -> int:
    """How many units fit on a GPU of ``gpu_bytes`` memory (at least one)."""
    return max(1, gpu_bytes // max(1, unit_bytes))


def plan_devices(tasks: Sequence[T], workers: int, backend: str) -> tuple[list[T], int]:
    """Devices of ``tasks`` and units at once, for the local backends on CUDA GPUs.

    With device auto or cuda and GPUs here: round-robin devices, and no more units at once than
    fit in GPU memory. Otherwise (CPU, MPS, an explicit cuda:N, or Ray, which places GPU tasks
    itself) the tasks and ``workers`` come back unchanged.
    """
    if backend == "ray" or not tasks or _device_of(tasks[0]) not in ("auto", "cuda"):
        return list(tasks), workers
    n_gpus = cuda_device_count()
    if n_gpus == 0:
        return list(tasks), workers
    fit = n_gpus * units_per_gpu(smallest_gpu_bytes(n_gpus))
    return placed_tasks(tasks, n_gpus), max(1, min(workers, fit))


def placed_tasks(tasks: Sequence[T], n_gpus: int) -> list[T]:
    """UnitTask-like ``tasks`` (``config.train.device``) with their devices from placement."""
    if not tasks or n_gpus <= 0:
        return list(tasks)
    devices = place_devices(len(tasks), _device_of(tasks[0]), n_gpus)
    return [on_device(task, device) for task, device in zip(tasks, devices, strict=True)]


def _device_of(task: Any) -> str:
    config = getattr(task, "config", None)
    return str(config.train.device) if config is not None else "cpu"


def on_device(task: T, device: str) -> T:
    """UnitTask-like ``task`` with ``config.train.device`` set to ``device``."""
    config = getattr(task, "config", None)
    if config is None or str(config.train.device) == device:
        return task
    train = dataclasses.replace(config.train, device=device)
    return with_field(task, "config", dataclasses.replace(config, train=train))


def smallest_gpu_bytes(n_gpus: int) -> int:
    """Total memory of the smallest visible GPU (no CUDA context is created)."""
    import torch

    return min(torch.cuda.get_device_properties(k).total_memory for k in range(n_gpus))


def with_field(task: T, name: str, value: Any) -> T:
    """A copy of dataclass ``task`` with field ``name`` set (other tasks come back as they are)."""
    instance: Any = task
    if not dataclasses.is_dataclass(instance) or isinstance(instance, type):
        return task
    if name not in {f.name for f in dataclasses.fields(instance)}:
        return task
    return cast(T, dataclasses.replace(instance, **{name: value}))
