"""Memory the machine has free now: RAM, and the learner device's (CUDA/ROCm, MPS, CPU)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import torch


def available_memory() -> int | None:
    """Bytes of RAM available now (Linux MemAvailable, else free pages), None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def device_free_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: CUDA/ROCm from the driver, MPS where torch says, CPU RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        mps = getattr(torch, "mps", None)
        try:
            limit = mps.recommended_max_memory()  # type: ignore[union-attr]
            used = mps.driver_allocated_memory()  # type: ignore[union-attr]
        except (AttributeError, RuntimeError):
            return available_memory()  # unified memory: RAM is the limit
        return int(limit - used)
    return available_memory()


def free_cached_memory(device: torch.device) -> None:
    """Give memory held by dead tensors back: Python's cycles, then the CUDA caching allocator."""
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
