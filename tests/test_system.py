"""Hardware awareness on CPU-only CI: device flags, batch planning, OOM back-off, thermal guard.

No GPU is needed: CUDA calls are monkeypatched, sensors and clocks are fakes, and out-of-memory
errors are raised from a patched gradient step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from nexlify.agent.config import AgentConfig
from nexlify.agent.dqn import DQNAgent
from nexlify.agent.networks import network_from_config
from nexlify.cli import build_parser
from nexlify.commands.train import resolve_run_config
from nexlify.config import EnvConfig, MarketConfig
from nexlify.data.sources import synthetic_market
from nexlify.errors import ConfigError, TrainingError
from nexlify.market.env import VecMarketEnv
from nexlify.system.devices import (
    HostTransfer,
    configure_device,
    denormals_are_flushed,
    denormals_flushed,
)
from nexlify.system.thermal import (
    NvmlGpuSensor,
    Reading,
    ThermalGuard,
    discover_sensors,
    sysfs_sensors,
)
from nexlify.train import batch_size as bs
from nexlify.train.batch_size import BatchPlanner, OOMBackoff
from nexlify.train.config import RunConfig, TrainConfig, load_run_config
from nexlify.train.trainer import Trainer

GiB = 1 << 30

# ------------------------------------------------------------------------------------ devices


@pytest.fixture
def cuda_flags() -> Iterator[None]:
    """All GPU flags off during the test, the real values back after it (they are process-wide
    torch flags behind custom __setattr__, which monkeypatch cannot restore)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark)
    matmul.allow_tf32 = cudnn.allow_tf32 = cudnn.benchmark = False
    yield
    matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark = saved


def _fake_gpu(monkeypatch: pytest.MonkeyPatch, major: int, **extra: object) -> None:
    props = SimpleNamespace(name="Fake GPU", major=major, minor=0, total_memory=40 * GiB, **extra)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_configure_device_on_cpu_changes_nothing(cuda_flags: None) -> None:
    setup = configure_device("cpu")
    assert (setup.backend, setup.tf32, setup.cudnn_benchmark, setup.pin_memory) == (
        "cpu", False, False, False,
    )  # fmt: skip
    assert not torch.backends.cudnn.benchmark and not torch.backends.cuda.matmul.allow_tf32
    assert "torch threads" in setup.describe()


