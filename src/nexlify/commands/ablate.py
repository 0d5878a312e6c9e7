"""``nexlify ablate``: the full configuration against each component removed, on synthetic and
real candles, with IQM and bootstrap intervals (see :mod:`nexlify.pipeline.ablation`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rich.console import Console

from nexlify.commands.options import add_backend_options
from nexlify.commands.train import prepare_output_dir, resolve_run_config, setup_logging
from nexlify.data.market_data import MarketData
from nexlify.data.sources import market_from_files, synthetic_market
from nexlify.errors import ConfigError
from nexlify.pipeline.ablation import AblationConfig, parse_components, run_ablation
from nexlify.pipeline.backends import require_backend
from nexlify.pipeline.data_choice import run_features


def add_ablate_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``nexlify ablate`` (market and risk options come from the shared registry)."""
    parser.add_argument("--seeds", type=int, default=5, help="seeds per variant (default 5)")
    parser.add_argument("--episodes", type=int, default=24,
                        help="episodes per run (reduced budget, default 24)")  # fmt: skip
    parser.add_argument("--eval-every", type=int, default=12, help="validate every N episodes")
    parser.add_argument("--num-envs", type=int, default=None, help="envs per run (default 8)")
    parser.add_argument("--markets", nargs="+", choices=["synthetic", "real"],
                        default=["synthetic", "real"],
                        help="synthetic market and/or the candles of --data-dir")  # fmt: skip
    parser.add_argument("--components", nargs="+", metavar="NAME",
                        help="components to remove in turn (default all)")  # fmt: skip
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="runs at once (default 2; 0 = automatic; 1 = in-process)",
    )
    add_backend_options(parser)
    parser.add_argument("--output-dir", default="ablation_output", help="results folder")
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def start_ablate(args: argparse.Namespace, console: Console) -> int:
    """Handler of ``nexlify ablate``."""
    config = resolve_run_config(args)
    require_backend(config.pipeline.backend)
    if args.num_envs is not None:
        from nexlify.train.config import run_config_from_dict

        config = run_config_from_dict({"train": {"num_envs": args.num_envs}}, config)
    study = AblationConfig(seeds=args.seeds, episodes=args.episodes, eval_every=args.eval_every,
                           components=parse_components(args.components),
                           workers=args.workers)  # fmt: skip
    log = setup_logging(console, args.verbose)
    markets: dict[str, MarketData] = {}
    d = config.data
    if "synthetic" in args.markets:
        markets["synthetic"] = synthetic_market(d.pairs, d.timeframe, seed=d.synthetic_seed,
                                                days=d.synthetic_days,
                                                features=run_features(d))  # fmt: skip
    if "real" in args.markets:
        if d.data_dir is None and set(args.markets) == {"real"}:
            raise ConfigError("--markets real: give the candles with --data-dir DIR")
        if d.data_dir is None:
            log.warning("no --data-dir: the ablation runs on the synthetic market only")
        else:
            markets["real"] = market_from_files(d.data_dir, d.pairs, d.timeframe, run_features(d))
    out_dir = Path(args.output_dir)
    prepare_output_dir(out_dir)
    handler = logging.FileHandler(out_dir / "ablation.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    try:
        result = run_ablation(config, markets, study, out_dir, log)
    finally:
        log.removeHandler(handler)
        handler.close()
    console.print((out_dir / "ablation.md").read_text(), highlight=False)
    console.print(f"[bold green]done[/] in {result['wall_seconds']:.0f}s: {out_dir}")
    return 0
