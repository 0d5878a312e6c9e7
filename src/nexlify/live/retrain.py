"""Rolling retraining inside a paper (or live) session, in a background process.

Every ``--retrain-every`` days of bars after the first decision (the retrain bars ``p_k``), the
trading model is fine-tuned with the study's procedure (:func:`nexlify.pipeline.rolling.retrain`)
on the session's own closed candles: the ``window`` bars before the last ``score`` bars up to
``p_k``; both models are scored on those last ``score`` bars, and the candidate replaces the
trading model only when it wins by the margin. A diverged or NaN candidate is discarded with an
event; the trading model keeps trading.

The fine-tune runs in a spawned process (its inputs go through a file, so starting it costs the
loop a few milliseconds). Retrains run one at a time, in order.

- *poll / live* (``wait=False``): the loop never waits; before each decision it checks whether
  the result has arrived, and a winning candidate decides from that bar on.
- *replay* (``wait=True``, a simulation): the result takes effect at the fixed bar ``p_k + 1``
  and the loop waits for it there, so the session does not depend on the machine's speed.

The result is recorded (``retrains`` table) in the transaction of the bar it first decides: the
candidate's model file is written first, then that one transaction records the result, the swap
and the bar. A session killed during a retrain has no record of it and redoes it on restart
(same data, same seed); a recorded retrain is never redone, and a restarted session trades with
the model its last record holds.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import pickle
import sqlite3
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from nexlify.config import MarketConfig
from nexlify.data.market_data import MarketData
from nexlify.errors import ConfigError, DataError
from nexlify.live.store import SessionStore
from nexlify.pipeline.rolling import RollingSpec, check_fine_tune_sizes, fine_tune_config
from nexlify.train.config import RunConfig, run_config_from_dict

RETRAIN_LOGGER = "nexlify.paper.retrain"


def retrain_folder(db: Path) -> Path:
    """Where a session's fine-tunes write their models: ``<db>.retrains/`` beside the database."""
    return db.with_name(db.name + ".retrains")


FINE_TUNE_MACHINE = {"device": "cpu", "torch_threads": 1, "tensorboard": False, "auto_batch": False}
"""Training settings a session's fine-tunes take from the session, not from the model: they run
beside the trading loop on one CPU thread and write no TensorBoard logs."""


def session_run_config(model_path: str, market: MarketConfig, spec: RollingSpec) -> RunConfig:
    """The fine-tune settings of a session: the model's market, network (an ensemble's first
    member) and training schedule (augmentation, curriculum, Dyna, ... as the pipeline trained
    it), one CPU thread, one validation at the end (:func:`fine_tune_config`). A model saved
    without its training schedule (before it was recorded) is fine-tuned with the defaults, and
    the log says so."""
    from nexlify.agent.dqn import load_agent

    agent, info = load_agent(model_path)
    train = info["extra"].get("train_config")
    if train is None:
        logging.getLogger(RETRAIN_LOGGER).warning(
            "%s records no training schedule (saved by an earlier version): its fine-tunes use "
            "the default training settings",
            model_path,
        )
    elif not isinstance(train, dict):
        raise ConfigError(f"{model_path}: train_config must be a mapping, found {train!r}")
    plain = {
        "market": dataclasses.asdict(market),
        "agent": dataclasses.asdict(agent.config),
        "train": {**(train or {}), **FINE_TUNE_MACHINE},
    }
    try:
        config = run_config_from_dict(plain)
    except ConfigError as exc:
        raise ConfigError(f"{model_path}: its saved training schedule: {exc}") from None
    return fine_tune_config(config, spec)


def check_session_schedule(
    spec: RollingSpec,
    config: RunConfig,
    data: MarketData,
    decision: int,
    features_warmup: int,
    history_bars: int | None,
) -> None:
    """Refuse, before the session is written, a schedule its candles cannot feed: the first
    retrain bar must have ``window + score`` bars of features up to it. ``data`` is what the
    session holds at its first decision (bar ``decision``); ``history_bars`` the candles a
    polling session fetched (None: a replay, whose data must also reach the first retrain)."""
    where = "paper --retrain-every"
    check_fine_tune_sizes(spec, config, data.bar_seconds, where)
    every, window, score = spec.bars(data.bar_seconds)
    first = decision + every
    have, need = first + 1, window + score
    if history_bars is None and first >= data.n_bars - 1:
        raise DataError(
            f"{where} {spec.every_days:g}: the replay trades {data.n_bars - 1 - decision} bars "
            f"after its first decision, fewer than the {every} before the first retrain; no "
            "retrain would happen (give more candles or a shorter --retrain-every)"
        )
    if have >= need:
        return
    what = (
        f"the first retrain needs {need} bars (--retrain-window {spec.window_days:g} days + "
        f"--retrain-score-days {spec.score_days:g} days) of candles after the model's feature "
        f"warm-up ({features_warmup} bars), and the session will hold {have} there"
    )
    if history_bars is not None:
        raise DataError(
            f"{where}: {what}; raise --history-bars from {history_bars} to at least "
            f"{history_bars + need - have}"
        )
    raise DataError(
        f"{where}: {what}; give candles from {need - have} bars earlier, a --start "
        f"{need - have} bars later, or a shorter --retrain-window"
    )


