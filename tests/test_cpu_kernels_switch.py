"""``agent.cpu_kernels``: the compiled CPU fast path (auto) against the plain-torch reference
(off), over whole trainings, and the switch itself (config, CLI, which code runs)."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
import torch

from nexlify.agent import cpu_kernels
from nexlify.agent.config import AgentConfig
from nexlify.agent.dqn import DQNAgent
from nexlify.agent.fast_path import CompiledKernels, ReferenceKernels, learner_kernels
from nexlify.commands.options import add_train_options, overrides_from_args
from nexlify.errors import ConfigError
from nexlify.train.config import run_config_from_dict
from tests.test_learner_pinned import CONFIGS, OBS_DIM, train

KERNEL_NAMES = [
    name
    for name in dir(cpu_kernels)
    if not name.startswith("_") and hasattr(getattr(cpu_kernels, name), "py_func")
]
"""Every compiled kernel of the fast path (numba dispatchers carry ``py_func``)."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _off(config: AgentConfig) -> AgentConfig:
    return dataclasses.replace(config, cpu_kernels="off")


def _parameters(agent: DQNAgent) -> list[tuple[str, torch.Tensor]]:
    return [
        (f"{prefix}.{name}", param.detach())
        for prefix, net in (("online", agent.online), ("target", agent.target))
        for name, param in net.named_parameters()
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_whole_training_gives_the_same_weights_with_the_kernels_on_and_off(name: str) -> None:
    """300 gradient steps (replay sampling, PER priorities, target syncs) both ways.

    Without a distributional head no kernel applies: the weights are bit-identical. With one,
    the kernels sum dot products in another order (reassociated, four samples at a time) and
    use a polynomial exp (about 1 ulp), so each step's gradients differ at float32 rounding
    (~1e-7 relative) and the trained weights (|w| < 0.4) differ by up to 3e-7 here. The
    tolerance, atol 2e-6, is a few times that and far below one Adam step (lr 2.5e-4 per
    weight), so one wrong or missing step, target or loss term fails the test.
    """
    config = CONFIGS[name]
    fast, reference = _parameters(train(config)), _parameters(train(_off(config)))
    start = _parameters(DQNAgent(OBS_DIM, 5, config, seed=0))
    for (key, got), (_, want), (_, initial) in zip(fast, reference, start, strict=True):
        assert float((want - initial).abs().max()) > 1e-3, f"{key} did not train"
        if config.distributional == "none":
            assert torch.equal(got, want), key
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-6, msg=key)


def _refuse(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("a compiled kernel ran")


@pytest.mark.parametrize("name", ["c51", "qr", "full_rainbow"])
def test_off_never_runs_a_compiled_kernel_and_auto_does(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for kernel in KERNEL_NAMES:
        monkeypatch.setattr(cpu_kernels, kernel, _refuse)
    config = CONFIGS[name]
    agent = train(_off(config), steps=5)
    obs = np.random.default_rng(0).standard_normal((16, OBS_DIM)).astype(np.float32)
    agent.greedy(obs)
    agent.act(obs, 0.0, np.random.default_rng(1))
    with pytest.raises(AssertionError, match="a compiled kernel ran"):
        train(config, steps=5)


def test_each_mode_trains_the_same_way_twice() -> None:
    for config in (CONFIGS["full_rainbow"], _off(CONFIGS["full_rainbow"])):
        first, second = _parameters(train(config, 20)), _parameters(train(config, 20))
        for (key, a), (_, b) in zip(first, second, strict=True):
            assert torch.equal(a, b), key


def test_the_switch_picks_the_kernels_once_per_agent() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert type(learner_kernels("auto", cpu)) is CompiledKernels
    assert type(learner_kernels("off", cpu)) is ReferenceKernels
    assert type(learner_kernels("auto", cuda)) is ReferenceKernels  # the kernels are CPU-only
    with pytest.raises(ConfigError, match=r"agent\.cpu_kernels is 'on'"):
        learner_kernels("on", cpu)
    assert type(DQNAgent(4, 3, _off(CONFIGS["c51"])).kernels) is ReferenceKernels
    assert type(DQNAgent(4, 3, CONFIGS["c51"]).kernels) is CompiledKernels


def test_the_cli_flag_sets_the_config_field() -> None:
    parser = argparse.ArgumentParser()
    add_train_options(parser)
    overrides = overrides_from_args(parser.parse_args(["--cpu-kernels", "off"]))
    assert overrides["agent"] == {"cpu_kernels": "off"}
    assert run_config_from_dict(overrides).agent.cpu_kernels == "off"
    assert run_config_from_dict({}).agent.cpu_kernels == "auto"
    assert "agent" not in overrides_from_args(parser.parse_args([]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--cpu-kernels", "on"])
