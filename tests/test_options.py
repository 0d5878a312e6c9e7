"""The option registry takes every default it shows from the configs, never a copy."""

from __future__ import annotations

import argparse
import re

import pytest

from nexlify.agent.config import AgentConfig
from nexlify.cli import build_parser
from nexlify.commands import options
from nexlify.config import ExecutionConfig, RiskConfig
from nexlify.train.config import PipelineConfig, TrainConfig

REGISTRY = [entry for group in ("DATA_OPTIONS", "STRATEGY_OPTIONS", "VALIDATION_OPTIONS",
                                "TRAIN_OPTIONS", "AGENT_OPTIONS", "BACKEND_OPTIONS")
            for entry in getattr(options, group)]  # fmt: skip


def train_help() -> str:
    parser = build_parser(["train"])
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return " ".join(sub.choices["train"].format_help().split())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("flag", "shown"),
    [
        ("--noisy, --no-noisy", f"(default {'on' if AgentConfig().noisy else 'off'})"),
        ("--distributional {none,c51,qr}", f"(default {AgentConfig().distributional})"),
        ("--fee FRAC", f"(default {ExecutionConfig().fee_rate:g})"),
        ("--stop-loss FRAC", f"(default {RiskConfig().stop_loss:g})"),
        ("--initial-episodes N", f"(default {PipelineConfig().initial_episodes})"),
        ("--curriculum-phases FRAC FRAC FRAC",
         f"(default {' '.join(f'{x:g}' for x in TrainConfig().curriculum_phases)})"),
    ],
)  # fmt: skip
def test_help_shows_the_config_default(flag: str, shown: str) -> None:
    text = train_help()
    start = text.rindex(flag)  # the option list, after the usage lines
    assert shown in text[start : start + 200]


@pytest.mark.parametrize("command", ["train", "study", "meta-init", "tune", "walk-forward"])
def test_no_command_help_shows_a_placeholder(command: str) -> None:
    from nexlify.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "{default}" not in sub.choices[command].format_help()


def test_every_placeholder_resolves_to_a_config_field() -> None:
    for flags, section, name, kwargs in REGISTRY:
        shown = options.option_help(section, name, kwargs.get("help", ""))
        assert "{default}" not in shown and shown.count("{") == kwargs.get("help", "").count(
            "{"
        ) - kwargs.get("help", "").count("{default}"), flags


def test_no_help_text_restates_a_default_the_config_has() -> None:
    """A literal like '(default 0.02)' beside a field with a default would drift from it."""
    restated = []
    for flags, section, name, kwargs in REGISTRY:
        value = options.config_default(section, name)
        literal = re.search(r"default (-?[\d.]+(?:e-?\d+)?)\b", kwargs.get("help", ""))
        if literal and value is not None:
            restated.append(flags[0])
    assert restated == []


def test_augmentation_is_one_nested_config_and_old_keys_still_load() -> None:
    from nexlify.data.augment import AugmentConfig
    from nexlify.errors import ConfigError
    from nexlify.train.config import run_config_from_dict

    parser = build_parser(["train"])
    args = parser.parse_args(["train", "--augment-price-jitter", "0.002",
                              "--augment-time-shift", "24"])  # fmt: skip
    overrides = options.overrides_from_args(args)
    config = run_config_from_dict(overrides)
    assert config.train.augmentation == AugmentConfig(price_jitter=0.002, time_shift_bars=24)
    # the flat keys of earlier versions (an older run's config.yaml) land in the same place
    old = run_config_from_dict({"train": {"augment_regime_mix": 0.25, "augment_time_shift": 7}})
    assert old.train.augmentation.regime_mix_prob == 0.25
    assert old.train.augmentation.time_shift_bars == 7
    with pytest.raises(ConfigError, match=r"train.augmentation.regime_mix_prob"):
        run_config_from_dict({"train": {"augmentation": {"regime_mix_prob": 2.0}}})
