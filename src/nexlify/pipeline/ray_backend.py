"""The Ray backend: units as Ray tasks on a local or remote cluster (optional extra).

``--ray-address``: ``local`` starts a private cluster on this machine for the run and stops it
afterwards; ``auto`` joins the cluster ``ray start`` runs here; ``ray://host:10001`` connects
through Ray Client; ``host:port`` joins a cluster by its GCS address; unset = ``$RAY_ADDRESS``
if set, else ``local``. When Ray is already initialised in this process (a notebook, a test),
that connection is used and left open.

Every node needs the same Nexlify installed. Units write their models under the output folder
as usual; a unit that ran on another node also sends its model folder's files back, so the
driver's output folder is complete even without a shared filesystem.

Each task asks for ``torch_threads`` CPUs; on a cluster with GPUs, units that would use CUDA ask
for a share of a GPU (several per GPU when more units run than there are GPUs) and Ray places
them (it sets ``CUDA_VISIBLE_DEVICES``, so inside a task the device is ``cuda``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import IO, Any

from nexlify.errors import ConfigError
from nexlify.io import atomic_write
from nexlify.pipeline.backends import (
    GRACE_SECONDS,
    RAY_INSTALL_HINT,
    Backend,
    ProgressSink,
    R,
    T,
    UnitError,
    run_isolated,
    unit_error,
    unit_label,
    with_progress,
)
from nexlify.pipeline.placement import on_device


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            f"--backend ray needs Ray, which is not installed here: {RAY_INSTALL_HINT}"
        ) from None
    return ray


class ProgressBox:
    """A tiny actor collecting (label, done, total) from tasks until the driver drains it."""

    def __init__(self) -> None:
        self.items: list[tuple[str, int, int]] = []

    def put(self, item: tuple[str, int, int]) -> None:
        self.items.append(item)

    def drain(self) -> list[tuple[str, int, int]]:
        items, self.items = self.items, []
        return items


class _RayProgress:
    """Picklable stand-in for a progress queue inside a Ray task (fire and forget)."""

    def __init__(self, box: Any) -> None:
        self.box = box
        self.last: Any = None

    def put(self, item: tuple[str, int, int]) -> None:
        self.last = self.box.put.remote(item)


def ray_unit(fn: Callable[[Any], Any], task: Any, driver_node: str) -> tuple[Any, dict[str, bytes]]:
    """Body of a Ray task: run the unit; from another node, also return its model folder."""
    import ray

    outcome = run_isolated(fn, task)
    forwarder = getattr(task, "progress_queue", None)
    if isinstance(forwarder, _RayProgress) and forwarder.last is not None:
        ray.get(forwarder.last)  # the last progress update lands before the outcome
    files: dict[str, bytes] = {}
    model_dir = getattr(task, "model_dir", None)
    if model_dir and ray.get_runtime_context().get_node_id() != driver_node:
        files = {str(p): p.read_bytes() for p in Path(model_dir).iterdir() if p.is_file()}
    return outcome, files


def _land(files: dict[str, bytes]) -> None:
    """Write files a remote unit sent back (unless identical ones are here already)."""
    for name, data in files.items():
        path = Path(name)
        if path.is_file() and path.read_bytes() == data:
            continue
        atomic_write(path, partial(_write_bytes, data=data))


def _write_bytes(handle: IO[bytes], data: bytes) -> None:
    handle.write(data)


def _gpu_share(ray: Any, device: str, in_flight: int) -> float:
    """GPUs one task asks for: 0 on CPU; else one GPU split among the units sharing it."""
    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    if gpus <= 0 or not (device == "auto" or device.startswith("cuda")):
        return 0.0
    return min(1.0, gpus / max(1, in_flight))


class RayBackend(Backend):
    """Units as Ray tasks; outcomes in task order; a failed unit cancels the rest."""

    name = "ray"

    def __init__(self, workers: int = 1, *, address: str | None = None, threads: int = 1) -> None:
        super().__init__(workers)
        self.address = address
        self.threads = max(1, threads)
        self._ray = import_ray()
        self._started = False

    def _connect(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        address = self.address or os.environ.get("RAY_ADDRESS") or "local"
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
        if address == "local":
            # A private cluster sized like the process backend: the same units at once.
            kwargs.update(
                num_cpus=self.workers * self.threads, include_dashboard=False, log_to_driver=False
            )
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"--ray-address {address}: cannot connect to Ray ({exc})") from exc
        self._started = True

    def map_units(
        self,
        fn: Callable[[T], R],
        tasks: Sequence[T],
        on_done: Callable[[R], None] | None = None,
        progress: ProgressSink | None = None,
    ) -> list[R]:
        if not tasks:
            return []
        self._connect()
        ray = self._ray
        box = ray.remote(num_cpus=0)(ProgressBox).remote() if progress is not None else None
        forwarder = _RayProgress(box) if box is not None else None
        driver_node = ray.get_runtime_context().get_node_id()
        cap = self.workers
        device = str(getattr(getattr(getattr(tasks[0], "config", None), "train", None),
                             "device", "cpu"))  # fmt: skip
        gpus = _gpu_share(ray, device, min(cap, len(tasks)))
        remote = ray.remote(ray_unit).options(num_cpus=self.threads, num_gpus=gpus, max_retries=0)
        todo = [(k, with_progress(on_device(t, "cuda") if gpus else t, forwarder))
                for k, t in enumerate(tasks)]  # fmt: skip
        todo.reverse()
        index: dict[Any, int] = {}
        outcomes: list[Any] = [None] * len(tasks)
        try:
            while todo or index:
                while todo and len(index) < cap:
                    k, task = todo.pop()
                    index[remote.remote(fn, task, driver_node)] = k
                ready, _ = ray.wait(list(index), num_returns=len(index), timeout=0.25)
                self._drain(box, progress)
                for ref in sorted(ready, key=index.__getitem__):
                    k = index.pop(ref)
                    outcome, files = self._get(ref, unit_label(tasks[k], k))
                    _land(files)
                    outcomes[k] = outcome
                    if on_done is not None:
                        on_done(outcome)
            self._drain(box, progress)
        except BaseException:
            self._cancel(list(index))
            raise
        finally:
            if box is not None:
                ray.kill(box)
        return outcomes

    def _get(self, ref: Any, label: str) -> tuple[Any, dict[str, bytes]]:
        ray = self._ray
        try:
            result: tuple[Any, dict[str, bytes]] = ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            raise unit_error(label, cause if isinstance(cause, BaseException) else err) from err
        except ray.exceptions.RayError as err:
            raise UnitError(label, f"Ray lost the task ({type(err).__name__}: {err})") from err
        return result

    def _drain(self, box: Any, progress: ProgressSink | None) -> None:
        if box is None or progress is None:
            return
        for label, done, total in self._ray.get(box.drain.remote()):
            progress.update(label, done, total)

    def _cancel(self, refs: list[Any]) -> None:
        """Interrupt running tasks once, wait a grace period, then kill their workers."""
        ray = self._ray
        if not refs or not ray.is_initialized():
            return
        for ref in refs:
            ray.cancel(ref)
        _, left = ray.wait(refs, num_returns=len(refs), timeout=GRACE_SECONDS)
        for ref in left:
            ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False
