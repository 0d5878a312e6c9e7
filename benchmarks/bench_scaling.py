"""Wall time of the multi-start phase: seeds at once vs one by one, pairs, data length.

    .venv/bin/python benchmarks/bench_scaling.py --episodes 48  # ~12 min on 2 cores
    .venv/bin/python benchmarks/bench_scaling.py --repeats 3 --episodes 16

Each measurement runs in a fresh subprocess: it starts the workers' fork server first thing (as
``nexlify train`` does), imports Nexlify and builds the synthetic market, then times
``run_initial_phase`` (what is left of the worker start-up included) for N initial runs of a
fixed budget (early stopping off, so every run does the same work). Configurations:

- seeds 1, 2, 3: sequential (``inprocess``), one process per core (``workers`` 2: 3 seeds on
  2 cores take two rounds), the default (``workers`` 0: 3 seeds at once taking turns on the 2
  cores, ``nexlify.system.core_share``) and 3 at once left to the OS scheduler (``workers`` 3,
  ``share_cores`` off), one torch thread per run;
- pairs 1, 2, 3 and data length 180, 365, 730 days: the multi-start phase with 3 seeds on the
  process backend with the default workers;
- reference: 3 independent processes (one seed each, no backend) started together, which
  shows what running three CPU-bound trainings on two cores costs on this machine by itself.

Other work may share the machine: measurements are interleaved (each repeat runs every
configuration in a shuffled order) and repeated; the JSON keeps every sample with the load
average around it, and reports medians. Output: ``benchmarks/results/scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one multi-start phase described by ``spec`` (runs inside the child process)."""
    import tempfile

    from nexlify.data.sources import synthetic_market
    from nexlify.pipeline.auto_retrain import pipeline_workers, run_initial_phase
    from nexlify.pipeline.data_choice import split_market
    from nexlify.pipeline.runs import UnitTask
    from nexlify.train.config import run_config_from_dict

    config = run_config_from_dict({
        "data": {"pairs": list(PAIRS[: spec["pairs"]]), "synthetic_days": spec["days"]},
        "train": {"device": "cpu", "torch_threads": 1, "early_stopping_patience": 0,
                  "eval_every": spec["episodes"]},
        "pipeline": {"initial_runs": spec["seeds"], "initial_episodes": spec["episodes"],
                     "backend": spec["backend"], "workers": spec["workers"],
                     "share_cores": spec.get("share_cores", True)},
    })  # fmt: skip
    market = synthetic_market(config.data.pairs, "1h", seed=0, days=config.data.synthetic_days)
    train, val, _ = split_market(market, config.data)
    pcfg = config.pipeline
    workers = pipeline_workers(pcfg)
    with tempfile.TemporaryDirectory() as tmp:
        tasks = [
            UnitTask(label=f"run_{k + 1}", seed=pcfg.seed_of_run(k), episodes=pcfg.initial_episodes,
                     config=config, train_data=train, val_data=val,
                     model_dir=str(Path(tmp) / f"run_{k + 1}"), threads=1)
            for k in range(pcfg.initial_runs)
        ]  # fmt: skip
        load_before = os.getloadavg()[0]
        cpu_before = _cpu_seconds()
        start = time.perf_counter()
        outcomes = run_initial_phase(tasks, workers, lambda o: None)
        wall = time.perf_counter() - start
        _stop_fork_server()
        cpu = _cpu_seconds() - cpu_before  # this process, its workers and their fork server
    return {
        **spec,
        "units_at_once": workers,
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "unit_seconds": [round(o["seconds"], 2) for o in outcomes],
        "val_scores": [o["val_score"] for o in outcomes],
        "train_bars": train.n_bars,
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def _stop_fork_server() -> None:
    """Stop (and reap) the fork server the workers came from, after timing: its workers are its
    children, so their CPU time reaches this process's RUSAGE_CHILDREN only once it is reaped
    (multiprocessing has no public call for this; the method is the one its own tests use)."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    if server is not None and hasattr(server, "_stop"):
        server._stop()


def _cpu_seconds() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def configurations(episodes: int) -> list[dict[str, Any]]:
    base = {"episodes": episodes, "pairs": 1, "days": 365}
    seeds = [{**base, "group": "seeds", "seeds": 1, "backend": "inprocess", "workers": 1}]
    for n in (2, 3):
        seeds.append({**base, "group": "seeds", "seeds": n, "backend": "inprocess", "workers": 1})
        seeds.append({**base, "group": "seeds", "seeds": n, "backend": "process", "workers": 2})
    # The default (workers 0): 3 at once taking turns on the 2 cores; and 3 at once left to
    # the OS scheduler (share_cores off), what the default was measured against.
    seeds.append({**base, "group": "seeds", "seeds": 3, "backend": "process", "workers": 0})
    seeds.append({**base, "group": "seeds", "seeds": 3, "backend": "process", "workers": 3,
                  "share_cores": False})  # fmt: skip
    default = {"seeds": 3, "backend": "process", "workers": 0}
    pairs = [{**base, **default, "group": "pairs", "pairs": p} for p in (1, 2, 3)]
    days = [{**base, **default, "group": "days", "days": d} for d in (180, 730)]  # 365: above
    # The machine's own limit: 3 independent processes, one seed each, started together (no
    # backend involved). Their slowest wall time is what 3 seeds at once cannot beat here.
    reference = [{**base, "group": "independent", "seeds": 3, "backend": "separate-processes",
                  "workers": 3}]  # fmt: skip
    return seeds + pairs + days + reference


def key(spec: dict[str, Any]) -> str:
    share = "" if spec.get("share_cores", True) else "-noshare"
    return (f"{spec['seeds']}seeds-{spec['backend']}-w{spec['workers']}{share}-{spec['pairs']}"
            f"pairs-{spec['days']}d")  # fmt: skip


def _one_command(spec: dict[str, Any]) -> list[str]:
    """This script measuring ``spec`` in a fresh process (its last stdout line: the JSON)."""
    return [sys.executable, __file__, "--one", json.dumps(spec)]


def _result_of(stdout: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def run_independent(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec['seeds']`` fresh processes, one in-process seed each, all started at once."""
    cmd = _one_command({**spec, "seeds": 1, "backend": "inprocess", "workers": 1})
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    children = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
                for _ in range(spec["seeds"])]  # fmt: skip
    results = []
    for child in children:
        out, _ = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"{key(spec)}: a child failed ({child.returncode})")
        results.append(_result_of(out))
    return {
        **spec,
        "units_at_once": spec["seeds"],
        "wall_seconds": max(r["wall_seconds"] for r in results),  # the phase ends with the last
        "process_seconds": round(time.perf_counter() - start, 2),  # with each one's start-up
        "cpu_seconds": round(sum(r["cpu_seconds"] for r in results), 2),
        "unit_seconds": [r["unit_seconds"][0] for r in results],
        "val_scores": [r["val_scores"][0] for r in results],
        "train_bars": results[0]["train_bars"],
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def run_child(spec: dict[str, Any], attempts: int = 3) -> dict[str, Any]:
    """One measurement in a fresh process (retried: a shared checkout may be mid-edit)."""
    cmd = _one_command(spec)
    for attempt in range(attempts):
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode == 0:
            return _result_of(done.stdout)
        print(f"  failed (attempt {attempt + 1}): {done.stderr.strip().splitlines()[-1:]}")
        time.sleep(30)
    raise RuntimeError(f"{key(spec)} failed {attempts} times")


COMMAND = ["train", "--automated", "--source", "synthetic", "--pairs", "BTC/USDT",
           "--max-iterations", "0", "--early-stopping-patience", "0"]  # fmt: skip


def run_command(runs: int, episodes: int, out_dir: Path) -> dict[str, Any]:
    """``nexlify train`` with ``runs`` initial runs and no retraining, as a user runs it: wall
    time of the whole command (imports, checks, data, the phase, ensemble, report) and the
    phase-1 time from its summary."""
    import shutil

    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "nexlify.cli", *COMMAND, "--initial-runs", str(runs),
           "--initial-episodes", str(episodes), "--eval-every", str(episodes),
           "--output-dir", str(out_dir)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"nexlify train failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads((out_dir / "complete_training_summary.json").read_text())
    return {"runs": runs, "command_seconds": round(wall, 2),
            "phase1_seconds": round(summary["timings"]["phase1_seconds"], 2),
            "unit_seconds": [round(r["seconds"], 2) for r in summary["initial_runs"]]}  # fmt: skip


def bench_command(pairs: int, episodes: int) -> dict[str, Any]:
    """``pairs`` alternating (1 run, 3 runs) pairs of the whole command; paired ratios."""
    import tempfile

    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(pairs):
            for runs in (1, 3) if k % 2 == 0 else (3, 1):
                sample = run_command(runs, episodes, Path(tmp) / f"runs_{runs}")
                samples.append({**sample, "pair": k})
                print(f"[command {k}] {runs} run(s): command {sample['command_seconds']:.1f}s, "
                      f"phase 1 {sample['phase1_seconds']:.1f}s", flush=True)  # fmt: skip
    by = {(s["pair"], s["runs"]): s for s in samples}
    ratio = {what: [by[(k, 3)][what] / by[(k, 1)][what] for k in range(pairs)]
             for what in ("command_seconds", "phase1_seconds")}  # fmt: skip
    return {
        "what": "nexlify train, synthetic BTC/USDT, no retraining: 3 initial runs (the default "
        "workers) against 1, in alternating pairs; the command starts the worker fork server "
        "first thing, so its imports run beside the command's own",
        "episodes_per_run": episodes,
        "three_vs_one_command_median": round(statistics.median(ratio["command_seconds"]), 3),
        "three_vs_one_phase1_median": round(statistics.median(ratio["phase1_seconds"]), 3),
        "ratios": {k: [round(x, 3) for x in v] for k, v in ratio.items()},
        "samples": samples,
    }


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    by_key: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        by_key.setdefault(key(s), []).append(s)
    median = {k: statistics.median(s["wall_seconds"] for s in v) for k, v in by_key.items()}
    one = median[key(samples_spec(samples, seeds=1, backend="inprocess"))]
    table = []
    for k, v in by_key.items():
        spec = v[0]
        table.append({
            "config": k, "group": spec["group"], "seeds": spec["seeds"], "pairs": spec["pairs"],
            "days": spec["days"], "backend": spec["backend"], "workers": spec["workers"],
            "share_cores": spec.get("share_cores", True),
            "units_at_once": spec["units_at_once"], "median_wall_seconds": median[k],
            "wall_seconds": [s["wall_seconds"] for s in v],
            "median_cpu_seconds": statistics.median(s["cpu_seconds"] for s in v),
            "vs_one_seed": round(median[k] / one, 3),
            "load_before": [s["load_before"] for s in v],
        })  # fmt: skip
    return {"one_seed_seconds": one, "table": table}


def samples_spec(samples: list[dict[str, Any]], **want: Any) -> dict[str, Any]:
    for s in samples:
        if s["group"] == "seeds" and all(s[k] == v for k, v in want.items()):
            return s
    raise KeyError(want)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="samples per configuration (2)")
    parser.add_argument("--episodes", type=int, default=16, help="episodes per run (16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled order")
    parser.add_argument(
        "--command-pairs",
        type=int,
        default=3,
        help="(1 run, 3 runs) pairs of the whole `nexlify train` command (3)",
    )
    parser.add_argument(
        "--command-only",
        action="store_true",
        help="only the command pairs, added to an existing JSON",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling.json"))
    args = parser.parse_args()
    if args.one:
        spec = json.loads(args.one)
        if spec["backend"] == "process":  # first thing, as `nexlify train` does (cli.run)
            from nexlify.pipeline.backends import prestart_workers

            prestart_workers()
        print(json.dumps(measure(spec)), flush=True)
        return

    out = Path(args.out)
    if args.command_only:
        result = json.loads(out.read_text())
        result["command"] = bench_command(args.command_pairs, args.episodes)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in result["command"].items() if k != "samples"}))
        return
    rng = random.Random(args.seed)
    specs = configurations(args.episodes)
    samples = []
    started = time.perf_counter()
    for repeat in range(args.repeats):
        order = specs[:]
        rng.shuffle(order)
        for spec in order:
            sample = run_independent(spec) if spec["group"] == "independent" else run_child(spec)
            sample["repeat"] = repeat
            samples.append(sample)
            print(f"[{repeat}] {key(sample):42s} {sample['wall_seconds']:7.1f}s "
                  f"cpu {sample['cpu_seconds']:6.1f}s (load {sample['load_before']:.1f})",
                  flush=True)  # fmt: skip
    result = {
        "what": "wall time of the multi-start phase (run_initial_phase), fresh process each",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "budget": {
            "episodes_per_run": args.episodes,
            "episode_length": 720,
            "num_envs": 8,
            "early_stopping": "off",
            "torch_threads_per_run": 1,
            "market": "synthetic 1h",
        },
        "repeats": args.repeats,
        "note": "load_before is the 1-minute load average when each sample started (2.0 = both "
        "cores busy before we began; samples follow each other, so the previous sample's own "
        "load shows too). 'separate-processes' is the reference: independent processes, one "
        "seed each, started together, timed inside each from its training start (imports "
        "excluded); cpu_seconds of the process backend include its fork server (imports).",
        **summarise(samples),
        "samples": samples,
        "command": bench_command(args.command_pairs, args.episodes) if args.command_pairs else None,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for row in result["table"]:
        print(f"{row['config']:42s} {row['median_wall_seconds']:7.1f}s  x{row['vs_one_seed']:.2f} "
              f"(cpu {row['median_cpu_seconds']:.0f}s)")  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
