"""SQLite state of a paper (or live) session: everything needed to stop and continue exactly.

One database file holds one session. WAL journal, ``synchronous=FULL``. Each new candle is
processed inside ONE ``BEGIN IMMEDIATE`` transaction that writes the candle, the env state, the
closed trades, the simulated orders, the positions, the equity snapshot and the feed cursor
together, so a crash (even SIGKILL) leaves either all of it or none of it. The cursor is re-read
inside that transaction, so a candle at or before it is never processed twice.

Schema (times are unix seconds UTC of a bar's *open*; ``bar_time`` is the bar just closed):

``session``      one row: model path and sha256, pairs (JSON), timeframe, feed, mode
                 (``paper``/``live``), market config (JSON), ``start_time`` (first decision bar),
                 gap cooldown, schema version, creation time.
``candles``      (pair, time) -> open, high, low, close, volume: every closed candle received
                 (the history features are rebuilt from, so a restart needs no refetch).
``feed_cursor``  one row: ``last_bar_time`` (last bar processed), ``processed_bars``.
``env_state``    one row: the simulator's ``state_dict()`` as npz bytes, the bar it is at and
                 the pending decision (action taken after that bar, filled at the next open).
``trades``       closed trades as the simulator booked them (pair, entry/exit time and price,
                 quantity, pnl, return, fees, reason); unique on (pair, entry_time, exit_time).
``orders``       ``kind='sim'``: the simulator's fills (status ``filled``); ``kind='live'``:
                 exchange orders with the client and exchange order ids: ``pending`` (written
                 before sending) -> ``filled``, ``open`` (resting), ``cancelled``, ``failed``
                 (the exchange refused), ``not_sent`` (the exchange never got it),
                 ``unconfirmed`` (fate unknown: the pair is not traded), ``missing`` (a resting
                 order gone from the exchange), or ``refused`` (below the venue's minimum,
                 never sent). Never any credential.
``positions``    open positions after the last bar (pair, quantity, entry price and time, high).
``equity``       one snapshot per processed bar: equity, cash, day-start equity, daily-loss lock,
                 open positions.
``live_holdings`` live mode: base-currency amount bought through the exchange, per pair.
``events``       gaps, protection, errors and restarts, for the status view.
``control``      stop requests (``nexlify paper stop``, SIGTERM): when, whether to flatten, and
                 when and how the running session handled it (another process writes here).
``live_state``   live mode: why new entries are blocked (reconciliation found something the
                 database does not know), or NULL.
``live_baseline`` live mode: base-currency balances the account held before the session (left
                 alone, never traded).
``retrains``     rolling retraining (``session.retrain_spec``, JSON, says when and how): one row
                 per finished retrain ``k``: ``bar_time`` (the last closed bar it saw),
                 ``effective_time`` (the first bar its ``trading_model`` decides), train and
                 score bars (first and last open time), both scores, ``swapped``, the previous,
                 candidate and trading model files, the ``event`` of a discarded candidate and
                 the seconds it took. The model deciding a bar is the ``trading_model`` of the
                 last row whose ``effective_time`` is at or before it (else the session's).

Live exchange orders carry a ``role``: ``entry``, ``exit``, ``stop_loss``, ``take_profit`` or
``flatten``; protective orders keep their trigger price in ``price``. Version 1 databases (no
``role``) and version 2 ones (no ``retrains``, no ``retrain_spec``) are migrated in place when
opened; no row is lost.
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from nexlify.errors import ConfigError, DataError

SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS session (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    created_at TEXT NOT NULL,
    model_path TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    pairs TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    feed TEXT NOT NULL,
    mode TEXT NOT NULL,
    market_config TEXT NOT NULL,
    start_time INTEGER,
    gap_cooldown INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    retrain_spec TEXT
);
CREATE TABLE IF NOT EXISTS candles (
    pair TEXT NOT NULL, time INTEGER NOT NULL,
    open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL,
    volume REAL NOT NULL,
    PRIMARY KEY (pair, time)
);
CREATE TABLE IF NOT EXISTS feed_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_bar_time INTEGER,
    processed_bars INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT
);
CREATE TABLE IF NOT EXISTS env_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    bar_time INTEGER NOT NULL,
    pending_action INTEGER NOT NULL,
    state BLOB NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trades (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pair TEXT NOT NULL, entry_time INTEGER NOT NULL, exit_time INTEGER NOT NULL,
    entry_price REAL NOT NULL, exit_price REAL NOT NULL, quantity REAL NOT NULL,
    pnl REAL NOT NULL, return REAL NOT NULL, fees REAL NOT NULL, reason TEXT NOT NULL,
    UNIQUE (pair, entry_time, exit_time)
);
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, bar_time INTEGER NOT NULL, pair TEXT NOT NULL, side TEXT NOT NULL,
    amount REAL NOT NULL, price REAL, status TEXT NOT NULL,
    client_order_id TEXT UNIQUE, exchange_order_id TEXT, filled REAL, error TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, role TEXT
);
CREATE TABLE IF NOT EXISTS positions (
    pair TEXT PRIMARY KEY, quantity REAL NOT NULL, entry_price REAL NOT NULL,
    entry_time INTEGER NOT NULL, high_water REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS equity (
    bar_time INTEGER PRIMARY KEY, equity REAL NOT NULL, cash REAL NOT NULL,
    day_start_equity REAL NOT NULL, locked INTEGER NOT NULL, open_positions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS live_holdings (pair TEXT PRIMARY KEY, amount REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, bar_time INTEGER,
    level TEXT NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS control (
    id INTEGER PRIMARY KEY AUTOINCREMENT, requested_at TEXT NOT NULL, source TEXT NOT NULL,
    flatten INTEGER NOT NULL, handled_at TEXT, outcome TEXT
);
CREATE TABLE IF NOT EXISTS live_state (
    id INTEGER PRIMARY KEY CHECK (id = 1), entries_blocked TEXT, updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS live_baseline (
    currency TEXT PRIMARY KEY, amount REAL NOT NULL, at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS retrains (
    k INTEGER PRIMARY KEY, bar_time INTEGER NOT NULL, effective_time INTEGER NOT NULL,
    train_from INTEGER NOT NULL, train_to INTEGER NOT NULL,
    score_from INTEGER NOT NULL, score_to INTEGER NOT NULL,
    current_score REAL, candidate_score REAL, swapped INTEGER NOT NULL,
    previous_model TEXT NOT NULL, candidate_model TEXT, trading_model TEXT NOT NULL,
    event TEXT, seconds REAL NOT NULL, seed INTEGER NOT NULL, recorded_at TEXT NOT NULL
);
"""

