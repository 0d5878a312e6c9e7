"""Out-of-sample study: the whole default pipeline in an anchored walk-forward over test years.

For each test year Y the pipeline (multi-start, auto-retrain, selection on its last
``validation_days``) trains only on candles before Y-01-01: the files are cut there before any
quality check, repair or feature sees a later bar. The final model then trades the untouched
year once, beside every baseline of :func:`~nexlify.market.baselines.run_baselines`, on the
study's venue and, for the last year, on the other venues given (a market it never saw).

Results are written atomically after each finished year (``study.json`` and ``study.md``); a
rerun with the same output folder keeps finished years (same config hash and data
fingerprints) and resumes the interrupted year's pipeline. Every distinct configuration the
studies writing into the same parent folder have run is counted in ``study_trials.json``; the
model's deflated Sharpe ratio (Bailey & Lopez de Prado 2014) deflates by that count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from nexlify.data.enrichment import with_external_features
from nexlify.data.market_data import MarketData, build_market_data
from nexlify.data.quality import load_checked_pairs, quality_notes
from nexlify.errors import ConfigError, DataError
from nexlify.evaluation.backtest import backtest, check_compatible, load_model_for_backtest
from nexlify.evaluation.edge import exposure_to_market, window_daily_returns
from nexlify.io import atomic_write_json, atomic_write_text
from nexlify.market.evaluate import EvaluationResult
from nexlify.pipeline.auto_retrain import ProgressSink, run_pipeline
from nexlify.pipeline.data_choice import external_folder, quality_policy, run_features
from nexlify.pipeline.meta import (
    MetaSpec,
    check_task_markets,
    reptile,
    save_meta_init,
    training_bars,
)
from nexlify.pipeline.rolling import (
    RollingOutcome,
    RollingSpec,
    check_schedule,
    fine_tune_config,
    fine_tune_task,
    rolling_run,
)
from nexlify.pipeline.run_files import result_config
from nexlify.pipeline.runs import market_fingerprint, train_unit
from nexlify.pipeline.study_report import study_markdown
from nexlify.pipeline.study_stats import (
    MODEL_ROWS,
    deflate_all,
    policy_row,
    pooled_excess,
    record_trial,
)
from nexlify.run_layout import FINAL_MODEL
from nexlify.train.config import RunConfig, run_config_from_dict

RESULTS_FILE = "study.json"
TABLE_FILE = "study.md"
TRIALS_FILE = "study_trials.json"
MARKET_DAILY = "buy_and_hold_excess_daily"
"""Key of buy-and-hold's daily excess over cash in a venue's year: the market the model rows'
beta and alpha are measured against (results from before it was recorded lack it)."""
DEFAULT_YEARS = (2021, 2022, 2023, 2024)
CONTINUE_STUDY = "the same nexlify study command (finished years and runs are kept)"
MIN_TRAIN_DAYS = 180.0
"""Training days a test year needs before it besides the validation days."""
MAX_LATE_DAYS = 14.0
"""Days an other venue's test may start after the year's first day, when its candles begin too
close to the year for the features' warm-up (KuCoin's shared 1h files start 2023-11-09: 4h
features need 56 days)."""


@dataclass(frozen=True)
class StudySpec:
    """Where the candles are, which years are tested, and where else the last year is tested."""

    data_dir: str
    """Folder of the study's venue (the one every year trains and tests on)."""
    years: tuple[int, ...] = DEFAULT_YEARS
    """Test years, each traded once by a model trained only on the bars before it."""
    venue: str = "primary"
    """Name of ``data_dir``'s venue in the results."""
    other_venues: Mapping[str, str] = field(default_factory=dict)
    """Venue name -> folder; the last year's model is also tested there."""
    min_train_days: float = MIN_TRAIN_DAYS
    """Training days required before a test year, besides the validation days."""
    trials_file: str | None = None
    """Registry of configurations tried (default: study_trials.json beside the output)."""
    rolling: RollingSpec | None = None
    """Also trade each year on the study's venue with rolling retraining (None: frozen only)."""
    meta: MetaSpec | None = None
    """Also trade each year from a Reptile meta-init adapted before the year, then rolling
    retraining on the same schedule (needs ``rolling``)."""

    def __post_init__(self) -> None:
        if self.meta is not None and self.rolling is None:
            raise ConfigError("study --meta-init: needs --retrain-every (the meta-init is "
                              "adapted and retrained on the rolling schedule)")  # fmt: skip


