"""Rolling retraining in paper sessions: schedule, swaps, records, refusals, events, status."""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nexlify.agent.config import AgentConfig
from nexlify.agent.dqn import DQNAgent
from nexlify.agent.ensemble import load_policy
from nexlify.cli import main
from nexlify.data.features import FEATURE_WARMUP
from nexlify.data.market_data import MarketData, build_market_data
from nexlify.errors import DataError
from nexlify.evaluation.backtest import load_model_for_backtest
from nexlify.live.feeds import Bar, ReplayFeed
from nexlify.live.notify import event_notice
from nexlify.live.retrain import run_job
from nexlify.live.session import SessionSettings, open_session
from nexlify.live.status import status_snapshot
from nexlify.live.store import SessionStore
from nexlify.live.trader import paper_market_config
from nexlify.market.evaluate import evaluate_policy, greedy_run
from nexlify.pipeline.rolling import RollingSpec, SwitchingPolicy
from tests.test_paper_agreement import TRADE_KEYS, db_rows, session_equity, session_trades
from tests.test_paper_support import MARKET, PAIRS, candles, write_candles

N_BARS = FEATURE_WARMUP + 300
START = 30
"""First bar (of the features) of the trading period: decisions from bar 31 on."""
SPEC = RollingSpec(every_days=2.0, window_days=2.5, score_days=0.5, episodes=2)
"""48, 60 and 12 one-hour bars: retrains at bars 79, 127, 175, 223 and 271."""
RETRAIN_ARGS = ["--retrain-every", "2", "--retrain-window", "2.5", "--retrain-score-days", "0.5",
                "--fine-tune-episodes", "2"]  # fmt: skip
POINTS = [79, 127, 175, 223, 271]


def frames() -> dict[str, pd.DataFrame]:
    return candles(N_BARS)


def market() -> MarketData:
    return build_market_data(frames(), "1h", "synthetic")


def save_small_model(path: Path) -> Path:
    """An untrained net whose fine-tune learns within two short episodes."""
    data = market()
    from nexlify.market.env import VecMarketEnv

    env = VecMarketEnv(data, MARKET)
    config = AgentConfig(hidden_sizes=(16,), batch_size=16, learning_starts=32,
                         buffer_size=2000, target_update_interval=50)  # fmt: skip
    agent = DQNAgent(env.obs_size, env.n_actions, config, seed=1)
    extra = {"market_config": dataclasses.asdict(MARKET), "pairs": list(PAIRS),
             "timeframe": "1h", "feature_names": list(data.feature_names)}  # fmt: skip
    agent.save(path, extra=extra)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("retrain")
    model = save_small_model(root / "model.pt")
    files = write_candles(root / "data", frames())
    start = pd.Timestamp(int(market().time[START]), unit="s", tz="UTC").isoformat()
    args = ["paper", "--model", str(model), "--feed", "replay", "--data", *files, "--no-view",
            "--start", start]  # fmt: skip
    return {"root": root, "model": model, "files": files, "args": args}


@pytest.fixture(scope="module")
def replayed(setup: dict[str, Any]) -> Path:
    """A replay session with rolling retraining, run through the CLI."""
    db = setup["root"] / "replay.db"
    assert main([*setup["args"], *RETRAIN_ARGS, "--db", str(db)]) == 0
    return db