@dataclass
class RetrainJob:
    """What the background process needs for retrain ``k`` (written to a file for it)."""

    k: int
    trading_model: str
    market: MarketData
    """The ``window + score`` bars up to the retrain bar."""
    window: int
    score: int
    config: RunConfig
    spec: RollingSpec
    out_dir: str


def run_job(job_path: str, conn: Connection) -> None:
    """Entry point of the background process: one retrain, its record sent back."""
    from nexlify.pipeline.rolling import retrain
    from nexlify.pipeline.runs import set_threads
    from nexlify.system.lifetime import die_with_parent

    die_with_parent()  # a killed session must not leave a fine-tune writing its folder
    with open(job_path, "rb") as handle:
        job: RetrainJob = pickle.load(handle)  # our own file, written by the session
    Path(job_path).unlink(missing_ok=True)  # a restart writes it again
    set_threads(job.config.train.torch_threads)
    try:
        t = job.market.n_bars
        record = retrain(job.k, t, job.trading_model, job.market, job.window, job.score,
                         job.config, job.spec, Path(job.out_dir), job.k,
                         logging.getLogger(RETRAIN_LOGGER))  # fmt: skip
        conn.send(("done", record))
    except Exception as exc:  # anything else the fine-tune raises: reported, not swapped
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


@dataclass
class Running:
    """A retrain launched and not yet recorded."""

    k: int
    bar: int
    """Index (in the session's data) of the retrain bar: the last closed bar it sees."""
    times: dict[str, int]
    """bar_time and the first and last bar of its train and score spans."""
    previous_model: str
    started: float
    process: Any = None
    conn: Connection | None = None
    outcome: tuple[str, Any] | None = None


