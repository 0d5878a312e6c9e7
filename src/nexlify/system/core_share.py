"""More units than cores: the units take turns in coarse time slices instead of all running.

Three equal units on two cores finish soonest all at once (1.5 unit-times instead of 2 for two
at once, then the third alone: :func:`nexlify.pipeline.placement.phase_time`). Left to the OS
scheduler, three CPU-bound trainings on two cores sometimes ran much slower than their share;
taking turns helps when the scheduler does badly and costs nothing measurable otherwise
(``benchmarks/bench_scaling.py``).

When a phase runs more units than cores (``pipeline.share_cores``, on by default) the units
share the cores here, in slices of :data:`SLICE_SECONDS`:

- every worker process has a slot in a small shared array, set while it runs a unit;
- in slice ``k`` (``k = floor(monotonic clock / SLICE_SECONDS)``, a clock every process on the
  machine reads alike) the running units, in slot order, ``k mod n`` .. ``k mod n + cores - 1``
  (wrapping) have the cores; the others wait at their next check, which the trainer makes once
  per vector step, until a slice that is theirs. With ``n`` running units each gets ``cores /
  n`` of the time, in turn;
- when a unit finishes its slot clears, and from the next check the others share what is left:
  with no more units than cores nobody waits.

Waiting changes when a unit computes, never what: results are the same as without sharing.
A unit outside its training loop (building its environment, validating, saving) does not
check, so it may briefly run beside the others.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

SLICE_SECONDS = 0.5
"""Length of one turn. Long enough that a switch costs nothing measurable (a few cache
refills), short enough that units finish within a slice of each other."""


def has_turn(slot: int, running: list[int], cores: int, slice_index: int) -> bool:
    """Whether the unit in ``slot`` may compute in slice ``slice_index``.

    ``running`` are the slots running a unit, in ascending order (``slot`` among them). The
    ``cores`` units from position ``slice_index mod n`` on (wrapping) have the turn.
    """
    n = len(running)
    if n <= cores:
        return True
    position = running.index(slot)
    return (position - slice_index) % n < cores


class CoreShare:
    """The shared state of one pool's workers: which slots run a unit, and how many cores.

    Made in the parent (:meth:`create`) and rebuilt in each worker as it starts
    (:func:`install`). In the worker, :meth:`claim` takes a
    slot, :meth:`running` marks the unit's start and end, and :meth:`wait_for_turn` is the
    check the trainer makes each vector step.
    """

    def __init__(
        self,
        flags: Any,
        next_slot: Any,
        cores: int,
        *,
        slice_seconds: float = SLICE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if cores < 1:
            raise ValueError(f"cores must be at least 1, got {cores}")
        if slice_seconds <= 0:
            raise ValueError(f"slice_seconds must be positive, got {slice_seconds}")
        self.flags = flags
        self.next_slot = next_slot
        self.cores = cores
        self.slice_seconds = slice_seconds
        self.clock = clock
        self.sleep = sleep
        self.slot = -1
        self.waited_seconds = 0.0
        """Time this worker's units spent waiting for a turn."""
        self._free_until = 0.0

    @classmethod
    def create(cls, workers: int, cores: int, ctx: Any = multiprocessing) -> CoreShare:
        """Shared state for a pool of ``workers`` processes on ``cores`` cores."""
        return cls(ctx.RawArray(ctypes.c_byte, workers), ctx.Value(ctypes.c_int, 0), cores)

    def handles(self) -> tuple[Any, Any, int, float]:
        """What a worker needs to rebuild this share (:func:`install`); shared memory passes
        to a process only as it starts (``initargs``), never with a task."""
        return self.flags, self.next_slot, self.cores, self.slice_seconds

    def claim(self) -> int:
        """Take the next free slot (once per worker process)."""
        with self.next_slot.get_lock():
            slot = int(self.next_slot.value)
            if slot >= len(self.flags):
                raise RuntimeError(
                    f"core share: more worker processes than its {len(self.flags)} slots"
                )
            self.next_slot.value = slot + 1
        self.slot = slot
        return slot

    def running(self, on: bool) -> None:
        """Mark this worker as running a unit (``on``) or idle."""
        if self.slot < 0:
            raise RuntimeError("core share: running() before claim()")
        self.flags[self.slot] = 1 if on else 0
        self._free_until = 0.0

    def summary(self, waited_before: float = 0.0) -> dict[str, Any]:
        """For a unit's outcome: the cores shared, and the seconds it waited since
        ``waited_before`` (this share's ``waited_seconds`` when the unit started)."""
        return {"cores": self.cores, "slice_seconds": self.slice_seconds,
                "waited_seconds": round(self.waited_seconds - waited_before, 2)}  # fmt: skip

    def running_slots(self) -> list[int]:
        return [k for k in range(len(self.flags)) if self.flags[k]]

    def wait_for_turn(self) -> None:
        """Return at once when this unit has the cores now; otherwise sleep until it has.

        Cheap when called often: after a check that found the turn, the next checks in the
        same slice return without reading the shared state.
        """
        now = self.clock()
        if now < self._free_until:
            return
        while True:
            index = int(now // self.slice_seconds)
            slice_end = (index + 1) * self.slice_seconds
            if has_turn(self.slot, self.running_slots(), self.cores, index):
                self._free_until = slice_end
                return
            pause = max(slice_end - now, 0.0) + 1e-4
            self.sleep(pause)
            self.waited_seconds += pause
            now = self.clock()


_SHARE: CoreShare | None = None
"""This worker process's share, when its pool runs more units than cores."""


def install(handles: tuple[Any, Any, int, float] | None) -> None:
    """In a worker at start-up: rebuild the pool's share from its :meth:`CoreShare.handles`,
    claim a slot and make it :func:`current` (None: this pool does not share)."""
    global _SHARE
    share = None
    if handles is not None:
        flags, next_slot, cores, slice_seconds = handles
        share = CoreShare(flags, next_slot, cores, slice_seconds=slice_seconds)
        share.claim()
    _SHARE = share


def current() -> CoreShare | None:
    """The core share of this worker process (None: not sharing, or not in a worker)."""
    return _SHARE
