"""The command line: validation before work, a smoke run, the output folder, the root script."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nexlify.cli import main

ROOT = Path(__file__).resolve().parents[1]

TINY_YAML = {
    "data": {"synthetic_days": 60, "validation_days": 10},
    "market": {"env": {"episode_length": 48}},
    "agent": {"hidden_sizes": [16], "batch_size": 16, "learning_starts": 32, "buffer_size": 2000},
    "train": {"num_envs": 2, "eval_every": 2},
    "pipeline": {"initial_runs": 2, "initial_episodes": 2, "retrain_episodes": 2,
                 "max_iterations": 1, "workers": 1},
}  # fmt: skip


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_YAML))
    return path


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--stop-loss", "-0.1"], "risk.stop_loss: -0.1 is invalid"),
        (["--take-profit", "0.01"], "must be above stop_loss=0.02"),
        (["--pairs", "BTCUSDT"], "data.pairs: 'BTCUSDT' is invalid"),
        (["--initial-episodes", "0"], "pipeline.initial_episodes: 0 is invalid"),
        (["--retrain-episodes", "-3"], "pipeline.retrain_episodes: -3 is invalid"),
        (["--max-trades", "0"], "risk.max_concurrent_trades: 0 is invalid"),
    ],
)
def test_bad_values_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    out = tmp_path / "out"
    code = main(["train", "--automated", "--output-dir", str(out), *flags])
    assert code == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not out.exists()


def test_an_unavailable_device_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    out = tmp_path / "out"
    assert main(["train", "--automated", "--output-dir", str(out), "--device", "cuda:7"]) == 2
    assert "cuda:7" in capsys.readouterr().err
    assert not out.exists()


def test_missing_data_is_refused_before_the_output_folder_is_touched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "complete_training_summary.json").write_text("{}")
    code = main(["train", "--automated", "--output-dir", str(out), "--data-dir", str(tmp_path)])
    assert code == 3
    assert "no candle file for BTC/USDT" in " ".join(capsys.readouterr().err.split())
    assert (out / "complete_training_summary.json").read_text() == "{}"


def test_config_file_errors_name_the_file_and_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent:\n  hiden_sizes: [8]\n")
    assert main(["train", "--automated", "--config", str(bad)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "bad.yaml" in err and "hiden_sizes" in err


def test_smoke_run_writes_outputs_and_keeps_an_earlier_run(
    tmp_path: Path, tiny_config: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("an earlier result")
    args = ["train", "--automated", "--config", str(tiny_config), "--output-dir", str(out),
            "--pairs", "BTC/USDT", "--no-kelly", "--stop-loss", "0.03"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "complete_training_summary.json").read_text())
    assert summary["pipeline_complete"] and summary["data_source"] == "synthetic"
    assert summary["config"]["market"]["risk"]["use_kelly"] is False
    assert summary["config"]["market"]["risk"]["stop_loss"] == 0.03
    assert "SYNTHETIC" in (out / "training.log").read_text()
    (moved,) = list(tmp_path.glob("out.previous-*"))
    assert (moved / "mine.txt").read_text() == "an earlier result"


def test_root_script_is_the_train_command() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "train_complete_with_auto_retrain.py"), "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for flag in ("--pairs", "--initial-episodes", "--retrain-episodes", "--quick-test",
                 "--automated", "--initial-runs", "--improvement-threshold", "--patience",
                 "--max-iterations", "--stop-loss", "--take-profit", "--trailing-stop",
                 "--max-position", "--max-trades", "--no-kelly", "--output-dir", "--data-dir",
                 "--source", "--timeframe", "--device", "--config"):  # fmt: skip
        assert flag in done.stdout, flag


def test_baselines_command_writes_json(tmp_path: Path, tiny_config: Path) -> None:
    out = tmp_path / "b.json"
    assert main(["baselines", "--config", str(tiny_config), "--json", str(out)]) == 0
    table = json.loads(out.read_text())["baselines"]
    assert set(table) == {"cash", "buy_and_hold", "trend", "always_long", "sma_crossover", "random"}
    assert table["cash"]["avg_return"] == 0.0 and table["cash"]["avg_trades"] == 0.0
    assert table["cash"]["excess_daily_return"]["mean_pct"] == 0.0
    hold = table["buy_and_hold"]["excess_daily_return"]
    assert hold["n_days"] > 2 and hold["low_pct"] < hold["mean_pct"] < hold["high_pct"]
    market = table["buy_and_hold"]["market_exposure"]  # the market against itself
    assert market["beta"] == pytest.approx(1.0) and market["days"] == hold["n_days"]
    trend = table["trend"]
    fitted = trend["market_exposure"]["alpha_daily_pct"] + trend["market_exposure"]["beta"] * (
        hold["mean_pct"])  # fmt: skip
    assert fitted == pytest.approx(trend["excess_daily_return"]["mean_pct"], abs=1e-12)


def test_strategy_risk_and_execution_flags_compose_in_any_order() -> None:
    from nexlify.cli import build_parser
    from nexlify.commands.train import resolve_run_config

    for argv in (
        ["train", "--stop-loss", "0.03", "--strategies", "spot", "staking", "--fee", "0.002"],
        ["train", "--strategies", "spot", "staking", "--fee", "0.002", "--stop-loss", "0.03"],
    ):
        config = resolve_run_config(build_parser().parse_args(argv))
        assert config.market.risk.stop_loss == 0.03
        assert config.market.execution.fee_rate == 0.002
        assert config.market.strategies.enabled == ("spot", "staking")


def test_quick_test_keeps_one_pair_that_the_strategies_can_use() -> None:
    """--quick-test trains on one pair: the first of --pairs (explicit --pairs used to bring
    every pair back), or the first the enabled strategies can use; other flags still win."""
    from nexlify.cli import build_parser
    from nexlify.commands.train import resolve_run_config

    def resolved(*argv: str) -> tuple[tuple[str, ...], int]:
        config = resolve_run_config(build_parser(["train"]).parse_args(["train", *argv]))
        return config.data.pairs, config.pipeline.initial_runs

    assert resolved("--quick-test") == (("BTC/USDT",), 2)
    assert resolved("--quick-test", "--pairs", "SOL/USDT", "ETH/USDT") == (("SOL/USDT",), 2)
    assert resolved("--quick-test", "--initial-runs", "3") == (("BTC/USDT",), 3)
    # BTC has no staking defaults: the first pair that has them.
    assert resolved("--quick-test", "--strategies", "spot", "staking")[0] == ("ETH/USDT",)
    staking_sol = ("--strategies", "spot", "staking", "--stake-asset", "SOL")
    assert resolved("--quick-test", *staking_sol)[0] == ("SOL/USDT",)
    lp = ("--strategies", "spot", "liquidity", "--lp-pair", "ETH/USDT")
    assert resolved("--quick-test", *lp)[0] == ("ETH/USDT",)
    # No pair fits: the first, and the strategy's own check names the problem when it runs.
    assert resolved("--quick-test", "--pairs", "BTC/USDT", "--strategies", "spot", "staking")[
        0
    ] == ("BTC/USDT",)
    assert resolved("--pairs", "SOL/USDT", "ETH/USDT") == (("SOL/USDT", "ETH/USDT"), 3)


def test_a_second_ctrl_c_while_the_first_is_handled_still_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from rich.console import Console

    from nexlify import cli

    def interrupted(args: argparse.Namespace, console: Console) -> int:
        raise KeyboardInterrupt

    def ctrl_c_again(self: Console, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # lands while "interrupted" is being printed

    class Parser:
        def __init__(self, commands: object = None) -> None:
            pass

        def parse_args(self, argv: object) -> argparse.Namespace:
            return argparse.Namespace(version=False, command="train", handler=interrupted)

    monkeypatch.setattr(cli, "build_parser", Parser)
    monkeypatch.setattr(Console, "print", ctrl_c_again)
    assert cli.main([]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_a_ctrl_c_landing_while_an_interrupted_run_exits_keeps_exit_130() -> None:
    """The run stopped on Ctrl-C (exit 130); another SIGINT lands while the interpreter shuts
    down (here: inside a slow ``sys.exit``). It must not turn the exit into death by SIGINT."""
    script = """