def test_replay_retrains_on_schedule_and_records_each(replayed: Path) -> None:
    data = market()
    rows = db_rows(replayed, "SELECT * FROM retrains ORDER BY k")
    assert [r["k"] for r in rows] == [1, 2, 3, 4, 5]
    previous = None
    for row, bar in zip(rows, POINTS, strict=True):
        assert row["bar_time"] == int(data.time[bar])
        assert row["effective_time"] == int(data.time[bar + 1])  # replay: the next bar, always
        # the window of 60 bars before the 12 score bars, the last of them the retrain bar
        assert (row["train_from"], row["train_to"]) == (int(data.time[bar - 71]),
                                                        int(data.time[bar - 12]))  # fmt: skip
        assert (row["score_from"], row["score_to"]) == (int(data.time[bar - 11]), row["bar_time"])
        assert row["event"] is None and row["seconds"] > 0 and row["seed"] == row["k"]
        assert bool(row["swapped"]) == (row["candidate_score"] > row["current_score"])
        assert row["trading_model"] == (row["candidate_model"] if row["swapped"]
                                        else row["previous_model"])  # fmt: skip
        assert Path(row["candidate_model"]).is_file()
        if previous is not None:
            assert row["previous_model"] == previous
        previous = row["trading_model"]
    assert any(r["swapped"] for r in rows), "no candidate won: the swap path went untested"
    events = db_rows(replayed, "SELECT * FROM events WHERE kind = 'retrain' ORDER BY id")
    assert len(events) == 5 and all(e["level"] == "info" for e in events)
    assert [e["bar_time"] for e in events] == [r["effective_time"] for r in rows]


def test_the_model_deciding_each_bar_is_the_recorded_one(replayed: Path, setup: dict) -> None:
    """Trades and equity equal a run of the recorded models switched at their effective bars."""
    data = market()
    rows = db_rows(replayed, "SELECT * FROM retrains ORDER BY k")
    store = SessionStore(replayed)
    assert store.model_at(int(data.time[POINTS[0]])) == str(setup["model"])
    assert store.model_at(int(data.time[POINTS[0] + 1])) == rows[0]["trading_model"]
    assert store.model_at(int(data.time[-1])) == rows[-1]["trading_model"]
    store.close()
    traded = data.slice(START, data.n_bars)
    times = traded.time.tolist()
    starts = [0] + [times.index(r["effective_time"]) for r in rows]
    models = [str(setup["model"])] + [r["trading_model"] for r in rows]
    policy = SwitchingPolicy(starts, [load_policy(m)[0] for m in models])
    reference = evaluate_policy(policy, traded, paper_market_config(MARKET), episode_length=0)
    assert session_trades(replayed) == [{k: t[k] for k in TRADE_KEYS}
                                        for t in reference.trades[0]]  # fmt: skip
    assert np.array_equal(session_equity(replayed), reference.equity_curves[0])


def test_a_finished_session_restarts_with_its_swapped_model_and_redoes_nothing(
    replayed: Path, setup: dict[str, Any], tmp_path: Path
) -> None:
    copy = tmp_path / "copy.db"
    source = sqlite3.connect(replayed)
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close()
    target.close()
    last = db_rows(copy, "SELECT trading_model FROM retrains ORDER BY k DESC LIMIT 1")[0]
    agent, spec = load_model_for_backtest(setup["model"])
    settings = SessionSettings(db=copy, model_path=str(setup["model"]), feed="replay",
                               retrain=SPEC)  # fmt: skip
    store, trader = open_session(settings, agent, spec, ReplayFeed(frames(), "1h"))
    try:
        assert trader.retrainer is not None and trader.retrainer.running is None
        assert trader.policy_file == last["trading_model"]
    finally:
        store.close()
    # other retraining settings on the same database are refused
    other = dataclasses.replace(settings, retrain=dataclasses.replace(SPEC, margin=1.0))
    with pytest.raises(Exception, match="retrain_spec"):
        open_session(other, agent, spec, ReplayFeed(frames(), "1h"))


