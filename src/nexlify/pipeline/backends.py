"""Execution backends: where the pipeline's independent units run.

A *unit* is one independent piece of work: an initial run, a walk-forward fold, an ablation
variant, a tuning trial. A backend maps a top-level function over a list of unit tasks and hands
the outcomes back in task order, whatever order they finish in:

- ``inprocess``: one after the other in this process (for debugging: breakpoints, profilers).
- ``process``: local worker processes, the default. They start clean (no CUDA context or
  threads inherited): from a fork server that has imported torch, numba and Nexlify once, where
  the platform has one (Linux, macOS), else spawned. Importing torch costs seconds of CPU per
  process, a large share of a short run on a small machine.
- ``ray``: tasks on a Ray cluster (``--ray-address local|auto|ray://host:10001``), an optional
  extra (``pip install 'nexlify[ray]'``); see :mod:`nexlify.pipeline.ray_backend`.

A unit's result depends only on its task (seed, data, config, torch threads), never on the
backend or on which worker ran it, so every backend gives the same outcomes for the same seeds.

Progress: a task with a ``progress_queue`` field gets an object whose ``put((label, done,
total))`` reaches the caller's progress sink (directly in-process, through a queue from worker
processes, through a small actor from Ray). Failures: the first unit that raises stops the
others and raises :class:`UnitError` naming it. Ctrl-C (or SIGTERM in the parent) stops the
workers once, waits a short grace period for them to exit, then kills what is left.

How many units run at once and on which device: :mod:`nexlify.pipeline.placement`.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any, Protocol, TypeVar

from nexlify.errors import ConfigError, NexlifyError, TrainingError
from nexlify.pipeline.placement import cores_at_once, takes_turns, with_field
from nexlify.system import core_share
from nexlify.system.lifetime import die_with_parent
from nexlify.train.config import BACKENDS

RAY_INSTALL_HINT = "pip install 'nexlify[ray]'"

GRACE_SECONDS = 10.0
"""After Ctrl-C or a failed unit: how long stopped workers get to exit before they are killed."""

T = TypeVar("T")
R = TypeVar("R")


class ProgressSink(Protocol):
    """Receives training progress of each unit (e.g. a progress bar)."""

    def update(self, label: str, done: int, total: int) -> None: ...


class UnitError(TrainingError):
    """A unit failed; the message names it, ``__cause__`` holds the original error.

    The exit code is the original error's when that was a Nexlify error (a bad setting found
    inside a worker still exits with the config error's code).
    """

    def __init__(self, label: str, reason: str, exit_code: int | None = None) -> None:
        super().__init__(f"{label} failed: {reason}")
        self.label = label
        if exit_code is not None:
            self.exit_code = exit_code


def unit_error(label: str, exc: BaseException) -> UnitError:
    """The UnitError for ``exc`` raised by unit ``label`` (keeps a Nexlify exit code)."""
    code = exc.exit_code if isinstance(exc, NexlifyError) else None
    return UnitError(label, f"{type(exc).__name__}: {exc}", code)


def unit_label(task: Any, index: int) -> str:
    """A task's ``label`` field, else ``unit <n>`` (1-based)."""
    label = getattr(task, "label", None)
    return str(label) if label else f"unit {index + 1}"


def with_progress(task: T, forwarder: Any) -> T:
    """``task`` with its ``progress_queue`` field set to ``forwarder`` (tasks without one as is)."""
    return with_field(task, "progress_queue", forwarder) if forwarder is not None else task


def run_isolated(fn: Callable[[Any], Any], task: Any) -> Any:
    """Run one unit; log handlers it adds are removed afterwards (a reused worker must not keep
    writing into an earlier run's log file)."""
    name = getattr(task, "logger_name", None)
    log = logging.getLogger(name) if name else None
    before = list(log.handlers) if log is not None else []
    try:
        return fn(task)
    finally:
        if log is not None:
            for handler in [h for h in log.handlers if h not in before]:
                log.removeHandler(handler)
                handler.close()


# ---- backends ------------------------------------------------------------------------------