MIGRATIONS = {
    1: ("ALTER TABLE orders ADD COLUMN role TEXT",),
    2: ("ALTER TABLE session ADD COLUMN retrain_spec TEXT",),  # the table: CREATE IF NOT EXISTS
}
"""Statements that bring a database of schema version ``v`` to ``v + 1``."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def state_to_bytes(state: dict[str, Any]) -> bytes:
    """``VecMarketEnv.state_dict()`` as npz bytes (the RNG state as JSON inside, no pickle)."""
    arrays = {k: np.asarray(v) for k, v in state.items() if k != "rng"}
    arrays["rng_json"] = np.array(json.dumps(state["rng"]))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def state_from_bytes(blob: bytes) -> dict[str, Any]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        state: dict[str, Any] = {k: npz[k] for k in npz.files if k != "rng_json"}
        state["rng"] = json.loads(str(npz["rng_json"]))
    return state


class SessionStore:
    """The session database; see the module docstring for the schema."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(SCHEMA)
        self.migrate()

    def migrate(self) -> None:
        """Bring an older session's schema to :data:`SCHEMA_VERSION` in one transaction."""
        row = self.conn.execute("SELECT schema_version FROM session WHERE id = 1").fetchone()
        version = SCHEMA_VERSION if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{self.path}: session schema {version} is newer than this Nexlify's "
                f"({SCHEMA_VERSION}); upgrade Nexlify to continue it"
            )
        if version == SCHEMA_VERSION:
            return
        with self.transaction() as c:
            for v in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[v]:
                    c.execute(statement)
            c.execute("UPDATE session SET schema_version = ? WHERE id = 1", (SCHEMA_VERSION,))

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT`` (``ROLLBACK`` on any exception)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ---- session ------------------------------------------------------------------------
    def session(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM session WHERE id = 1").fetchone()
        if row is None:
            return None
        out = dict(row)
        out["pairs"] = json.loads(out["pairs"])
        out["market_config"] = json.loads(out["market_config"])
        spec = out.get("retrain_spec")
        out["retrain_spec"] = None if spec is None else json.loads(spec)
        return out

    def create_session(self, **fields: Any) -> None:
        if fields.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise ConfigError("session schema_version mismatch")
        values = dict(fields, schema_version=SCHEMA_VERSION, created_at=utc_now())
        values["pairs"] = json.dumps(list(values["pairs"]))
        values["market_config"] = json.dumps(values["market_config"])
        if values.get("retrain_spec") is not None:
            values["retrain_spec"] = json.dumps(values["retrain_spec"], sort_keys=True)
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self.transaction() as c:
            c.execute(f"INSERT INTO session ({names}) VALUES ({marks})", list(values.values()))
            c.execute("INSERT INTO feed_cursor (id, processed_bars) VALUES (1, 0)")

    def check_same_session(self, expected: dict[str, Any]) -> None:
        """Refuse to continue a session with another model, pairs, timeframe or mode."""
        current = self.session()
        if current is None:
            raise DataError(f"{self.path}: no session in this database")
        for key, value in expected.items():
            if current[key] != value:
                raise ConfigError(
                    f"{self.path} holds a session with {key}={current[key]!r}, not {value!r}; "
                    "use another --db for a new session"
                )

    # ---- reads ----------------------------------------------------------------------------
    def cursor(self) -> int | None:
        row = self.conn.execute("SELECT last_bar_time FROM feed_cursor WHERE id = 1").fetchone()
        return None if row is None else row[0]

    def candles(self, pairs: list[str]) -> dict[str, np.ndarray]:
        """Stored candles per pair as float64 [n, 6] (time, open, high, low, close, volume)."""
        out = {}
        for pair in pairs:
            rows = self.conn.execute(
                "SELECT time, open, high, low, close, volume FROM candles WHERE pair = ? "
                "ORDER BY time",
                (pair,),
            ).fetchall()
            out[pair] = np.asarray([tuple(r) for r in rows], dtype=np.float64).reshape(-1, 6)
        return out

    def env_state(self) -> tuple[int, int, dict[str, Any]] | None:
        row = self.conn.execute(
            "SELECT bar_time, pending_action, state FROM env_state WHERE id = 1"
        ).fetchone()
        if row is None:
            return None
        return int(row[0]), int(row[1]), state_from_bytes(row[2])

    def retrains(self) -> list[dict[str, Any]]:
        """The finished retrains, in order."""
        return self.rows("SELECT * FROM retrains ORDER BY k")

    def model_at(self, bar_time: int) -> str:
        """The model file that decided (or decides) at the bar opening at ``bar_time``."""
        row = self.rows(
            "SELECT trading_model FROM retrains WHERE effective_time <= ? ORDER BY k DESC LIMIT 1",
            (bar_time,),
        )
        if row:
            return str(row[0]["trading_model"])
        return str((self.session() or {}).get("model_path"))

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(sql, params).fetchall()]

    # ---- writes (call inside transaction()) -----------------------------------------------
    def add_candles(self, c: sqlite3.Connection, pair: str, rows: list[tuple[float, ...]]) -> None:
        c.executemany(
            "INSERT OR IGNORE INTO candles (pair, time, open, high, low, close, volume) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(pair, int(r[0]), *map(float, r[1:6])) for r in rows],
        )

    def set_cursor(self, c: sqlite3.Connection, bar_time: int, new_bars: int) -> None:
        c.execute(
            "UPDATE feed_cursor SET last_bar_time = ?, processed_bars = processed_bars + ?, "
            "updated_at = ? WHERE id = 1",
            (bar_time, new_bars, utc_now()),
        )

    def set_env_state(
        self, c: sqlite3.Connection, bar_time: int, pending: int, state: dict[str, Any]
    ) -> None:
        c.execute(
            "INSERT OR REPLACE INTO env_state (id, bar_time, pending_action, state, updated_at) "
            "VALUES (1, ?, ?, ?, ?)",
            (bar_time, pending, state_to_bytes(state), utc_now()),
        )

    def add_trades(self, c: sqlite3.Connection, trades: list[dict[str, Any]]) -> None:
        c.executemany(
            "INSERT INTO trades (pair, entry_time, exit_time, entry_price, exit_price, quantity, "
            "pnl, return, fees, reason) VALUES (:pair, :entry_time, :exit_time, :entry_price, "
            ":exit_price, :quantity, :pnl, :return, :fees, :reason)",
            trades,
        )

    def add_order(self, c: sqlite3.Connection, **order: Any) -> None:
        now = utc_now()
        values = {"created_at": now, "updated_at": now, **order}
        names = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        c.execute(f"INSERT INTO orders ({names}) VALUES ({marks})", values)

    def set_positions(self, c: sqlite3.Connection, positions: list[dict[str, Any]]) -> None:
        c.execute("DELETE FROM positions")
        c.executemany(
            "INSERT INTO positions (pair, quantity, entry_price, entry_time, high_water) "
            "VALUES (:pair, :quantity, :entry_price, :entry_time, :high_water)",
            positions,
        )

    def add_equity(self, c: sqlite3.Connection, bar_time: int, account: dict[str, Any]) -> None:
        c.execute(
            "INSERT INTO equity (bar_time, equity, cash, day_start_equity, locked, "
            "open_positions) VALUES (?, ?, ?, ?, ?, ?)",
            (
                bar_time,
                account["equity"],
                account["cash"],
                account["day_start_equity"],
                int(account["locked"]),
                account["open_positions"],
            ),
        )

    def add_retrain(self, c: sqlite3.Connection, record: dict[str, Any]) -> None:
        """One finished retrain (the keys of the ``retrains`` table, less ``recorded_at``)."""
        values = {**record, "swapped": int(record["swapped"]), "recorded_at": utc_now()}
        names = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        c.execute(f"INSERT INTO retrains ({names}) VALUES ({marks})", values)

    def add_event(
        self,
        kind: str,
        message: str,
        level: str = "info",
        bar_time: int | None = None,
        c: sqlite3.Connection | None = None,
    ) -> None:
        (c or self.conn).execute(
            "INSERT INTO events (at, bar_time, level, kind, message) VALUES (?, ?, ?, ?, ?)",
            (utc_now(), bar_time, level, kind, message),
        )
