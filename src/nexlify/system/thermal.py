"""Thermal guard: read GPU and CPU temperatures and pause or slow training while too hot.

Sensors:

- NVIDIA GPUs through NVML (``pynvml``, from the optional ``gpu`` extra: ``pip install
  'nexlify[gpu]'``): temperature, SM and memory clocks, and whether the driver is throttling the
  clocks for heat. Only the GPU the run trains on is watched (several runs on several GPUs must
  not pause each other).
- CPUs where the OS exposes them: Linux hwmon (``coretemp``, ``k10temp``, ...; the hottest of a
  chip's inputs) or, without a CPU hwmon, the CPU thermal zones (``/sys/class/thermal``); AMD GPUs
  under ROCm through their ``amdgpu`` hwmon.

:class:`ThermalGuard` is called by the trainer between vector steps (:meth:`ThermalGuard.check`);
it reads the sensors every ``interval_s`` seconds. When the hottest reaches ``pause_c`` it logs
it and either *pauses* (sleeps in steps of ``poll_s``, re-reading, until every sensor is below
``resume_c``) or *slows* training (sleeps as long as the work since the previous check took, so
training runs at half speed, until below ``resume_c``). The gap between the two thresholds is
the hysteresis that stops it flapping. Without sensors it says so once and never acts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from nexlify.errors import TrainingError


class ThermalSettings(Protocol):
    """The settings the guard reads (``TrainConfig`` has them; system/ imports no config)."""

    @property
    def thermal_pause_c(self) -> float: ...
    @property
    def thermal_resume_c(self) -> float: ...
    @property
    def thermal_action(self) -> str: ...


THERMAL_ACTIONS = ("pause", "slow")
"""What the guard does while too hot."""

CPU_HWMON = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "soc_thermal", "acpitz")
"""hwmon chip names that measure the CPU package or cores (Intel, AMD, ARM boards)."""

CPU_ZONE_HINTS = ("x86_pkg", "cpu", "soc", "acpitz", "tcpu")
"""Substrings of /sys/class/thermal zone types that are the CPU (not a battery, NVMe or Wi-Fi)."""

PLAUSIBLE_C = (-20.0, 150.0)
"""Readings outside this range are sensor faults (unplugged probes report 0 or -273)."""


@dataclass(frozen=True)
class Reading:
    """One sensor's reading."""

    sensor: str
    """e.g. ``gpu0 (NVIDIA H100 80GB HBM3)`` or ``cpu (coretemp)``."""
    celsius: float
    """Temperature in degrees Celsius."""
    clocks_mhz: dict[str, int] = field(default_factory=dict)
    """GPU clocks: ``sm`` and ``mem`` (empty for CPUs)."""
    throttled: bool = False
    """The driver is slowing the clocks down because of heat (NVML only)."""

    def describe(self) -> str:
        clocks = ", ".join(f"{k} {v} MHz" for k, v in self.clocks_mhz.items())
        extra = f" ({clocks}{', thermal throttling' if self.throttled else ''})" if clocks else ""
        return f"{self.sensor} {self.celsius:.0f}°C{extra}"


class TemperatureSensor(Protocol):
    """Anything that gives a temperature reading (a fake one in tests)."""

    name: str

    def read(self) -> Reading | None:
        """The current reading, or None when the sensor cannot be read this time."""
        ...


class NvmlGpuSensor:
    """One NVIDIA GPU through NVML."""

    def __init__(self, nvml: Any, handle: Any, index: int) -> None:
        self.nvml = nvml
        self.handle = handle
        model = nvml.nvmlDeviceGetName(handle)
        model = model.decode() if isinstance(model, bytes) else str(model)
        self.name = f"gpu{index} ({model})"

    def read(self) -> Reading | None:
        nvml, h = self.nvml, self.handle
        try:
            celsius = float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
            clocks = {
                "sm": int(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)),
                "mem": int(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM)),
            }
        except nvml.NVMLError:
            return None
        return Reading(self.name, celsius, clocks, self._throttled())

    def _throttled(self) -> bool:
        nvml = self.nvml
        try:
            reasons = int(nvml.nvmlDeviceGetCurrentClocksThrottleReasons(self.handle))
        except (nvml.NVMLError, AttributeError):
            return False
        return bool(reasons & (0x20 | 0x40))  # software and hardware thermal slowdown bits


class SysfsSensor:
    """The hottest of some Linux sysfs temperature files (millidegrees Celsius)."""

    def __init__(self, name: str, paths: Sequence[Path]) -> None:
        self.name = name
        self.paths = list(paths)

    def read(self) -> Reading | None:
        values = []
        for path in self.paths:
            try:
                celsius = int(path.read_text().strip()) / 1000.0
            except (OSError, ValueError):
                continue
            if PLAUSIBLE_C[0] < celsius < PLAUSIBLE_C[1]:
                values.append(celsius)
        return Reading(self.name, max(values)) if values else None


