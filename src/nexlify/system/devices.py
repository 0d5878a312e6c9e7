"""Per-process device settings for training: TF32, cuDNN autotuning, pinned host memory.

``--device`` names the device (:func:`nexlify.train.trainer.resolve_device` checks it);
:func:`configure_device` then sets what makes that device fast and returns a
:class:`DeviceSetup` saying what it set, for the log and the run summary. The switches are
process-wide torch flags, so every process that trains (each pipeline worker) calls it once
before it builds an agent.

- CUDA: TF32 for float32 matmuls (cuBLAS) and convolutions (cuDNN), which Ampere and newer GPUs
  run several times faster at about 1e-3 relative precision (a 10-bit mantissa; DQN's targets
  are far noisier than that), and cuDNN autotuning
  (``torch.backends.cudnn.benchmark``), which picks the fastest kernel per input shape once.
  The shapes of a training run are fixed (batch size, obs size), so autotuning pays off.
- ROCm builds of torch use the same ``cuda`` device type and the same flags (hipBLAS(Lt) and
  MIOpen read them); the setup reports ``rocm`` so the summary says which stack ran.
- MPS and CPU: nothing to switch; the setup still reports the device and its threads.

Subnormal floats (below 1.2e-38 in float32) are flushed to zero during each gradient step
(:func:`denormals_flushed`, used by ``DQNAgent.update_no_sync``), as TensorFlow and XLA do by
default on the CPU.

Mixed precision (bf16/fp16 with a gradient scaler) is the agent's business
(``AgentConfig.amp``). :class:`HostTransfer` copies replay batches (numpy, host) to a GPU
learner through page-locked memory, so the copy is asynchronous.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DeviceSetup:
    """What :func:`configure_device` found and set for one training process."""

    device: str
    """The torch device, e.g. ``cuda:0`` or ``cpu``."""
    backend: str
    """cuda, rocm, mps or cpu."""
    name: str
    """GPU model name, or ``cpu`` / ``mps``."""
    capability: str | None
    """CUDA compute capability (``8.0``), the ROCm arch name, or None off the GPU."""
    total_memory_gib: float | None
    """Memory of the GPU in GiB (None off CUDA/ROCm)."""
    tf32: bool
    """TF32 matmuls and convolutions allowed (CUDA/ROCm only)."""
    tf32_effective: bool
    """TF32 actually speeds things up: allowed, and an Ampere (8.0) or newer NVIDIA GPU or an
    MI300-class AMD GPU."""
    cudnn_benchmark: bool
    """cuDNN (MIOpen on ROCm) autotuning on."""
    pin_memory: bool
    """Replay batches go through pinned host memory on their way to the device."""
    torch_threads: int
    """Torch CPU threads of this process."""

    def describe(self) -> str:
        """One line for the log."""
        if self.backend in ("cpu", "mps"):
            return f"{self.device} ({self.backend}, {self.torch_threads} torch threads)"
        memory = f", {self.total_memory_gib:.1f} GiB" if self.total_memory_gib else ""
        tf32 = "on" if self.tf32_effective else ("allowed, no effect" if self.tf32 else "off")
        return (
            f"{self.device} ({self.backend}: {self.name}, capability {self.capability}{memory}) "
            f"| TF32 {tf32} | cuDNN autotune {'on' if self.cudnn_benchmark else 'off'} "
            f"| pinned memory {'on' if self.pin_memory else 'off'}"
        )

    def to_dict(self) -> dict[str, object]:
        """Plain values for the run summary."""
        return asdict(self)


def gpu_backend() -> str:
    """``rocm`` on a ROCm (HIP) build of torch, else ``cuda``."""
    return "rocm" if getattr(torch.version, "hip", None) else "cuda"


def configure_device(
    device: str | torch.device, *, tf32: bool = True, cudnn_benchmark: bool = True
) -> DeviceSetup:
    """Switch on TF32 and cuDNN autotuning for a CUDA/ROCm ``device``; report what was set.

    ``device`` is a resolved device (not ``auto``). On MPS and CPU nothing changes. The flags are
    process-wide: the last call in a process wins.
    """
    dev = torch.device(device)
    threads = torch.get_num_threads()
    if dev.type != "cuda":
        return DeviceSetup(str(dev), dev.type, dev.type, None, None, False, False, False,
                           False, threads)  # fmt: skip
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    _set_tf32(tf32)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    props = torch.cuda.get_device_properties(dev)
    backend = gpu_backend()
    if backend == "rocm":
        capability = str(getattr(props, "gcnArchName", f"{props.major}.{props.minor}"))
        # MI300-class GPUs (gfx94x, gfx95x) have xf32 (AMD's TF32); older ones ignore the flag.
        effective = tf32 and capability.startswith(("gfx94", "gfx95"))
    else:
        capability = f"{props.major}.{props.minor}"
        effective = tf32 and props.major >= 8
    return DeviceSetup(
        device=str(dev),
        backend=backend,
        name=str(props.name),
        capability=capability,
        total_memory_gib=round(props.total_memory / (1 << 30), 2),
        tf32=tf32,
        tf32_effective=effective,
        cudnn_benchmark=cudnn_benchmark,
        pin_memory=True,
        torch_threads=threads,
    )


def _set_tf32(on: bool) -> None:
    # The allow_tf32 flags work on every torch >= 2.1 (newer ones also offer fp32_precision;
    # mixing the two APIs is refused by some versions, so only the old one is used).
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


class HostTransfer:
    """Copies numpy arrays (replay batches) from the host to the learner's device.

    For a CUDA/ROCm device the array is staged in pinned (page-locked) memory and copied with
    ``non_blocking=True``: the GPU's DMA engine reads it while the CPU goes on sampling. torch's
    caching host allocator recycles the pinned blocks and keeps each one alive until its copy has
    finished, so no staging buffer can be overwritten early. For the CPU the result shares the
    array's memory (no copy).
    """

    def __init__(self, device: str | torch.device, *, pin: bool | None = None) -> None:
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda" if pin is None else pin
        """Stage through pinned memory (default: on for CUDA/ROCm devices)."""

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        """``array`` as a tensor on the device (asynchronous from pinned memory on a GPU)."""
        tensor = torch.from_numpy(array)
        if self.device.type == "cpu":
            return tensor
        if self.pin:
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)


_SMALLEST_SUBNORMAL = float(np.finfo(np.float64).smallest_subnormal)


def denormals_are_flushed() -> bool:
    """Whether this thread's floating-point unit treats subnormal numbers as zero (DAZ/FTZ).

    Probed with one multiplication: a subnormal input reads as 0 under DAZ, a subnormal result
    is written as 0 under FTZ."""
    tiny = _SMALLEST_SUBNORMAL
    return tiny * 1.0 == 0.0


@contextlib.contextmanager
def denormals_flushed() -> Iterator[bool]:
    """Flush subnormal floats to zero in this thread for the duration; yields whether the CPU
    supports it (``torch.set_flush_denormal``: x86 with SSE3). The previous mode is restored.

    Why training wants it: Adam's first moment of a weight whose gradient stays exactly zero (a
    ReLU unit that no longer fires) shrinks by beta1 each step into the subnormal range and then
    stays at the smallest subnormal, where rounding keeps it; every optimizer step then computes
    on thousands of subnormals, which x86 CPUs handle in slow microcode. A C51 head trained for
    24 episodes held about 10,000 of its 46,000 first moments there (plain DQN's 7-wide head: a
    handful), enough to make its Adam step about a quarter slower. The values flushed are below
    1.2e-38: an update of that size does not change a float32 weight, so learning is the same
    to any precision that matters, and a run is as deterministic as before. Only the calling
    thread is switched (torch's intra-op threads, when there are several, keep their mode), and
    only for the block: acting, evaluation and the market simulator compute as before.
    """
    before = denormals_are_flushed()
    supported = bool(torch.set_flush_denormal(True))
    try:
        yield supported
    finally:
        if supported and not before:
            torch.set_flush_denormal(False)