class Backend(ABC):
    """Runs unit functions; use as a context manager so workers are released."""

    name = "backend"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, workers)

    @abstractmethod
    def map_units(
        self,
        fn: Callable[[T], R],
        tasks: Sequence[T],
        on_done: Callable[[R], None] | None = None,
        progress: ProgressSink | None = None,
    ) -> list[R]:
        """``fn`` over ``tasks``; outcomes in task order. ``on_done`` sees each outcome as it
        finishes (in this process). A unit that raises stops the rest: :class:`UnitError`."""

    def close(self) -> None:  # noqa: B027 - nothing to release unless a backend holds workers
        """Release workers (idempotent)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _DirectProgress:
    """In-process stand-in for a progress queue: ``put`` updates the sink at once."""

    def __init__(self, sink: ProgressSink) -> None:
        self.sink = sink

    def put(self, item: tuple[str, int, int]) -> None:
        self.sink.update(*item)


class InProcessBackend(Backend):
    """One unit after another in this process."""

    name = "inprocess"

    def map_units(
        self,
        fn: Callable[[T], R],
        tasks: Sequence[T],
        on_done: Callable[[R], None] | None = None,
        progress: ProgressSink | None = None,
    ) -> list[R]:
        forwarder = _DirectProgress(progress) if progress is not None else None
        outcomes: list[R] = []
        for index, task in enumerate(tasks):
            try:
                outcome = run_isolated(fn, with_progress(task, forwarder))
            except Exception as exc:
                raise unit_error(unit_label(task, index), exc) from exc
            if on_done is not None:
                on_done(outcome)
            outcomes.append(outcome)
        return outcomes


# Set in each worker process by _init_worker: the queue progress goes back through.
_WORKER_UPDATES: Any = None


class _WorkerProgress:
    """Picklable stand-in for a progress queue inside a worker process."""

    def put(self, item: tuple[str, int, int]) -> None:
        if _WORKER_UPDATES is not None:
            _WORKER_UPDATES.put(item)


_IN_UNIT = False
"""Set in a worker process while it runs a unit."""


def _worker_unit(fn: Callable[[Any], Any], task: Any) -> Any:
    global _IN_UNIT
    _IN_UNIT = True
    share = core_share.current()
    if share is not None:
        share.running(True)
    try:
        return run_isolated(fn, task)
    finally:
        if share is not None:
            share.running(False)
        _IN_UNIT = False


def _stop_worker(signum: int, frame: Any) -> None:
    """SIGTERM from the parent: interrupt the running unit (its ``finally`` blocks run, the
    error goes back to the parent); an idle worker just exits."""
    if _IN_UNIT:
        raise KeyboardInterrupt
    raise SystemExit(0)


def _init_worker(updates: Any, share: tuple[Any, Any, int, float] | None = None) -> None:
    """Worker set-up: the progress queue, the pool's core share, and signals left to the parent.

    Ctrl-C reaches the whole process group; workers ignore it and the parent stops each worker
    exactly once (SIGTERM, raised here as KeyboardInterrupt so ``finally`` blocks run).
    """
    global _WORKER_UPDATES
    die_with_parent()  # a SIGKILLed pipeline must not leave workers writing into its folder
    _WORKER_UPDATES = updates
    core_share.install(share)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _stop_worker)


WORKER_PRELOAD = ["nexlify.pipeline.worker_preload"]
"""Modules the fork server imports once so every worker starts with them loaded."""


def worker_context() -> Any:
    """The multiprocessing context of worker processes: a preloaded fork server, else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(WORKER_PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def prestart_workers() -> bool:
    """Start the workers' fork server now; True when one was started (or already runs).

    Its imports (torch and what building an optimizer pulls in: about 4 s of CPU) then overlap
    what the caller does before its first units (pre-flight checks, loading data) instead of
    delaying them: the first worker forks from a server that is ready, or nearly. False, and
    nothing started, where workers are spawned (no fork server on this platform).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    from multiprocessing import forkserver

    worker_context()  # the preload list
    forkserver.ensure_running()  # returns once the server is launched; it imports on its own
    return True


class ProcessBackend(Backend):
    """Units in ``workers`` worker processes (a pool kept for the backend's lifetime).

    With more workers than ``cores // threads`` (``cores``: this machine's) and ``share_cores``
    on, the running units take turns on the cores (:mod:`nexlify.system.core_share`).
    """

    name = "process"

    def __init__(
        self,
        workers: int = 1,
        *,
        threads: int = 1,
        cores: int | None = None,
        share_cores: bool = True,
    ) -> None:
        super().__init__(workers)
        self._pool: ProcessPoolExecutor | None = None
        self._updates: Any = None
        self.shares_cores = takes_turns(self.name, workers, threads, share_cores, cores)
        self.running_at_once = cores_at_once(threads, cores) if self.shares_cores else workers
        """Units that compute at any moment: all ``workers``, or fewer when they share."""

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = worker_context()
            self._updates = ctx.Queue()
            share = (
                core_share.CoreShare.create(self.workers, self.running_at_once, ctx).handles()
                if self.shares_cores
                else None
            )
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=ctx, initializer=_init_worker,
                initargs=(self._updates, share),
            )  # fmt: skip
        return self._pool

    def map_units(
        self,
        fn: Callable[[T], R],
        tasks: Sequence[T],
        on_done: Callable[[R], None] | None = None,
        progress: ProgressSink | None = None,
    ) -> list[R]:
        if not tasks:
            return []
        pool = self._ensure_pool()
        forwarder = _WorkerProgress() if progress is not None else None
        outcomes: list[Any] = [None] * len(tasks)
        try:
            index: dict[Future[Any], int] = {
                pool.submit(_worker_unit, fn, with_progress(task, forwarder)): k
                for k, task in enumerate(tasks)
            }
            pending = set(index)
            while pending:
                finished, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                self._drain(progress)
                for future in sorted(finished, key=index.__getitem__):
                    k = index[future]
                    outcomes[k] = _result(future, unit_label(tasks[k], k))
                    if on_done is not None:
                        on_done(outcomes[k])
            self._drain(progress)
        except BaseException:
            self._abort()
            raise
        return outcomes

    def _drain(self, progress: ProgressSink | None) -> None:
        while progress is not None and self._updates is not None:
            try:
                label, done, total = self._updates.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            progress.update(label, done, total)

    def _abort(self) -> None:
        """Cancel queued units, stop running ones once, give them a grace period, kill the rest."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())  # no public handle (< 3.14)
        pool.shutdown(wait=False, cancel_futures=True)
        stop_processes(processes, GRACE_SECONDS)
        pool.shutdown(wait=True)
        self._close_queue()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._close_queue()

    def _close_queue(self) -> None:
        if self._updates is not None:
            self._updates.close()
            self._updates.join_thread()
            self._updates = None


def _result(future: Future[Any], label: str) -> Any:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise UnitError(label, "its worker process died (killed, or out of memory?)") from exc
    except Exception as exc:
        raise unit_error(label, exc) from exc


def stop_processes(processes: list[Any], grace: float) -> None:
    """SIGTERM each live process once, wait up to ``grace`` seconds in all, then SIGKILL."""
    import time

    live = [p for p in processes if p.is_alive()]
    for process in live:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in live:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in live:
        if process.is_alive():
            process.kill()
            process.join(5.0)


def make_backend(
    name: str,
    workers: int,
    *,
    ray_address: str | None = None,
    threads: int = 1,
    share_cores: bool = True,
) -> Backend:
    """The backend called ``name`` running ``workers`` units at once.

    ``process`` with one worker runs in this process (same results, no start-up cost); with
    more workers than cores (``threads`` each) they take turns when ``share_cores``. For
    ``ray``, ``workers`` caps the units in flight and sizes a private local cluster; ``threads``
    is the CPUs each Ray task asks for. ``ray`` without Ray installed says how to install it.
    """
    if name not in BACKENDS:
        raise ConfigError(f"pipeline.backend: {name!r} is invalid (one of {', '.join(BACKENDS)})")
    if name == "inprocess" or (name == "process" and workers <= 1):
        return InProcessBackend(1)
    if name == "process":
        return ProcessBackend(workers, threads=threads, share_cores=share_cores)
    from nexlify.pipeline.ray_backend import RayBackend

    return RayBackend(workers, address=ray_address, threads=threads)


def require_backend(name: str) -> None:
    """Fail early (before any work) when ``name`` cannot run here: Ray not installed."""
    if name == "ray":
        from nexlify.pipeline.ray_backend import import_ray

        import_ray()