def nvml_sensors(device: torch.device | None) -> tuple[list[TemperatureSensor], str | None]:
    """NVML sensor of the CUDA ``device`` (every GPU when None); or a note why there is none."""
    if device is not None and device.type != "cuda":
        return [], None
    try:
        import pynvml
    except ImportError:
        return [], "no NVML for GPU temperatures (pip install 'nexlify[gpu]')"
    try:
        pynvml.nvmlInit()
        count = int(pynvml.nvmlDeviceGetCount())
        indices = range(count) if device is None else [_nvml_index(pynvml, device, count)]
        handles = [(pynvml.nvmlDeviceGetHandleByIndex(i), i) for i in indices]
        return [NvmlGpuSensor(pynvml, handle, i) for handle, i in handles], None
    except (pynvml.NVMLError, RuntimeError) as exc:
        return [], f"NVML unavailable ({exc})"


def _nvml_index(nvml: Any, device: torch.device, count: int) -> int:
    """NVML's index of a torch CUDA device (they differ under CUDA_VISIBLE_DEVICES)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is not None:
        for i in range(count):
            theirs = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))
            theirs = theirs.decode() if isinstance(theirs, bytes) else str(theirs)
            if theirs.removeprefix("GPU-") == str(uuid).removeprefix("GPU-"):
                return i
    return index


def sysfs_sensors(root: Path = Path("/sys/class"), *, amd_gpu: bool = False) -> list[SysfsSensor]:
    """CPU sensors under ``root`` (hwmon first, else thermal zones), and amdgpu if asked."""
    sensors: list[SysfsSensor] = []
    for chip in sorted((root / "hwmon").glob("hwmon*")):
        try:
            name = (chip / "name").read_text().strip()
        except OSError:
            continue
        inputs = sorted(chip.glob("temp*_input"))
        if inputs and name in CPU_HWMON:
            sensors.append(SysfsSensor(f"cpu ({name})", inputs))
        elif inputs and amd_gpu and name == "amdgpu":
            sensors.append(SysfsSensor(f"gpu ({name} {chip.name})", inputs))
    if any(s.name.startswith("cpu") for s in sensors):
        return sensors
    for zone in sorted((root / "thermal").glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip()
        except OSError:
            continue
        if any(hint in kind.lower() for hint in CPU_ZONE_HINTS) and (zone / "temp").exists():
            sensors.append(SysfsSensor(f"cpu ({kind})", [zone / "temp"]))
    return sensors


def discover_sensors(
    device: str | torch.device | None,
) -> tuple[list[TemperatureSensor], list[str]]:
    """Sensors for a run on ``device``: its GPU (NVML, or amdgpu on ROCm) and the CPU."""
    dev = torch.device(device) if device is not None else None
    sensors, note = nvml_sensors(dev)
    rocm = bool(getattr(torch.version, "hip", None)) and (dev is None or dev.type == "cuda")
    notes = [note] if note and not rocm else []
    sensors.extend(sysfs_sensors(amd_gpu=rocm))
    if not any(s.name.startswith("cpu") for s in sensors):
        notes.append("no CPU temperature exposed (/sys/class/hwmon, /sys/class/thermal)")
    return sensors, notes


class ThermalGuard:
    """Pauses or slows training while a sensor is too hot (see the module docstring)."""

    def __init__(
        self,
        pause_c: float,
        resume_c: float,
        *,
        action: str = "pause",
        sensors: Sequence[TemperatureSensor] | None = None,
        device: str | torch.device | None = None,
        log: logging.Logger | None = None,
        label: str = "run",
        interval_s: float = 5.0,
        poll_s: float = 10.0,
        max_pause_s: float = 1800.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if action not in THERMAL_ACTIONS:
            raise ValueError(f"action {action!r} is not one of {THERMAL_ACTIONS}")
        if not resume_c < pause_c:
            raise ValueError(f"resume_c={resume_c} must be below pause_c={pause_c}")
        self.pause_c, self.resume_c, self.action = float(pause_c), float(resume_c), action
        self.sensors: list[TemperatureSensor] | None = None if sensors is None else list(sensors)
        self.device = device
        self.log = log or logging.getLogger("nexlify.train")
        self.label = label
        self.interval_s, self.poll_s, self.max_pause_s = interval_s, poll_s, max_pause_s
        self.sleep, self.clock = sleep, clock
        self.hot = False
        """Above pause_c and not yet below resume_c."""
        self.events = 0
        """Times the guard went hot."""
        self.held_s = 0.0
        """Seconds spent sleeping (paused or slowed)."""
        self.max_c: float | None = None
        """Hottest reading seen."""
        self.last: list[Reading] = []
        """The latest readings."""
        self._last_read = -float("inf")
        self._last_check: float | None = None
        self._off = False
        self._announced = False

    @classmethod
    def from_train_config(
        cls, train: ThermalSettings, device: str | torch.device,
        log: logging.Logger | None = None, label: str = "run",
    ) -> ThermalGuard | None:  # fmt: skip
        """The guard ``train`` asks for (None when train.thermal_pause_c is 0: no guard)."""
        if not train.thermal_pause_c:
            return None
        return cls(train.thermal_pause_c, train.thermal_resume_c, action=train.thermal_action,
                   device=device, log=log, label=label)  # fmt: skip

    def check(self) -> float:
        """Read the sensors when due and act on them; returns the seconds slept."""
        if self._off:
            return 0.0
        if self.sensors is None:
            self._discover()
            if self._off:
                return 0.0
        slept = 0.0
        now = self.clock()
        if self.hot and self.action == "slow" and self._last_check is not None:
            slept = self._hold(now - self._last_check)
            now = self.clock()
        self._last_check = now
        if now - self._last_read < self.interval_s:
            return slept
        hottest = self._read()
        if hottest is None:
            if self.max_c is None:  # sensors that never gave a reading: as good as none
                self._turn_off("the sensors found give no readings")
            return slept
        if not self._announced:
            self._announced = True
            self.log.info("%s | thermal guard: %s; pause at %.0f°C, resume below %.0f°C",
                          self.label, ", ".join(r.describe() for r in self.last), self.pause_c,
                          self.resume_c)  # fmt: skip
        if not self.hot and hottest.celsius >= self.pause_c:
            self.hot = True
            self.events += 1
            self.log.warning(
                "%s | thermal: %s >= %.0f°C: %s training until below %.0f°C", self.label,
                hottest.describe(), self.pause_c,
                "pausing" if self.action == "pause" else "slowing", self.resume_c,
            )  # fmt: skip
            if self.action == "pause":
                slept += self._wait_until_cool()
                self._last_check = self.clock()
        elif self.hot and hottest.celsius < self.resume_c:
            self.hot = False
            self.log.info("%s | thermal: %s: back to full speed", self.label, hottest.describe())
        return slept

    def summary(self) -> dict[str, Any]:
        """Plain values for the run summary."""
        return {
            "sensors": [s.name for s in self.sensors or []],
            "max_celsius": self.max_c,
            "hot_events": self.events,
            "held_seconds": round(self.held_s, 1),
            "last": [r.describe() for r in self.last],
        }

    def _discover(self) -> None:
        sensors, notes = discover_sensors(self.device)
        self.sensors = sensors
        if not sensors:
            self._turn_off("; ".join(notes) or "none found")

    def _turn_off(self, why: str) -> None:
        self._off = True
        self.log.warning("%s | thermal guard off: no temperature sensor (%s); training goes on "
                         "without it", self.label, why)  # fmt: skip

    def _read(self) -> Reading | None:
        self._last_read = self.clock()
        readings = [r for s in self.sensors or [] if (r := s.read()) is not None]
        if not readings:
            return None
        self.last = readings
        hottest = max(readings, key=lambda r: r.celsius)
        self.max_c = hottest.celsius if self.max_c is None else max(self.max_c, hottest.celsius)
        self.log.debug("%s | thermal: %s", self.label, ", ".join(r.describe() for r in readings))
        return hottest

    def _hold(self, seconds: float) -> float:
        seconds = max(seconds, 0.0)
        if seconds > 0:
            self.sleep(seconds)
            self.held_s += seconds
        return seconds

    def _wait_until_cool(self) -> float:
        start = self.clock()
        next_note = start + 60.0
        while True:
            self._hold(self.poll_s)
            hottest = self._read()
            now = self.clock()
            if hottest is None or hottest.celsius < self.resume_c:
                break
            if now - start >= self.max_pause_s:
                raise TrainingError(
                    f"{self.label}: still {hottest.describe()} after {now - start:.0f}s of pause "
                    f"(resume below {self.resume_c:.0f}°C); check the cooling, or raise "
                    "train.thermal_pause_c / train.thermal_resume_c"
                )
            if now >= next_note:
                self.log.info("%s | thermal: still paused, %s", self.label, hottest.describe())
                next_note = now + 60.0
        self.hot = False
        waited = self.clock() - start
        state = hottest.describe() if hottest is not None else "sensors unreadable"
        self.log.info("%s | thermal: resumed after %.0fs (%s)", self.label, waited, state)
        return waited