@dataclass
class YearMarkets:
    """The data of one test year: training (cut before the year) and test, per venue."""

    year: int
    train: MarketData
    tests: dict[str, MarketData]
    history: MarketData | None = None
    """The study's venue through the year's end (the rolling fine-tunes' candles)."""


def year_start(year: int) -> pd.Timestamp:
    return pd.Timestamp(year=year, month=1, day=1, tz="UTC")


def study_config(config: RunConfig, spec: StudySpec) -> RunConfig:
    """``config`` reading the study's files, with no test days held out inside the pipeline
    (the test year is outside the data the pipeline gets)."""
    return run_config_from_dict(
        {"data": {"data_dir": spec.data_dir, "source": "files", "test_days": 0.0}}, config
    )


def config_hash(
    config: RunConfig, rolling: RollingSpec | None = None, meta: MetaSpec | None = None
) -> str:
    """SHA-256 of what a trained model depends on, less execution settings and data paths
    (and the rolling-retrain schedule and meta-init, when there are: configurations of their
    own)."""
    plain = result_config(config)
    if rolling is not None:
        plain["rolling"] = rolling.to_dict()
    if meta is not None:
        plain["meta"] = meta.to_dict()
    for key in ("data_dir", "store_dir", "external_dir"):
        plain.get("data", {}).pop(key, None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


def _pair_frame(
    config: RunConfig, folder: str, pair: str, before: pd.Timestamp, where: str
) -> pd.DataFrame:
    try:
        frames, _ = load_checked_pairs(
            folder, [pair], config.data.timeframe, quality_policy(config.data), before
        )
    except DataError as exc:
        raise DataError(f"{where}, pair {pair}: {exc}") from None
    return frames[pair]


def _check_history(config: RunConfig, spec: StudySpec, year: int) -> None:
    """Each pair needs validation_days + min_train_days of candles before the year."""
    need = config.data.validation_days + spec.min_train_days
    start = year_start(year)
    for pair in config.data.pairs:
        where = f"study year {year}, venue {spec.venue}"
        first = _pair_frame(config, spec.data_dir, pair, start, where).index[0]
        days = (start - first).total_seconds() / 86400
        if days < need:
            raise DataError(
                f"{where}, pair {pair}: only {days:.0f} days of candles before {start:%Y-%m-%d} "
                f"(from {first:%Y-%m-%d %H:%M}); training needs at least {need:g} "
                f"(validation {config.data.validation_days:g} + {spec.min_train_days:g} days)"
            )


def _check_test_cover(config: RunConfig, folder: str, venue: str, year: int) -> None:
    """Each pair must have candles through the whole test year."""
    end = year_start(year + 1)
    for pair in config.data.pairs:
        where = f"study year {year}, venue {venue}"
        frame = _pair_frame(config, folder, pair, end, where)
        first, last = frame.index[0], frame.index[-1]
        if first >= year_start(year) or last < end - pd.Timedelta(days=1):
            raise DataError(
                f"{where}, pair {pair}: candles cover {first:%Y-%m-%d} .. {last:%Y-%m-%d}; "
                f"the test year needs candles before {year}-01-01 and through {year}-12-31"
            )


def _build(config: RunConfig, folder: str, before: pd.Timestamp, where: str) -> MarketData:
    pairs = list(config.data.pairs)
    try:
        frames, reports = load_checked_pairs(
            folder, pairs, config.data.timeframe, quality_policy(config.data), before
        )
        market = build_market_data(
            frames, config.data.timeframe, source=f"files:{folder}",
            extra_notes=(*quality_notes(reports), f"study: candles cut before {before:%Y-%m-%d}"),
            features=run_features(config.data),
        )  # fmt: skip
        # external daily series join each bar by the time their value became known: past-only
        return with_external_features(market, config.data.external,
                                      external_folder(config.data),
                                      config.data.external_max_age_days)  # fmt: skip
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None


def _test_window(
    market: MarketData, config: RunConfig, year: int, where: str, late_days: float = 0.0
) -> MarketData:
    """The year's bars, preceded by the observation window so the first order fills at the
    year's first open.

    A venue whose candles begin too close to the year for the features' warm-up may start
    trading up to ``late_days`` later (the other venues a model is tested on: a venue it never
    saw, often with a short history); the notes and ``test.start`` say when it started.
    """
    obs = config.market.env.obs_window
    first = market.index_at(year_start(year))
    start = first - obs
    if start >= 0:
        return market.slice(start, market.n_bars)
    late = (_bar_time(market, obs) - year_start(year)).total_seconds() / 86400 if \
        market.n_bars > obs else float("inf")  # fmt: skip
    if late > late_days:
        allowed = f" (at most {late_days:g} days late)" if late_days > 0 else ""
        raise DataError(
            f"{where}: the features' warm-up leaves {first} bars before {year}-01-01; the "
            f"model's observation window needs {obs}{allowed}: the venue's candles start "
            f"{market.span()[0]:%Y-%m-%d %H:%M} after the warm-up"
        )
    note = (f"study: tested from {_bar_time(market, obs):%Y-%m-%d %H:%M}, {late:.1f} days after "
            f"{year}-01-01: the venue's candles start too close to the year for the features' "
            "warm-up")  # fmt: skip
    return replace(market, notes=(*market.notes, note))


def _bar_time(market: MarketData, bar: int) -> pd.Timestamp:
    return pd.Timestamp(int(market.time[bar]), unit="s", tz="UTC")


def prepare_markets(config: RunConfig, spec: StudySpec) -> list[YearMarkets]:
    """Every year's training and test data, built and checked before any training.

    DataError names the year, the venue and the pair: years outside the data, a pair missing
    on a venue, too little history before a test year.
    """
    if not spec.years:
        raise ConfigError("study: no test years given")
    if len(set(spec.years)) != len(spec.years):
        raise ConfigError(f"study --years: {list(spec.years)} repeats a year")
    last = max(spec.years)
    venues = {spec.venue: spec.data_dir}
    for name, folder in spec.other_venues.items():
        if name in venues:
            raise ConfigError(f"study --venue {name}: the name is used twice")
        venues[name] = folder
    out = []
    for year in sorted(spec.years):
        tested = venues if year == last else {spec.venue: spec.data_dir}
        for venue, folder in tested.items():
            _check_test_cover(config, folder, venue, year)
        _check_history(config, spec, year)
    for year in sorted(spec.years):
        tested = venues if year == last else {spec.venue: spec.data_dir}
        where = f"study year {year}, venue {spec.venue}"
        train = _build(config, spec.data_dir, year_start(year), where + " (training data)")
        full = {
            venue: _through_year(config, folder, venue, year) for venue, folder in tested.items()
        }
        tests = {}
        for venue, market in full.items():
            late_days = 0.0 if venue == spec.venue else MAX_LATE_DAYS
            where = f"study year {year}, venue {venue}"
            tests[venue] = _test_window(market, config, year, where, late_days)
        history = full[spec.venue]
        if spec.rolling is not None:
            check_schedule(history, history.index_at(year_start(year)), spec.rolling, config,
                           f"study year {year}, venue {spec.venue}")  # fmt: skip
        if spec.meta is not None:  # the meta-init's tasks, refused before any training
            check_task_markets({spec.venue: training_bars(train, config)}, config, spec.meta)
        out.append(YearMarkets(year, train, tests, history if spec.rolling else None))
    return out


def _through_year(config: RunConfig, folder: str, venue: str, year: int) -> MarketData:
    return _build(config, folder, year_start(year + 1), f"study year {year}, venue {venue}")


# ---- running ------------------------------------------------------------------------------------


def _test_year(
    model_path: str, markets: YearMarkets, seed: int,
    more: Mapping[str, Mapping[str, EvaluationResult]] | None = None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The final model and every baseline on each venue's test year (and ``more`` policies
    per venue, run over the same bars, e.g. the model with rolling retraining)."""
    agent, spec = load_model_for_backtest(model_path)
    obs = spec.market.env.obs_window
    out = {}
    for venue, data in markets.tests.items():
        check_compatible(spec, data, model_path)
        result = backtest(agent, spec, data, seed=seed)
        extra = (more or {}).get(venue, {})
        runs = {"model": result.model, **extra, **result.baselines}
        days = {**result.daily, **{n: window_daily_returns(data, r) for n, r in extra.items()}}
        cash = days.get("cash")
        excess = {name: d - cash if cash is not None else d for name, d in days.items()}
        rows = {name: policy_row(run, excess[name], seed) for name, run in runs.items()}
        judged = ["model", *extra]
        market = excess.get("buy_and_hold")
        if market is not None:  # how much of each model row is the market's move
            for name in judged:
                rows[name]["market"] = exposure_to_market(excess[name], market, seed=seed)
        kept = judged if market is None else [*judged, "buy_and_hold"]
        end = data.span()[1]
        out[venue] = {
            "test": {"start": _bar_time(data, obs).isoformat(), "end": end.isoformat(),
                     "bars": data.n_bars, "sha256": market_fingerprint(data),
                     "source": data.source, "notes": list(data.notes)},
            **rows,
            **{f"{name}_excess_daily": [round(float(x), 10) for x in excess[name]]
               for name in kept},
        }  # fmt: skip
    return out


def _run_year(
    config: RunConfig, markets: YearMarkets, out_dir: Path, log: logging.Logger,
    progress: ProgressSink | None, spec: StudySpec,
) -> dict[str, Any]:  # fmt: skip
    run_dir = out_dir / "runs" / str(markets.year)
    resume = (run_dir / "config.yaml").is_file()
    run_dir.mkdir(parents=True, exist_ok=True)
    year_config = run_config_from_dict({"pipeline": {"output_dir": str(run_dir)}}, config)
    start, end = markets.train.span()
    log.info("study year %d: training on %s .. %s (%d bars)%s", markets.year,
             f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d %H:%M}", markets.train.n_bars,
             "; resuming the interrupted run" if resume else "")  # fmt: skip
    summary = run_pipeline(year_config, markets.train, log, run_dir, progress, resume=resume,
                           continue_with=CONTINUE_STUDY)  # fmt: skip
    seed = config.pipeline.base_seed
    more, rolling = {}, None
    rolling_spec = spec.rolling
    if rolling_spec is not None and markets.history is not None:
        history = markets.history
        first = history.index_at(year_start(markets.year))
        outcome = rolling_run(summary["final_model_path"], history, first, config, rolling_spec,
                              run_dir / "rolling", seed, log)  # fmt: skip
        more = {spec.venue: {"model_rolling": outcome.result}}
        rolling = _rolling_summary(outcome, rolling_spec)
        if spec.meta is not None:
            meta_outcome, meta_record = _meta_rolling(config, markets, spec, run_dir, seed, log)
            more[spec.venue]["model_meta_rolling"] = meta_outcome.result
            rolling["meta"] = {**meta_record, **_rolling_summary(meta_outcome, rolling_spec)}
    venues = _test_year(summary["final_model_path"], markets, seed, more)
    return {
        "train": {**markets.train.describe(), "sha256": market_fingerprint(markets.train)},
        "validation_window": summary["validation_window"],
        "pipeline": {k: summary.get(k) for k in ("final_model_kind", "final_model_score",
                                                 "final_model_path", "stop_reason")}
        | {"seconds": summary.get("timings", {}).get("total_seconds"),
           "edge": _gate_record(summary.get("edge"))},
        "venues": venues,
        **({"rolling": rolling} if rolling is not None else {}),
    }  # fmt: skip


def _gate_record(edge: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the no-edge gate said on the selection window before the year (its verdict, test,
    p-value and the model's excess there): beside the year's result, it shows whether the gate
    would have warned a user."""
    if edge is None:
        return None
    keys = ("found", "test", "p", "alpha", "trials", "sharpe", "excess_daily_return", "pbo")
    return {k: edge[k] for k in keys if k in edge}


META_FILE = "meta.json"


def _meta_rolling(
    config: RunConfig, markets: YearMarkets, spec: StudySpec, run_dir: Path, seed: int,
    log: logging.Logger,
) -> tuple[RollingOutcome, dict[str, Any]]:  # fmt: skip
    """Meta-train an initialisation on the year's training bars (less its validation days),
    adapt it on the rolling window before the year's first bar (always taken: an
    initialisation is not a trader), then trade the year with rolling retraining from it."""
    assert spec.meta is not None and spec.rolling is not None and markets.history is not None
    history, rolling_spec = markets.history, spec.rolling
    first = history.index_at(year_start(markets.year))
    folder = run_dir / "meta"
    record_path = folder / META_FILE
    record = _previous_meta(record_path)
    if record is None:
        tick = time.perf_counter()
        folder.mkdir(parents=True, exist_ok=True)
        result = reptile({spec.venue: training_bars(markets.train, config)}, config, spec.meta,
                         log=log)  # fmt: skip
        init = save_meta_init(folder / "meta_init.pt", result, config, markets.train, spec.meta)
        _, window, score = rolling_spec.bars(history.bar_seconds)
        task = fine_tune_task("meta_adapt", str(init), history, first, window, score,
                              fine_tune_config(config, rolling_spec), rolling_spec,
                              folder / "adapted", seed + 500, log)  # fmt: skip
        adapted = train_unit(task)
        record = {"meta_init": str(init), "adapted_model": adapted["model_path"],
                  "adapted_score": adapted["val_score"], "meta_seconds": result.seconds,
                  "seconds": time.perf_counter() - tick,
                  "meta_spec": spec.meta.to_dict()}  # fmt: skip
        atomic_write_json(record_path, record)
    outcome = rolling_run(record["adapted_model"], history, first, config, rolling_spec,
                          folder / "rolling", seed + 500, log)  # fmt: skip
    return outcome, record


def _previous_meta(path: Path) -> dict[str, Any] | None:
    """The meta-init and its adaptation of an interrupted study, when both files are there."""
    if not path.is_file():
        return None
    record = dict(json.loads(path.read_text(encoding="utf-8")))
    if not all(Path(record[k]).is_file() for k in ("meta_init", "adapted_model")):
        return None
    return record


def _rolling_summary(outcome: RollingOutcome, spec: RollingSpec) -> dict[str, Any]:
    """What the rolling retrains did: the schedule, each retrain's scores and swaps, the cost."""
    return {
        "spec": spec.to_dict(),
        "retrains": len(outcome.retrains),
        "swaps": sum(bool(r["swapped"]) for r in outcome.retrains),
        "discarded": sum(r["event"] is not None for r in outcome.retrains),
        "seconds": outcome.seconds,
        "fine_tune_seconds": sum(float(r["seconds"]) for r in outcome.retrains),
        "log": [{k: r[k] for k in ("k", "at", "current_score", "candidate_score", "swapped",
                                   "event")} for r in outcome.retrains],
    }  # fmt: skip


def _finished(previous: Mapping[str, Any], markets: YearMarkets) -> list[str] | None:
    """None when the results do not hold this year yet; else the venues of ``markets`` they
    lack (empty: finished), the training and every tested venue's data being the same."""
    entry = previous.get("years", {}).get(str(markets.year))
    if entry is None:
        return None
    kept = set(entry["venues"])
    same = entry["train"]["sha256"] == market_fingerprint(markets.train) and kept <= set(
        markets.tests
    )
    same = same and all(
        entry["venues"][v]["test"]["sha256"] == market_fingerprint(markets.tests[v]) for v in kept
    )
    if not same:
        raise ConfigError(
            f"study year {markets.year}: the results in this output were made on other data "
            "(fingerprints differ, or a venue tested before is not given now); use another "
            "--output for a study on these candles"
        )
    return [v for v in markets.tests if v not in kept]


def _add_venues(
    entry: dict[str, Any], markets: YearMarkets, venues: list[str], out_dir: Path, seed: int
) -> None:
    """Test a finished year's final model on venues given since (a model is never retrained
    for it: the one in ``runs/<year>/`` trades the new venue's year)."""
    model = out_dir / "runs" / str(markets.year) / FINAL_MODEL
    if not model.is_file():
        raise ConfigError(
            f"study year {markets.year}: to test it on {', '.join(venues)} the year's final "
            f"model is needed and {model} is gone; use another --output to rerun the study"
        )
    tests = {v: markets.tests[v] for v in venues}
    entry["venues"].update(_test_year(str(model), replace(markets, tests=tests), seed))


def _previous_results(path: Path, key: str) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable study results: {exc}") from exc
    if previous.get("config_hash") != key:
        raise ConfigError(
            f"{path} holds a study of another configuration ({previous.get('config_hash')}, "
            f"this one is {key}); use another --output"
        )
    return dict(previous)


def run_study(
    config: RunConfig,
    spec: StudySpec,
    out_dir: Path,
    log: logging.Logger,
    progress: ProgressSink | None = None,
) -> dict[str, Any]:
    """Run (or continue) the study; returns the results written to ``study.json``."""
    config = study_config(config, spec)
    markets = prepare_markets(config, spec)  # bad input stops here, before any training
    out_dir.mkdir(parents=True, exist_ok=True)
    key = config_hash(config, spec.rolling, spec.meta)
    results_path = out_dir / RESULTS_FILE
    previous = _previous_results(results_path, key)
    trials_path = Path(spec.trials_file) if spec.trials_file else out_dir.parent / TRIALS_FILE
    atomic_write_text(out_dir / "config.yaml", config.to_yaml())
    results: dict[str, Any] = {
        "study": "anchored walk-forward over whole test years; each year tested once",
        "config_hash": key,
        "config": config.to_dict(),
        "spec": {"venue": spec.venue, "data_dir": spec.data_dir, "years": list(spec.years),
                 "other_venues": dict(spec.other_venues), "min_train_days": spec.min_train_days,
                 "rolling": spec.rolling.to_dict() if spec.rolling else None,
                 "meta": spec.meta.to_dict() if spec.meta else None},
        "trials_file": str(trials_path),
        "years": dict(previous.get("years", {})),
    }  # fmt: skip
    keys = policy_keys(config, spec)
    trials = record_trials(trials_path, keys, str(out_dir), results)
    for year_markets in markets:
        missing = _finished(previous, year_markets)
        if missing == []:
            log.info("study year %d: finished earlier, kept", year_markets.year)
            continue
        if missing is not None:
            log.info("study year %d: finished earlier; its final model now also trades %s",
                     year_markets.year, ", ".join(missing))  # fmt: skip
            entry = results["years"][str(year_markets.year)]
            _add_venues(entry, year_markets, missing, out_dir, config.pipeline.base_seed)
        else:
            entry = _run_year(config, year_markets, out_dir, log, progress, spec)
        results["years"][str(year_markets.year)] = entry
        trials = record_trials(trials_path, keys, str(out_dir), results)
        _save(results, trials, out_dir)
        for venue, cell in entry["venues"].items():
            log.info("study year %d on %s: model %+.2f%% (Sharpe %.2f), cash-excess %+.4f%%/day",
                     year_markets.year, venue, cell["model"]["total_return_pct"],
                     cell["model"]["sharpe"], cell["model"]["excess_daily_pct"])  # fmt: skip
    _save(results, trials, out_dir)
    return results


def policy_keys(config: RunConfig, spec: StudySpec) -> dict[str, str]:
    """The configuration each row of the study tries: the frozen model's is the pipeline's own
    (shared with a study of the same config without rolling retraining, so it counts once),
    rolling retraining and the meta-init are configurations of their own."""
    keys = {"model": config_hash(config)}
    if spec.rolling is not None:
        keys["model_rolling"] = config_hash(config, spec.rolling)
    if spec.meta is not None:
        keys["model_meta_rolling"] = config_hash(config, spec.rolling, spec.meta)
    return keys


def record_trials(
    path: Path, keys: Mapping[str, str], output: str, results: Mapping[str, Any]
) -> dict[str, Any]:
    """Count every row's configuration once and store its daily Sharpe per year/venue (kept
    years included, so a rerun brings the registry up to date)."""
    trials: dict[str, Any] = {}
    for policy, key in keys.items():
        cells = {f"{year}/{venue}": cell[policy]["daily_sharpe"]
                 for year, entry in results["years"].items()
                 for venue, cell in entry["venues"].items() if policy in cell}  # fmt: skip
        trials = record_trial(path, key, output, cells)
    return trials


def _save(results: dict[str, Any], trials: Mapping[str, Any], out_dir: Path) -> None:
    results["years"] = dict(sorted(results["years"].items()))
    deflate_all(results, trials)
    venues = sorted({v for e in results["years"].values() for v in e["venues"]})
    for policy, key in MODEL_ROWS.items():  # the frozen row always, the others where run
        pooled = {v: pooled_excess(results, v, policy) for v in venues}
        if policy == "model" or any(p is not None for p in pooled.values()):
            results[key] = pooled
    atomic_write_json(out_dir / RESULTS_FILE, results)
    atomic_write_text(out_dir / TABLE_FILE, study_markdown(results))