def test_configure_device_on_cuda_turns_on_tf32_and_autotuning(
    cuda_flags: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_gpu(monkeypatch, major=8)
    setup = configure_device("cuda")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert torch.backends.cudnn.benchmark
    assert setup.device == "cuda:0" and setup.backend == "cuda" and setup.capability == "8.0"
    assert setup.tf32_effective and setup.pin_memory and setup.total_memory_gib == 40.0
    assert "TF32 on" in setup.describe() and "cuDNN autotune on" in setup.describe()
    assert setup.to_dict()["name"] == "Fake GPU"


def test_tf32_before_ampere_is_reported_as_without_effect(
    cuda_flags: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_gpu(monkeypatch, major=7)
    setup = configure_device("cuda:0")
    assert setup.tf32 and not setup.tf32_effective
    assert "TF32 allowed, no effect" in setup.describe()


def test_configure_device_can_leave_tf32_and_autotuning_off(
    cuda_flags: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_gpu(monkeypatch, major=9)
    setup = configure_device("cuda:0", tf32=False, cudnn_benchmark=False)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.benchmark
    assert not setup.tf32_effective and "TF32 off" in setup.describe()


def test_rocm_takes_the_same_path_and_says_so(
    cuda_flags: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_gpu(monkeypatch, major=9, gcnArchName="gfx942:sramecc+:xnack-")
    monkeypatch.setattr(torch.version, "hip", "6.2.0", raising=False)
    setup = configure_device("cuda:0")
    assert setup.backend == "rocm" and setup.capability.startswith("gfx942")  # type: ignore[union-attr]
    assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32
    assert setup.tf32_effective


def test_subnormals_are_flushed_inside_the_block_and_the_mode_is_restored() -> None:
    tiny = np.full(8, 1e-39, dtype=np.float32)  # subnormal in float32
    assert not denormals_are_flushed()
    assert (tiny * np.float32(1.0) == tiny).all()
    with denormals_flushed() as supported:
        if not supported:
            pytest.skip("this CPU cannot flush subnormals (torch.set_flush_denormal)")
        assert denormals_are_flushed()
        assert (tiny * np.float32(1.0) == 0.0).all()
        assert float(torch.from_numpy(tiny).mul(1.0).abs().max()) == 0.0
        with denormals_flushed():
            pass
        assert denormals_are_flushed()  # an inner block leaves the outer one's mode alone
    assert not denormals_are_flushed()
    assert (tiny * np.float32(1.0) == tiny).all()


def test_gradient_steps_run_with_subnormals_flushed_and_nothing_else_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    in_steps: list[bool] = []
    real_loss = DQNAgent._loss

    def loss(self: DQNAgent, batch: object) -> object:
        in_steps.append(denormals_are_flushed())
        return real_loss(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(DQNAgent, "_loss", loss)
    at_validation: list[bool] = []
    _tiny_trainer().train(4, on_validation=lambda *_: at_validation.append(denormals_are_flushed()))
    assert in_steps and all(in_steps) == torch.set_flush_denormal(False)
    assert at_validation and not any(at_validation)  # acting and evaluation compute as before
    assert not denormals_are_flushed()


def test_host_transfer_shares_memory_on_cpu() -> None:
    arr = np.arange(6, dtype=np.float32)
    tensor = HostTransfer("cpu")(arr)
    arr[0] = 42.0
    assert tensor[0].item() == 42.0  # no copy on the CPU


def test_host_transfer_stages_gpu_copies_in_pinned_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def fake_pin(self: torch.Tensor) -> torch.Tensor:
        calls.append("pin")
        return self

    def fake_to(
        self: torch.Tensor, device: torch.device, non_blocking: bool = False
    ) -> torch.Tensor:
        calls.append((str(device), non_blocking))
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    HostTransfer("cuda:0")(np.zeros(3, dtype=np.float32))
    assert calls == ["pin", ("cuda:0", True)]
    calls.clear()
    HostTransfer("cuda:0", pin=False)(np.zeros(3, dtype=np.float32))
    assert calls == [("cuda:0", True)]


# ------------------------------------------------------------------------- batch planning

NETWORKS = [
    AgentConfig(hidden_sizes=(64, 32), dueling=False, noisy=False),
    AgentConfig(hidden_sizes=(64,), dueling=True, noisy=False, norm="layer"),
    AgentConfig(hidden_sizes=(32, 32), dueling=True, noisy=True, distributional="c51", n_atoms=11),
    AgentConfig(hidden_sizes=(16,), dueling=False, noisy=True, distributional="qr", n_atoms=5),
]


@pytest.mark.parametrize("config", NETWORKS)
def test_parameter_count_matches_the_real_network(config: AgentConfig) -> None:
    net = network_from_config(37, 5, config)
    real = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert bs.parameter_count(37, 5, config) == real


def _planner(device_free: int | None, host_free: int | None, **kw: object) -> BatchPlanner:
    return BatchPlanner(device_memory=lambda d: device_free, host_memory=lambda: host_free,
                        **kw)  # type: ignore[arg-type]  # fmt: skip


def test_plan_on_cpu_keeps_the_configured_sizes_when_they_fit() -> None:
    agent = AgentConfig(batch_size=100, buffer_size=50_000)
    plan = _planner(None, 64 * GiB).plan(agent, 40, 3, num_envs=8, device="cpu")
    assert (plan.batch_size, plan.buffer_size) == (100, 50_000)  # never above the config on CPU
    assert plan.apply(agent) == agent


def test_plan_on_a_gpu_takes_the_largest_power_of_two_that_fits() -> None:
    agent = AgentConfig(hidden_sizes=(64, 64), batch_size=128, buffer_size=100_000)
    sample, fixed = bs.bytes_per_sample(40, 3, agent), bs.fixed_learner_bytes(40, 3, agent)
    # Half of the free memory (memory_fraction 0.5) holds the network and 700.5 samples.
    free = int(2 * (fixed + 700.5 * sample))
    plan = _planner(free, 64 * GiB).plan(agent, 40, 3, num_envs=8, device="cuda:0")
    assert plan.batch_size == 512 and plan.buffer_size == 100_000
    roomy = _planner(80 * GiB, 64 * GiB, max_batch_size=2048).plan(agent, 40, 3, 8, "cuda:0")
    assert roomy.batch_size == 2048  # a GPU with room gets the cap, not the config's 128
    assert "auto batch: batch 128 -> 2048" in roomy.describe()


def test_plan_shrinks_the_replay_to_the_ram_at_hand() -> None:
    agent = AgentConfig(batch_size=32, buffer_size=100_000, prioritized_replay=True)
    per_transition = bs.replay_bytes_per_transition(10, agent)
    assert per_transition == 10 * 8 + 14 + 64
    # Two units share the machine: each plans for 0.5 / 2 of the RAM; 1003 transitions fit.
    host = int(4 * 1003.5 * per_transition)
    planner = _planner(80 * GiB, host, concurrent_units=2, max_batch_size=32)
    plan = planner.plan(agent, 10, 3, 4, "cuda:0")
    assert plan.buffer_size == 1000  # a whole number of rows of 4 envs
    assert plan.apply(agent).buffer_size == 1000


def test_plan_refuses_when_not_even_the_minimum_batch_fits() -> None:
    agent = AgentConfig(hidden_sizes=(256, 256))
    with pytest.raises(TrainingError, match="min_batch_size=16"):
        _planner(1 << 20, 64 * GiB).plan(agent, 500, 3, 8, "cuda:0")
    with pytest.raises(TrainingError, match="replay transitions"):
        _planner(80 * GiB, 1 << 16).plan(agent, 500, 3, 8, "cuda:0")


def test_plan_with_unknown_memory_keeps_the_config() -> None:
    agent = AgentConfig(batch_size=64, buffer_size=5_000)
    plan = _planner(None, None).plan(agent, 10, 3, 4, "cpu")
    assert (plan.batch_size, plan.buffer_size) == (64, 5_000)


# --------------------------------------------------------------------------- OOM back-off


def _oom_above(limit: int) -> object:
    def update(batch: int) -> str:
        if batch > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return f"stepped {batch}"

    return update


def test_oom_backoff_halves_the_batch_until_the_step_fits(caplog: pytest.LogCaptureFixture) -> None:
    freed: list[torch.device] = []
    backoff = OOMBackoff(8, device="cpu", label="run_1", free_memory=freed.append)
    sampled: list[int] = []

    def sample(n: int) -> int:
        sampled.append(n)
        return n

    with caplog.at_level(logging.WARNING):
        batch, stats = backoff.step(128, sample, _oom_above(32))  # type: ignore[arg-type]
    assert (batch, stats) == (32, "stepped 32")
    assert sampled == [128, 64, 32] and len(freed) == 2
    assert backoff.limit == 32 and backoff.reductions == 2
    assert "out of memory on cpu at batch size 128; retrying the step with 64" in caplog.text
    # Later steps start at the reduced size; asking for less than the limit is honoured.
    assert backoff.step(128, sample, _oom_above(32))[0] == 32  # type: ignore[arg-type]
    assert backoff.step(16, sample, _oom_above(32))[0] == 16  # type: ignore[arg-type]
    assert backoff.to_dict() == {"batch_size_limit": 32, "oom_reductions": 2}


def test_oom_backoff_fails_clearly_below_the_minimum() -> None:
    backoff = OOMBackoff(16, free_memory=lambda d: None)
    with pytest.raises(TrainingError, match=r"batch size 16 .*min_batch_size=16"):
        backoff.step(64, lambda n: n, _oom_above(8))  # type: ignore[arg-type]


def test_other_errors_are_not_taken_for_out_of_memory() -> None:
    def broken(batch: int) -> None:
        raise RuntimeError("shape mismatch")

    backoff = OOMBackoff(4, free_memory=lambda d: None)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        backoff.step(64, lambda n: n, broken)
    assert backoff.limit is None


def _tiny_trainer(**hooks: object) -> Trainer:
    data = synthetic_market(["BTC/USDT"], "1h", seed=0, days=40)
    train, val = data.split_last_days(8)
    market = MarketConfig(env=EnvConfig(episode_length=48))
    agent = AgentConfig(hidden_sizes=(16,), batch_size=64, learning_starts=64, buffer_size=4000)
    practices = TrainConfig(early_stopping_patience=0, swa=False, augment=False,
                            curriculum=False, min_batch_size=8)  # fmt: skip
    return Trainer(train, val, market, agent, num_envs=4, eval_every=4, seed=3,
                   practices=practices, logger=logging.getLogger("test"), **hooks)  # type: ignore[arg-type]  # fmt: skip


def test_trainer_backs_off_when_a_gradient_step_runs_out_of_memory(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_update = DQNAgent.update_no_sync
    sizes: list[int] = []

    def update_with_little_memory(self: DQNAgent, batch: object) -> torch.Tensor:
        n = int(batch.obs_BD.shape[0])  # type: ignore[attr-defined]
        sizes.append(n)
        if n > 16:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return real_update(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(DQNAgent, "update_no_sync", update_with_little_memory)
    trainer = _tiny_trainer()
    with caplog.at_level(logging.WARNING, logger="test"):
        result = trainer.train(4)
    assert sizes[:3] == [64, 32, 16] and set(sizes[3:]) == {16}
    assert trainer.oom_backoff.limit == 16 and trainer.oom_backoff.reductions == 2
    assert result.gradient_steps == len(sizes) - 2 > 0
    assert "retrying the step with 32" in caplog.text


def test_trainer_applies_the_batch_plan_to_a_fresh_agent() -> None:
    trainer = _tiny_trainer()
    agent = trainer.agent_config
    obs_dim = VecMarketEnv(trainer.train_data, trainer.market, 1).obs_size
    sample = bs.bytes_per_sample(obs_dim, 3, agent)
    fixed = bs.fixed_learner_bytes(obs_dim, 3, agent)
    per_transition = bs.replay_bytes_per_transition(obs_dim, agent)
    # On the CPU the learner and the replay share the RAM: room for the batch and 1003.5 rows.
    host = int(2 * (64 * sample + fixed + 1003.5 * per_transition))
    trainer.batch_planner = planner = _planner(None, host)
    result = trainer.train(4)
    assert planner.last_plan is not None and planner.last_plan.buffer_size == 1000  # rows of 4
    assert (result.agent.config.batch_size, result.agent.config.buffer_size) == (64, 1000)


# ------------------------------------------------------------------------ thermal guard


class FakeSensor:
    """Reads temperatures from a list (the last value repeats)."""

    def __init__(self, temps: list[float | None], name: str = "gpu0 (fake)") -> None:
        self.name = name
        self.temps = list(temps)
        self.reads = 0

    def read(self) -> Reading | None:
        t = self.temps[min(self.reads, len(self.temps) - 1)]
        self.reads += 1
        return None if t is None else Reading(self.name, t, {"sm": 1500})


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _guard(sensor: FakeSensor, fake: FakeTime, **kw: object) -> ThermalGuard:
    return ThermalGuard(85, 75, sensors=[sensor], sleep=fake.sleep, clock=fake.clock,
                        interval_s=5, poll_s=10, log=logging.getLogger("test"), **kw)  # type: ignore[arg-type]  # fmt: skip


def test_guard_pauses_when_hot_and_resumes_below_the_lower_threshold(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # first check, then 90 (pause), 88 and 80 while paused (above 75), 74 resumes.
    sensor, fake = FakeSensor([70, 90, 88, 80, 74]), FakeTime()
    guard = _guard(sensor, fake)
    with caplog.at_level(logging.INFO, logger="test"):
        assert guard.check() == 0.0
        fake.now += 1.0
        assert guard.check() == 0.0 and sensor.reads == 1  # read at most every 5 s
        fake.now += 5.0
        assert guard.check() == 30.0
    assert fake.slept == [10, 10, 10] and not guard.hot
    assert (guard.events, guard.held_s, guard.max_c) == (1, 30.0, 90.0)
    assert "gpu0 (fake) 90°C (sm 1500 MHz) >= 85°C: pausing training until below 75°C" in (
        caplog.text
    )
    assert "resumed after 30s" in caplog.text
    assert "thermal guard: gpu0 (fake) 70°C (sm 1500 MHz); pause at 85°C" in caplog.text
    assert guard.summary()["hot_events"] == 1


def test_guard_slows_to_half_speed_until_cool() -> None:
    sensor, fake = FakeSensor([86, 80, 80, 74]), FakeTime()
    guard = _guard(sensor, fake, action="slow")
    guard.check()  # reads 86: hot, no sleep yet
    assert guard.hot and fake.slept == []
    fake.now += 0.2  # a vector step's work
    assert guard.check() == pytest.approx(0.2)  # sleeps as long as the work took
    fake.now += 5.0
    guard.check()  # slept 5, read 80: still above 75 (hysteresis), stays slow
    assert guard.hot
    fake.now += 5.0
    guard.check()
    fake.now += 5.0
    guard.check()  # reads 74
    assert not guard.hot and guard.events == 1
    fake.now += 1.0
    assert guard.check() == 0.0  # full speed again


def test_guard_without_sensors_says_so_once_and_carries_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("nexlify.system.thermal.discover_sensors", lambda device: ([], ["none"]))
    fake = FakeTime()
    guard = ThermalGuard(85, 75, sleep=fake.sleep, clock=fake.clock, log=logging.getLogger("test"))
    with caplog.at_level(logging.WARNING, logger="test"):
        for _ in range(5):
            assert guard.check() == 0.0
            fake.now += 10
    assert caplog.text.count("thermal guard off: no temperature sensor") == 1


def test_guard_gives_up_after_the_longest_pause() -> None:
    sensor, fake = FakeSensor([95]), FakeTime()
    guard = _guard(sensor, fake, max_pause_s=60)
    with pytest.raises(TrainingError, match=r"still gpu0 \(fake\) 95°C .* after 60s of pause"):
        guard.check()


def test_guard_from_config_is_off_by_default() -> None:
    assert ThermalGuard.from_train_config(TrainConfig(), "cpu") is None
    guard = ThermalGuard.from_train_config(
        TrainConfig(thermal_pause_c=80, thermal_resume_c=70, thermal_action="slow"), "cpu"
    )
    assert guard is not None and (guard.pause_c, guard.resume_c, guard.action) == (80, 70, "slow")


def test_trainer_checks_the_guard_once_per_vector_step() -> None:
    class CountingGuard:
        calls = 0

        def check(self) -> float:
            self.calls += 1
            return 0.0

    guard = CountingGuard()
    result = _tiny_trainer(thermal=guard).train(4)
    assert guard.calls == result.transitions // 4


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_sysfs_sensors_read_the_cpu_chips_and_skip_the_rest(tmp_path: Path) -> None:
    _write(tmp_path / "hwmon/hwmon0/name", "coretemp\n")
    _write(tmp_path / "hwmon/hwmon0/temp1_input", "45000\n")
    _write(tmp_path / "hwmon/hwmon0/temp2_input", "52500\n")
    _write(tmp_path / "hwmon/hwmon0/temp3_input", "0\n")  # an unplugged probe
    _write(tmp_path / "hwmon/hwmon1/name", "nvme\n")
    _write(tmp_path / "hwmon/hwmon1/temp1_input", "99000\n")
    _write(tmp_path / "hwmon/hwmon2/name", "amdgpu\n")
    _write(tmp_path / "hwmon/hwmon2/temp1_input", "61000\n")
    sensors = sysfs_sensors(tmp_path)
    assert [s.name for s in sensors] == ["cpu (coretemp)"]
    assert sensors[0].read() == Reading("cpu (coretemp)", 52.5)
    rocm = sysfs_sensors(tmp_path, amd_gpu=True)
    assert [s.name for s in rocm] == ["cpu (coretemp)", "gpu (amdgpu hwmon2)"]


def test_sysfs_falls_back_to_cpu_thermal_zones(tmp_path: Path) -> None:
    _write(tmp_path / "thermal/thermal_zone0/type", "x86_pkg_temp\n")
    _write(tmp_path / "thermal/thermal_zone0/temp", "61000\n")
    _write(tmp_path / "thermal/thermal_zone1/type", "iwlwifi_1\n")
    _write(tmp_path / "thermal/thermal_zone1/temp", "40000\n")
    sensors = sysfs_sensors(tmp_path)
    assert [(s.name, s.read()) for s in sensors] == [
        ("cpu (x86_pkg_temp)", Reading("cpu (x86_pkg_temp)", 61.0))
    ]


def test_nvml_sensor_reads_temperature_clocks_and_throttling() -> None:
    class NVMLError(Exception):
        pass

    nvml = SimpleNamespace(
        NVMLError=NVMLError, NVML_TEMPERATURE_GPU=0, NVML_CLOCK_SM=1, NVML_CLOCK_MEM=2,
        nvmlDeviceGetName=lambda h: b"NVIDIA H100",
        nvmlDeviceGetTemperature=lambda h, kind: 83,
        nvmlDeviceGetClockInfo=lambda h, kind: {1: 1755, 2: 2619}[kind],
        nvmlDeviceGetCurrentClocksThrottleReasons=lambda h: 0x40,
    )  # fmt: skip
    reading = NvmlGpuSensor(nvml, object(), 0).read()
    assert reading == Reading("gpu0 (NVIDIA H100)", 83.0, {"sm": 1755, "mem": 2619}, True)
    assert reading.describe() == (
        "gpu0 (NVIDIA H100) 83°C (sm 1755 MHz, mem 2619 MHz, thermal throttling)"
    )
    nvml.nvmlDeviceGetTemperature = lambda h, kind: (_ for _ in ()).throw(NVMLError("gone"))
    assert NvmlGpuSensor(nvml, object(), 0).read() is None


def test_discovery_on_cpu_never_asks_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nexlify.system.thermal.sysfs_sensors", lambda amd_gpu=False: [])
    sensors, notes = discover_sensors("cpu")
    assert sensors == [] and notes == [
        "no CPU temperature exposed (/sys/class/hwmon, /sys/class/thermal)"
    ]


# ------------------------------------------------------------------------ config and CLI


def test_system_settings_round_trip_through_yaml(tmp_path: Path) -> None:
    train = TrainConfig(auto_batch=True, auto_batch_max=512, memory_fraction=0.3,
                        min_batch_size=8, thermal_pause_c=85.0, thermal_resume_c=70.0,
                        thermal_action="slow", tensorboard=True)  # fmt: skip
    config = RunConfig(train=train)
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert yaml.safe_load(path.read_text())["train"]["thermal_action"] == "slow"
    assert load_run_config(path) == config


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"thermal_pause_c": 80.0, "thermal_resume_c": 80.0}, "thermal_resume_c"),
        ({"thermal_pause_c": -1.0}, "thermal_pause_c"),
        ({"thermal_action": "melt"}, "thermal_action"),
        ({"memory_fraction": 0.0}, "memory_fraction"),
        ({"min_batch_size": 2048}, "min_batch_size"),
        ({"auto_batch": "yes"}, "auto_batch"),
        ({"tensorboard": 1}, "tensorboard"),
    ],
)
def test_bad_system_settings_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"train.{field}"):
        TrainConfig(**changes)  # type: ignore[arg-type]


def test_system_flags_reach_the_config() -> None:
    args = build_parser().parse_args(
        ["train", "--auto-batch", "--min-batch-size", "8", "--memory-fraction", "0.25",
         "--thermal-pause", "85", "--thermal-resume", "70", "--thermal-action", "slow",
         "--tensorboard"]
    )  # fmt: skip
    t = resolve_run_config(args).train
    assert (t.auto_batch, t.min_batch_size, t.memory_fraction) == (True, 8, 0.25)
    assert (t.thermal_pause_c, t.thermal_resume_c, t.thermal_action) == (85.0, 70.0, "slow")
    assert t.tensorboard
    defaults = resolve_run_config(build_parser().parse_args(["train"])).train
    assert not defaults.auto_batch and defaults.thermal_pause_c == 0 and not defaults.tensorboard


def test_guard_whose_sensors_never_read_turns_off_once(caplog: pytest.LogCaptureFixture) -> None:
    sensor, fake = FakeSensor([None]), FakeTime()
    guard = _guard(sensor, fake)
    with caplog.at_level(logging.WARNING, logger="test"):
        for _ in range(3):
            assert guard.check() == 0.0
            fake.now += 10
    assert sensor.reads == 1
    assert caplog.text.count("the sensors found give no readings") == 1


def test_replay_batches_for_a_gpu_go_through_pinned_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The learner's batches (ReplayBuffer.sample) use HostTransfer: pinned, non-blocking."""
    from nexlify.agent.replay import ReplayBuffer

    buf = ReplayBuffer(64, 2, 3, gamma=0.99, n_step=3, device="cuda:0")  # copies faked: no GPU
    rng = np.random.default_rng(0)
    for _ in range(8):
        buf.add(rng.random((2, 3), dtype=np.float32), np.zeros(2, dtype=np.int64),
                np.zeros(2, dtype=np.float32), rng.random((2, 3), dtype=np.float32),
                np.zeros(2, dtype=bool), np.zeros(2, dtype=bool))  # fmt: skip
    pinned: list[tuple[int, ...]] = []

    def fake_pin(self: torch.Tensor) -> torch.Tensor:
        pinned.append(tuple(self.shape))
        return self

    def fake_to(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        assert kwargs.get("non_blocking") is True
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    batch = buf.sample(4, rng)
    assert (4, 3) in pinned and (4,) in pinned  # observations, actions, rewards, ...
    assert batch.obs_BD.shape == (4, 3)