def test_status_and_api_show_the_retrains(
    replayed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nexlify.live.serve import read_session, status_payload
    from nexlify.live.serve_page import watch_page_html

    rows = db_rows(replayed, "SELECT * FROM retrains ORDER BY k")
    store = SessionStore(replayed)
    snap = status_snapshot(store)["retrains"]
    store.close()
    assert snap["count"] == 5 and snap["swapped"] == sum(r["swapped"] for r in rows)
    assert snap["model"] == rows[-1]["trading_model"] and snap["last"]["k"] == 5
    assert snap["settings"] == SPEC.to_dict()
    api = read_session(replayed, status_payload)["retrains"]
    assert api["count"] == 5 and api["model"] == snap["model"]
    assert 'id="retrains"' in watch_page_html("replay.db")  # the page shows the line
    assert main(["paper", "status", "--db", str(replayed)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"5 ({snap['swapped']} swapped)" in out and "retrains" in out


def test_a_schedule_the_replay_cannot_feed_is_refused_before_anything_is_written(
    setup: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "short.db"
    longer = ["--retrain-every", "2", "--retrain-window", "4", "--retrain-score-days", "0.5"]
    assert main([*setup["args"], *longer, "--db", str(db)]) == 3
    err = " ".join(capsys.readouterr().err.split())
    # 96 + 12 bars needed; the first retrain bar is 79: 80 bars of features up to it
    assert "the first retrain needs 108 bars" in err and "will hold 80 there" in err
    assert "28 bars earlier" in err and "--retrain-window" in err
    assert not db.exists() or db_rows(db, "SELECT * FROM session") == []
    assert main([*setup["args"], "--retrain-every", "2", "--retrain-score-days", "3",
                 "--db", str(db)]) == 2  # fmt: skip
    assert "paper --retrain-score-days: 3.0 is not" in capsys.readouterr().err


class HistoryFeed:
    """A polling feed's start: ``history`` closed bars, then one bar per call."""

    name = "poll"

    def __init__(self, history: int) -> None:
        self.bars = ReplayFeed(frames(), "1h").bars
        self.history = history

    def initial_bars(self) -> list[Bar]:
        return self.bars[: self.history]

    def next_bars(self, after: int | None) -> list[Bar] | None:
        later = [b for b in self.bars if after is None or b.time > after]
        return later[:1] or None


def poll_session(
    tmp_path: Path, model: Path, history: int, name: str, target: Any = run_job
) -> tuple[SessionStore, Any]:
    agent, spec = load_model_for_backtest(model)
    settings = SessionSettings(db=tmp_path / name, model_path=str(model), feed="poll",
                               retrain=SPEC)  # fmt: skip
    store, trader = open_session(settings, agent, spec, HistoryFeed(history))
    if target is not run_job and trader.retrainer is not None:
        trader.retrainer.target = target
    return store, trader


def test_poll_needs_history_bars_for_the_first_retrain(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    """The message's figure is exact: one bar fewer is refused, that many is accepted."""
    short = FEATURE_WARMUP + 10
    with pytest.raises(DataError, match=rf"raise --history-bars from {short} to at least") as err:
        poll_session(tmp_path, setup["model"], short, "a.db")
    assert not (tmp_path / "a.db").exists() or db_rows(tmp_path / "a.db",
                                                       "SELECT * FROM session") == []  # fmt: skip
    need = int(str(err.value).rsplit(" ", 1)[1])
    assert need == FEATURE_WARMUP + 72 - 48  # window + score bars, less the 48 before it
    with pytest.raises(DataError, match="--history-bars"):
        poll_session(tmp_path, setup["model"], need - 1, "b.db")
    store, trader = poll_session(tmp_path, setup["model"], need, "c.db")
    trader.retrainer.close()
    store.close()


def swap_when_told(job_path: str, conn: Any) -> None:
    """Background job of the poll test: waits for a flag file beside the job, then reports a
    candidate (the file named in it) that won."""
    flag = Path(job_path).with_name("go")
    while not flag.exists():
        time.sleep(0.02)
    model = flag.read_text().strip()
    record = {"current_score": 1.0, "candidate_score": 2.0, "swapped": True,
              "candidate_model": model, "trading_model": model, "event": None}  # fmt: skip
    conn.send(("done", record))
    conn.close()


def test_poll_never_waits_and_swaps_at_the_first_bar_after_the_result(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    history = FEATURE_WARMUP + 40
    store, trader = poll_session(tmp_path, setup["model"], history, "poll.db", swap_when_told)
    feed = HistoryFeed(history)
    retrainer = trader.retrainer
    assert retrainer is not None
    decision = history - FEATURE_WARMUP - 1
    point = decision + 48
    try:
        while retrainer.running is None:
            trader.process(feed.next_bars(store.cursor()) or [])
        data = market()
        assert store.cursor() == int(data.time[point])  # launched right after the retrain bar
        for _ in range(5):  # the job is held: every bar goes on with the model it had
            tick = time.perf_counter()
            trader.process(feed.next_bars(store.cursor()) or [])
            assert time.perf_counter() - tick < 5.0
        assert store.retrains() == [] and trader.policy_file is None
        other = save_small_model(tmp_path / "other.pt")
        (retrainer.folder / "retrain_1" / "go").write_text(str(other))
        assert retrainer.running is not None and retrainer.running.conn is not None
        assert retrainer.running.conn.poll(30)
        trader.process(feed.next_bars(store.cursor()) or [])
        row = store.retrains()[0]
        assert row["bar_time"] == int(data.time[point]) and row["swapped"] == 1
        assert row["effective_time"] == store.cursor() == int(data.time[point + 6])
        assert trader.policy_file == str(other) == store.model_at(store.cursor())
    finally:
        retrainer.close()
        store.close()


def diverging_job(job_path: str, conn: Any) -> None:
    """The real job, with a fine-tune that diverges."""
    from nexlify.errors import TrainingError
    from nexlify.pipeline import rolling

    def diverge(task: Any) -> Any:
        raise TrainingError("loss is NaN after 3 rollbacks")

    rolling.train_unit = diverge  # type: ignore[assignment]
    run_job(job_path, conn)


def nan_scoring_job(job_path: str, conn: Any) -> None:
    """The real job, with a candidate (a model under the retrain folder) that scores NaN."""
    from nexlify.pipeline import rolling

    real = rolling._score

    def score(model: str, data: Any, config: Any) -> float:
        return float("nan") if "retrain_" in model else real(model, data, config)

    rolling._score = score  # type: ignore[assignment]
    run_job(job_path, conn)


def dying_job(job_path: str, conn: Any) -> None:
    os._exit(3)


@pytest.mark.parametrize(
    ("target", "event"),
    [(diverging_job, "fine-tune diverged: loss is NaN"),
     (nan_scoring_job, "candidate scored NaN: discarded"),
     (dying_job, "retrain failed: the retrain process ended without a result (exit 3)")],
)  # fmt: skip
def test_a_diverged_or_failed_retrain_is_discarded_and_the_model_keeps_trading(
    setup: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture, target: Any,
    event: str,
) -> None:  # fmt: skip
    agent, spec = load_model_for_backtest(setup["model"])
    data = market()
    settings = SessionSettings(db=tmp_path / "d.db", model_path=str(setup["model"]),
                               feed="replay", start_time=int(data.time[START]),
                               retrain=SPEC)  # fmt: skip
    feed = ReplayFeed(frames(), "1h")
    store, trader = open_session(settings, agent, spec, feed, data)
    assert trader.retrainer is not None
    trader.retrainer.target = target
    bars = feed.bars[: FEATURE_WARMUP + POINTS[0] + 3]
    with caplog.at_level(logging.INFO, logger="nexlify.paper"):
        for bar in bars:
            trader.process([bar])
    trader.retrainer.close()
    row = store.retrains()[0]
    store.close()
    assert event in row["event"] and row["swapped"] == 0 and row["candidate_score"] is None
    assert row["trading_model"] == str(setup["model"]) and trader.policy_file is None
    assert "the trading model keeps trading" in caplog.text
    stored = db_rows(tmp_path / "d.db", "SELECT * FROM events WHERE kind = 'retrain'")
    assert stored[0]["level"] == "warning" and event in stored[0]["message"]
    assert event_notice(stored[0]) == ("retrain", "warning", stored[0]["message"])
    assert data.n_bars == N_BARS - FEATURE_WARMUP
    traded = data.slice(START, len(bars) - FEATURE_WARMUP)  # the features are prefix-stable
    frozen = greedy_run(agent, traded, paper_market_config(MARKET))
    assert np.array_equal(session_equity(tmp_path / "d.db"), frozen.equity_curves[0])


def test_a_version_2_database_is_migrated_in_place(tmp_path: Path) -> None:
    from nexlify.live.serve import read_session, status_payload
    from nexlify.live.store import SCHEMA, SCHEMA_VERSION

    db = tmp_path / "v2.db"
    v2 = SCHEMA.replace(",\n    retrain_spec TEXT\n", "\n")
    v2 = v2[: v2.index("CREATE TABLE IF NOT EXISTS retrains")]
    conn = sqlite3.connect(db)
    conn.executescript(v2)
    conn.execute(
        "INSERT INTO session VALUES (1, 'x', 'm.pt', 'h', '[\"BTC/USDT\"]', '1h', 'poll', "
        "'paper', '{}', 0, 24, 2)"
    )
    conn.execute("INSERT INTO feed_cursor (id, last_bar_time, processed_bars) VALUES (1, 7, 3)")
    conn.execute("INSERT INTO events (at, level, kind, message) VALUES ('a', 'info', 'k', 'm')")
    conn.commit()
    conn.close()
    # a read-only watcher of the old file (it cannot migrate) shows no retrains
    assert read_session(db, status_payload)["retrains"]["count"] == 0
    store = SessionStore(db)
    session = store.session()
    assert session is not None and session["retrain_spec"] is None
    assert session["schema_version"] == SCHEMA_VERSION == 3
    assert store.retrains() == [] and store.model_at(10) == "m.pt"
    assert store.cursor() == 7 and len(store.rows("SELECT * FROM events")) == 1
    store.close()


def test_a_model_without_its_training_schedule_is_fine_tuned_with_the_defaults_and_says_so(
    setup: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from nexlify.live.retrain import session_run_config
    from nexlify.train.config import TrainConfig

    with caplog.at_level(logging.WARNING, logger="nexlify.paper.retrain"):
        config = session_run_config(str(setup["model"]), MARKET, SPEC)
    assert "records no training schedule" in caplog.text
    machine = {"device": "cpu", "torch_threads": 1, "eval_every": SPEC.episodes, "swa": False,
               "resume_points": False}  # fmt: skip
    assert config.train == dataclasses.replace(TrainConfig(), **machine)


def test_a_malformed_training_schedule_is_refused_naming_the_model(tmp_path: Path) -> None:
    from nexlify.agent.dqn import load_agent
    from nexlify.errors import ConfigError
    from nexlify.live.retrain import session_run_config

    agent, _ = load_agent(save_small_model(tmp_path / "m.pt"))
    path = tmp_path / "bad.pt"
    agent.save(path, extra={"market_config": dataclasses.asdict(MARKET),
                            "train_config": {"episodez": 3}})  # fmt: skip
    with pytest.raises(ConfigError, match=rf"{path}: its saved training schedule: .*episodez"):
        session_run_config(str(path), MARKET, SPEC)


def test_the_report_lists_the_retrains_and_says_the_gate_never_tested_the_swaps(
    replayed: Path, tmp_path: Path
) -> None:
    rows = db_rows(replayed, "SELECT * FROM retrains ORDER BY k")
    swaps = [r for r in rows if r["swapped"]]
    out = tmp_path / "report.html"
    assert main(["paper", "report", "--db", str(replayed), "--out", str(out)]) == 0
    page = " ".join(out.read_text().split())
    first = pd.Timestamp(swaps[0]["effective_time"], unit="s", tz="UTC")
    assert f"From {first} the session traded fine-tuned models" in page
    assert f"({len(swaps)} of 5 retrains); the no-edge gate never tested them" in page
    assert "Rolling retraining" in page and f"{rows[-1]['candidate_score']:.3f}" in page
    assert page.count("<td>yes</td>") == len(swaps)