import os, signal, sys, threading, time
from nexlify import cli

def interrupted_run(argv=None):
    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
    return 130

def slow_exit(code):  # the interpreter's shutdown: threads joined, files flushed
    time.sleep(1.0)
    raise SystemExit(code)

cli.main = interrupted_run
sys.exit = slow_exit
cli.run()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.returncode == 130, done.stderr.decode(errors="replace")[-2000:]


def test_an_interrupted_run_ignores_sigint_from_the_moment_it_is_handled() -> None:
    """The main process can take the terminal's Ctrl-C late, after the run already stopped
    (its workers took theirs): a SIGINT still pending when ``main`` returns must not end the
    clean exit 130 as death by SIGINT. By then SIGINT is already ignored, so it is dropped."""
    script = """
import argparse, os, signal
from nexlify import cli
from nexlify.errors import InterruptedRunError

def interrupted(args, console):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    os.kill(os.getpid(), signal.SIGINT)  # the group's Ctrl-C, not yet taken
    raise InterruptedRunError("interrupted; finished runs are saved")

class Parser:
    def __init__(self, commands=None):
        pass

    def parse_args(self, argv):
        return argparse.Namespace(version=False, command="train", handler=interrupted)

real_main = cli.main

def main_then_take_the_signal(argv=None):
    code = real_main(argv)
    print("ignored" if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else "armed")
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # it lands now
    for _ in range(10000):
        pass
    return code

cli.build_parser = Parser
cli.main = main_then_take_the_signal
cli.run(["train", "--workers", "1"])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stdout.strip() == "ignored"


def test_nexlify_help_lists_every_command_without_importing_torch() -> None:
    """``nexlify --help`` (and ``--version``) build only the list of commands: no command
    module, so neither torch nor pandas, is imported."""
    from nexlify.commands import COMMAND_HELP

    script = (
        "import sys, contextlib, io\n"
        "from nexlify import cli\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        cli.main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    cli.main(['--version'])\n"
        "print(out.getvalue())\n"
        "print('torch' in sys.modules, 'pandas' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "False False"
    for name, help_line in COMMAND_HELP.items():
        assert any(line.split()[:1] == [name] for line in lines), name
        assert help_line.split()[0] in done.stdout
    import nexlify

    assert nexlify.__version__ in lines


def test_each_command_parses_the_same_built_alone_or_with_every_command() -> None:
    """main builds only the command being run; its options, defaults and help are those of the
    full parser."""
    from nexlify.cli import build_parser, command_of
    from nexlify.commands import COMMAND_HELP

    def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        found: argparse.ArgumentParser = action.choices[name]
        return found

    full = build_parser()
    for name in COMMAND_HELP:
        alone = build_parser([name])
        assert subparser(alone, name).format_help() == subparser(full, name).format_help()
        assert command_of(["--version", name, "--help"]) == name
    assert command_of(["--version"]) is None and command_of(["nonsense"]) is None
    argv = ["train", "--source", "synthetic", "--initial-runs", "2"]
    assert vars(build_parser(["train"]).parse_args(argv)) == vars(full.parse_args(argv))
    with pytest.raises(ValueError, match="unknown commands"):
        build_parser(["trian"])


def test_a_mistyped_command_is_refused_with_the_list_of_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["trian"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'trian'" in err and "walk-forward" in err


def test_a_planted_look_ahead_leak_exits_6_through_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nexlify.evaluation import lookahead
    from tests.test_lookahead_audit import leaky_features

    # the audit's features peek at the next bar's close: the command must say so and exit 6
    monkeypatch.setattr(lookahead, "compute_market_features", leaky_features)
    assert main(["audit-lookahead", "--pairs", "BTC/USDT", "--cuts", "2"]) == 6
    err = " ".join(capsys.readouterr().err.split())
    assert "LEAK (feature)" in err and "next_return" in err and "leak(s) found" in err


class _VenueWithHugeMinimums:
    """A ccxt-shaped exchange whose markets need orders of at least 1e9 quote: every entry the
    model could make would be refused, so the live session must refuse to start."""

    id = "standin"

    def __init__(self, config: dict[str, object]) -> None:
        self.config = config
        self.has: dict[str, bool] = {}  # no resting stop orders

    def load_markets(self) -> dict[str, object]:
        limits = {"amount": {"min": 1e-8}, "cost": {"min": 1e9}}
        return {p: {"spot": True, "active": True, "limits": limits}
                for p in ("BTC/USDT", "ETH/USDT")}  # fmt: skip

    def amount_to_precision(self, pair: str, amount: float) -> str:
        return f"{amount:.8f}"

    def price_to_precision(self, pair: str, price: float) -> str:
        return f"{price:.2f}"


def test_a_live_trading_failure_exits_7_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ccxt

    from nexlify.live.secrets import KEY_ENV, SECRET_ENV
    from tests.test_paper_support import candles, save_model, write_candles

    monkeypatch.setenv(KEY_ENV, "nxKEY-test")
    monkeypatch.setenv(SECRET_ENV, "nxSECRET-test")
    monkeypatch.setattr(ccxt, "binance", _VenueWithHugeMinimums)  # no network, no orders
    model = save_model(tmp_path / "model.pt")
    files = write_candles(tmp_path / "data", candles())
    code = main(["paper", "--model", str(model), "--feed", "replay", "--data", *files,
                 "--db", str(tmp_path / "live.db"), "--no-view", "--exchange", "binance",
                 "--live", "--i-understand-this-trades-real-money",
                 "--allow-no-edge"])  # fmt: skip
    assert code == 7
    err = " ".join(capsys.readouterr().err.split())
    assert "below the minimum cost 1000000000.0" in err and "raise the capital" in err


@pytest.mark.parametrize("sandbox", [False, True])
def test_live_trading_refuses_a_model_with_strategy_books(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sandbox: bool,
) -> None:
    """Live sessions place spot orders only: a model that stakes would have its staking
    simulated beside real orders, so ``--live`` refuses it (sandbox too), before any file."""
    import dataclasses

    from nexlify.config.strategies import StakingConfig, StrategiesConfig
    from nexlify.live.secrets import KEY_ENV, SECRET_ENV
    from tests.test_paper_support import MARKET, candles, save_model, write_candles

    monkeypatch.setenv(KEY_ENV, "nxKEY-test")
    monkeypatch.setenv(SECRET_ENV, "nxSECRET-test")
    books = StrategiesConfig(enabled=("spot", "staking"), staking=StakingConfig(asset="ETH"))
    market = dataclasses.replace(MARKET, strategies=books)
    model = save_model(tmp_path / "model.pt", market_config=market)
    files = write_candles(tmp_path / "data", candles())
    args = ["paper", "--model", str(model), "--feed", "replay", "--data", *files,
            "--db", str(tmp_path / "live.db"), "--no-view", "--exchange", "binance", "--live",
            *(["--sandbox"] if sandbox else ["--i-understand-this-trades-real-money"]),
            "--allow-no-edge"]  # fmt: skip
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "trained with staking" in err and "spot orders only" in err
    assert not (tmp_path / "live.db").exists()
    paper = [a for a in args if a not in ("--live", "--sandbox", "--allow-no-edge",
                                          "--i-understand-this-trades-real-money")]  # fmt: skip
    assert main([*paper, "--max-bars", "20"]) == 0  # a paper session simulates the books


@pytest.mark.parametrize("verdict", [None, {"found": False}, {"found": True}])
def test_live_trading_refuses_a_model_without_an_edge(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    verdict: dict[str, bool] | None,
) -> None:
    """Real money needs the no-edge gate's yes (or --allow-no-edge); sandbox money does not."""
    import ccxt

    from nexlify.evaluation.edge import write_model_edge
    from nexlify.live.secrets import KEY_ENV, SECRET_ENV
    from tests.test_paper_support import candles, save_model, write_candles

    monkeypatch.setenv(KEY_ENV, "nxKEY-test")
    monkeypatch.setenv(SECRET_ENV, "nxSECRET-test")
    monkeypatch.setattr(ccxt, "binance", _VenueWithHugeMinimums)  # no network, no orders
    model = save_model(tmp_path / "model.pt")
    if verdict is not None:
        edge = {"test": "deflated_sharpe", "p": 0.01 if verdict["found"] else 0.6, "alpha": 0.05,
                "trials": 12, "sharpe": 1.0, "sharpe_luck_alone": 0.5,
                "excess_daily_return": {"mean_pct": 0.01}, **verdict}  # fmt: skip
        write_model_edge(model, edge)
    files = write_candles(tmp_path / "data", candles())
    args = ["paper", "--model", str(model), "--feed", "replay", "--data", *files,
            "--db", str(tmp_path / "live.db"), "--no-view", "--exchange", "binance",
            "--live", "--i-understand-this-trades-real-money"]  # fmt: skip
    code = main(args)
    err = " ".join(capsys.readouterr().err.split())
    if verdict is not None and verdict["found"]:
        assert code == 7  # past the gate: refused later, by the venue's minimum order
        # rolling retraining would swap in fine-tunes the gate never tested
        db = str(tmp_path / "retraining.db")
        retraining = [*args, "--retrain-every", "30", "--db", db]
        assert main(retraining) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "--retrain-every" in err and "never tested" in err and "--allow-no-edge" in err
        assert not Path(db).exists()  # refused before anything was written
        assert main([*retraining, "--allow-no-edge"]) == 3  # through the gate; then refused:
        err = " ".join(capsys.readouterr().err.split())  # the replay is too short to retrain
        assert "error: --live" not in err and "error: paper --retrain-every 30" in err
        return
    assert code == 2 and "showed no edge over cash" in err and "--allow-no-edge" in err
    assert not (tmp_path / "live.db").exists()  # refused before anything was written
    assert main([*args, "--allow-no-edge"]) == 7  # let through; the venue refuses next