class SessionRetrainer:
    """The rolling retraining of one session; see the module docstring."""

    def __init__(
        self,
        store: SessionStore,
        spec: RollingSpec,
        config: RunConfig,
        initial_model: str,
        *,
        wait: bool,
        logger: logging.Logger | None = None,
        target: Any = run_job,
    ) -> None:
        self.store = store
        self.spec = spec
        self.config = config
        self.initial_model = initial_model
        self.wait = wait
        self.log = logger or logging.getLogger("nexlify.paper")
        self.target = target
        """The background process's function (tests replace it)."""
        self.folder = retrain_folder(store.path)
        self.running: Running | None = None
        self.recorded = 0
        self.trading_model = initial_model
        self._context = multiprocessing.get_context("spawn")
        self._ended: list[Any] = []
        """Retrain processes that reported and may still be exiting."""
        self.reload()

    def reload(self) -> None:
        """The recorded retrains from the database (start, or after a rolled-back bar)."""
        done = self.store.retrains()
        self.recorded = len(done)
        self.trading_model = done[-1]["trading_model"] if done else self.initial_model
        if self.running is not None and self.running.k <= self.recorded:
            self._stop(self.running)
            self.running = None

    def _point(self, decision: int, k: int, bar_seconds: int) -> int:
        every, _, _ = self.spec.bars(bar_seconds)
        return decision + k * every

    # ---- launching ----------------------------------------------------------------------
    def launch_due(self, data: MarketData, decision: int, last: int | None = None) -> None:
        """Start the next retrain when its bar (at or before ``last``, default the data's last
        bar) has closed and none is running."""
        if self.running is not None:
            return
        self._reap()
        k = self.recorded + 1
        bar = self._point(decision, k, data.bar_seconds)
        if bar > (data.n_bars - 1 if last is None else last):
            return
        _, window, score = self.spec.bars(data.bar_seconds)
        lo = bar + 1 - score - window
        if lo < 0:  # refused at start; a database edited by hand could still get here
            raise DataError(f"{self.store.path}: retrain {k} needs {-lo} bars before the data")
        times = {
            "bar_time": int(data.time[bar]),
            "train_from": int(data.time[lo]),
            "train_to": int(data.time[bar - score]),
            "score_from": int(data.time[bar + 1 - score]),
            "score_to": int(data.time[bar]),
        }
        out_dir = self.folder / f"retrain_{k}"
        job = RetrainJob(k, self.trading_model, data.slice(lo, bar + 1), window, score,
                         self.config, self.spec, str(out_dir))  # fmt: skip
        out_dir.mkdir(parents=True, exist_ok=True)
        job_path = out_dir / "job.pkl"
        with open(job_path, "wb") as handle:  # read only by the process started next
            pickle.dump(job, handle)
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=self.target, args=(str(job_path), send), name=f"nexlify-retrain-{k}"
        )
        process.start()
        send.close()  # the child holds its end; EOF here means it ended without a word
        self.running = Running(k, bar, times, self.trading_model, time.perf_counter(),
                               process, receive)  # fmt: skip
        self.log.info("retrain %d started on the bars up to %s", k, _iso(times["bar_time"]))

    # ---- results ------------------------------------------------------------------------
    def _collect(self, block: bool) -> bool:
        """Read the running retrain's outcome if it is there (waiting for it when ``block``)."""
        run = self.running
        if run is None:
            return False
        if run.outcome is not None:
            return True
        assert run.conn is not None
        if not block and not run.conn.poll():
            return False
        try:
            run.outcome = run.conn.recv()
        except EOFError:
            run.process.join(timeout=5.0)  # it closed its end: it is exiting
            code = run.process.exitcode
            run.outcome = ("failed", f"the retrain process ended without a result (exit {code})")
        run.conn.close()
        # not joined here: its interpreter takes up to a second to exit, and the loop must not
        # wait for that; it is reaped at the next launch or at the end
        self._ended.append(run.process)
        return True

    def _reap(self, timeout: float = 0.0) -> None:
        for process in self._ended:
            process.join(timeout=timeout)
        self._ended = [p for p in self._ended if p.exitcode is None]

    def settle(self) -> None:
        """Replay: wait (outside any transaction) for the retrain running."""
        if self.wait and self.running is not None:
            self._collect(block=True)

    def before_decision(
        self, data: MarketData, decision: int, bar: int, c: sqlite3.Connection
    ) -> str | None:
        """Record the retrain whose result decides from ``bar`` on (inside the bar's
        transaction ``c``); the new trading model's file when it was swapped in, else None."""
        k = self.recorded + 1
        if self._point(decision, k, data.bar_seconds) >= bar:
            return None
        if self.running is None and self.wait:
            self.launch_due(data, decision, last=bar - 1)
        if not self._collect(block=self.wait):
            return None
        run = self.running
        assert run is not None and run.outcome is not None
        record = self._record(run, int(data.time[bar]))
        self.store.add_retrain(c, record)
        level = "info" if record["event"] is None else "warning"
        message = _describe(record, self.spec.margin)
        getattr(self.log, level)(message)
        self.store.add_event("retrain", message, level, int(data.time[bar]), c)
        # in memory only after the row is written; a rollback reloads both from the database
        self.running, self.recorded = None, k
        self.trading_model = record["trading_model"]
        return str(record["trading_model"]) if record["swapped"] else None

    def _record(self, run: Running, effective: int) -> dict[str, Any]:
        status, payload = run.outcome  # type: ignore[misc]
        record: dict[str, Any] = {
            "k": run.k, **run.times, "effective_time": effective,
            "previous_model": run.previous_model, "seed": run.k,
            "current_score": None, "candidate_score": None, "swapped": False,
            "candidate_model": None, "trading_model": run.previous_model,
            "seconds": time.perf_counter() - run.started,
        }  # fmt: skip
        if status != "done":
            record["event"] = f"retrain failed: {payload}"
            return record
        current = payload["current_score"]
        record.update(
            current_score=current if current is not None and math.isfinite(current) else None,
            candidate_score=payload["candidate_score"],
            swapped=bool(payload["swapped"]),
            candidate_model=payload["candidate_model"],
            trading_model=payload["trading_model"],
            event=payload["event"],
            seconds=payload.get("seconds", record["seconds"]),  # the fine-tune and scoring
        )
        return record

    # ---- end ----------------------------------------------------------------------------
    def _stop(self, run: Running) -> None:
        if run.process is not None and run.process.is_alive():
            run.process.terminate()
            run.process.join(timeout=10.0)
        if run.conn is not None:
            run.conn.close()

    def close(self) -> None:
        """End of the session: a retrain still running is stopped (redone at the next start)."""
        if self.running is not None:
            self.log.info("retrain %d still running at the end: redone at the next start",
                          self.running.k)  # fmt: skip
            self._stop(self.running)
            self.running = None
        self._reap(timeout=10.0)

    def summary(self) -> dict[str, Any]:
        """For logs and tests: retrains recorded, the model trading, a retrain running."""
        return {
            "recorded": self.recorded,
            "trading_model": self.trading_model,
            "running": None if self.running is None else self.running.k,
        }


def _describe(record: dict[str, Any], margin: float) -> str:
    current, candidate = record["current_score"], record["candidate_score"]
    scores = (
        f"trading model {'n/a' if current is None else f'{current:.3f}'}, candidate "
        f"{'n/a' if candidate is None else f'{candidate:.3f}'}"
    )
    head = f"retrain {record['k']} on the bars up to {_iso(record['bar_time'])}: {scores}"
    if record["event"] is not None:
        return f"{head}: {record['event']}; the trading model keeps trading"
    if record["swapped"]:
        return f"{head}: swapped in from {_iso(record['effective_time'])}"
    return f"{head}: kept (the candidate must win by {margin:g})"


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(int(t)))
