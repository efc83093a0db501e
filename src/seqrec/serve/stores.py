"""Where live events are kept: one interface, two stores.

``SQLiteStore`` (the embedded default: a file, WAL mode, ``synchronous=FULL``) and ``RedisStore``
(several replicas behind a load balancer; the server must run with ``appendonly yes`` and
``appendfsync always``). ``append`` returns only once the events are durable: on disk for SQLite
(the write-ahead log is fsynced at commit), fsynced to the append-only file for Redis (which
replies only after that fsync). A process killed at any moment keeps every event it acknowledged.

Ids are stored as text: the user key and item id are the external ids as the service normalised
them (``str`` of the int or string id of the data set). A history is kept in arrival order.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqrec.errors import SeqrecError

log = logging.getLogger(__name__)


class StoreError(SeqrecError):
    """A history store that cannot be opened, or that would not keep acknowledged events."""


@dataclass(frozen=True)
class Event:
    """One interaction as stored: ids as text, time in Unix seconds."""

    user: str
    item: str
    timestamp: float
    event_type: str = "click"


@dataclass
class UserHistory:
    """A user's live events, oldest first, and whether they asked to be forgotten (which hides the
    artifact's history of them too)."""

    events: list[Event] = field(default_factory=list)
    forgotten: bool = False


class HistoryStore(ABC):
    """Durable per-user event lists. Every method is safe to call from several threads."""

    url: str

    @abstractmethod
    def append(self, events: Sequence[Event]) -> None:
        """Add ``events`` (in order) atomically; returns once they are durable."""

    @abstractmethod
    def histories(self, users: Sequence[str]) -> dict[str, UserHistory]:
        """Each user's history (an empty one for users without events)."""

    def history(self, user: str) -> UserHistory:
        return self.histories([user])[user]

    @abstractmethod
    def forget(self, user: str) -> int:
        """Delete the user's events and remember that they asked; returns how many were deleted."""

    @abstractmethod
    def recent_users(self, limit: int) -> list[str]:
        """Users with live events, the most recently active first."""

    @abstractmethod
    def count_events(self) -> int:
        """Live events in the store (all users)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`StoreError` if the store cannot be reached."""

    def describe(self) -> dict[str, Any]:
        return {"url": self.url}

    def close(self) -> None:  # noqa: B027 - optional for stores without resources
        """Release connections and threads."""


def open_store(spec: str) -> HistoryStore:
    """``sqlite:PATH`` or ``redis://HOST:PORT/DB`` (also ``rediss://``) -> a store."""
    if spec.startswith("sqlite:"):
        path = spec[len("sqlite:"):]
        if path.startswith("//"):  # sqlite:///abs/path
            path = path[2:]
        if not path or path == ":memory:":
            raise StoreError("sqlite store needs a file path (sqlite:PATH): an in-memory database "
                             "would not keep events")
        return SQLiteStore(path)
    if spec.startswith(("redis://", "rediss://")):
        return RedisStore(spec)
    raise StoreError(f"unknown store {spec!r}: use sqlite:PATH or redis://HOST:PORT/DB")


# ---------------------------------------------------------------------------------------------
# SQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    ts REAL NOT NULL,
    event_type TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, seq);
CREATE TABLE IF NOT EXISTS forgotten (user_id TEXT PRIMARY KEY, ts REAL NOT NULL);
"""


@dataclass
class _WriteOp:
    run: Callable[[sqlite3.Connection], Any]
    done: Future = field(default_factory=Future)


class SQLiteStore(HistoryStore):
    """A SQLite file in WAL mode with ``synchronous=FULL``: a commit returns after the log is
    fsynced. One writer thread commits whatever writes are waiting as one transaction (group
    commit: one fsync for a burst), each write in its own savepoint so a failing one fails alone.
    Readers use their own connection per thread and never block the writer."""

    def __init__(self, path: str | Path, *, max_group: int = 1024) -> None:
        self.path = Path(path)
        self.url = f"sqlite:{self.path}"
        self.max_group = max_group
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._local = threading.local()
        self._writer = self._connect()
        self._writer.executescript(_SCHEMA)
        self._queue: queue.Queue[_WriteOp | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._write_loop, name="seqrec-sqlite-writer",
                                        daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the SQLite store {self.path}: {e}") from None
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); "
                             "is it on a file system without shared memory?")
        conn.execute("PRAGMA synchronous=FULL")  # fsync the log at every commit
        conn.execute("PRAGMA secure_delete=ON")  # a forgotten user's rows are overwritten
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def pragmas(self) -> dict[str, Any]:
        """The durability settings in force on a reader connection (for checks and /health)."""
        c = self._reader()
        return {"journal_mode": c.execute("PRAGMA journal_mode").fetchone()[0],
                "synchronous": c.execute("PRAGMA synchronous").fetchone()[0]}

    # -- writes: one thread, group commit ------------------------------------------------------

    def _submit(self, run: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._closed:
            raise StoreError(f"{self.url} is closed")
        op = _WriteOp(run)
        self._queue.put(op)
        return op.done.result()  # raises the op's own error

    def _write_loop(self) -> None:
        conn = self._writer
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # finish this group, then stop
                    break
                batch.append(nxt)
            outcomes: list[tuple[_WriteOp, Any, BaseException | None]] = []
            try:
                conn.execute("BEGIN IMMEDIATE")
                for op in batch:
                    conn.execute("SAVEPOINT op")
                    try:
                        result = op.run(conn)
                    except Exception as e:  # this op fails alone
                        conn.execute("ROLLBACK TO op")
                        outcomes.append((op, None, e))
                    else:
                        outcomes.append((op, result, None))
                    conn.execute("RELEASE op")
                conn.execute("COMMIT")  # durable once this returns (WAL fsynced)
            except Exception as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                err = StoreError(f"{self.url}: write failed: {e}")
                for op in batch:
                    op.done.set_exception(err)
                continue
            for op, result, error in outcomes:
                if error is None:
                    op.done.set_result(result)
                else:
                    op.done.set_exception(error)

    def append(self, events: Sequence[Event]) -> None:
        rows = [(e.user, e.item, float(e.timestamp), e.event_type) for e in events]

        def run(c: sqlite3.Connection) -> None:
            # nothing of the connection (no cursor) may leave the writer thread: a cursor freed
            # in another thread would reset a cached statement the writer is using
            c.executemany(
                "INSERT INTO events (user_id, item_id, ts, event_type) VALUES (?, ?, ?, ?)", rows
            ).close()

        if rows:
            self._submit(run)

    def forget(self, user: str) -> int:
        def run(c: sqlite3.Connection) -> int:
            n = c.execute("DELETE FROM events WHERE user_id = ?", (user,)).rowcount
            c.execute("INSERT OR REPLACE INTO forgotten (user_id, ts) VALUES (?, ?)",
                      (user, time.time()))
            return int(n)

        return self._submit(run)

    # -- reads ---------------------------------------------------------------------------------

    def histories(self, users: Sequence[str]) -> dict[str, UserHistory]:
        out = {u: UserHistory() for u in users}
        if not out:
            return out
        keys = list(out)
        marks = ",".join("?" * len(keys))
        c = self._reader()
        c.execute("BEGIN")  # one snapshot for both reads
        try:
            for user, item, ts, kind in c.execute(
                    f"SELECT user_id, item_id, ts, event_type FROM events WHERE user_id IN ({marks}) "
                    "ORDER BY seq", keys):
                out[user].events.append(Event(user, item, ts, kind))
            for (user,) in c.execute(f"SELECT user_id FROM forgotten WHERE user_id IN ({marks})", keys):
                out[user].forgotten = True
        finally:
            c.execute("COMMIT")
        return out

    def recent_users(self, limit: int) -> list[str]:
        rows = self._reader().execute(
            "SELECT user_id FROM events GROUP BY user_id ORDER BY MAX(seq) DESC LIMIT ?", (limit,))
        return [r[0] for r in rows]

    def count_events(self) -> int:
        return int(self._reader().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def ping(self) -> None:
        try:
            self._reader().execute("SELECT 1").fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"{self.url}: {e}") from None
        if self._closed or not self._thread.is_alive():
            raise StoreError(f"{self.url}: the writer thread is not running")

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "kind": "sqlite", **self.pragmas()}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)
        with self._conns_lock:
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.Error:  # pragma: no cover - closing from another thread
                    pass
            self._conns.clear()


# ---------------------------------------------------------------------------------------------
# Redis


class RedisStore(HistoryStore):
    """Redis lists, one per user, appended in a MULTI/EXEC transaction.

    Keys (``prefix`` default ``seqrec:``): ``events:<user>`` (list of JSON ``[item, ts, type]``),
    ``forgotten`` (set of users), ``recent`` (sorted set: user -> last event time). With
    ``require_durable`` (the default) the server must run with ``appendonly yes`` and
    ``appendfsync always``, which makes Redis fsync the append-only file before it replies, so a
    reply is an acknowledgement of a durable write; otherwise opening the store fails and says so.
    """

    def __init__(self, url: str, *, prefix: str = "seqrec:", require_durable: bool = True) -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self._redis_mod = redis
        self.client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10,
                                           socket_connect_timeout=5)
        self.ping()
        self.durability = self._durability()
        if require_durable and self.durability != {"appendonly": "yes", "appendfsync": "always"}:
            raise StoreError(
                f"the Redis server at {url} would not keep acknowledged events across a crash "
                f"(appendonly={self.durability.get('appendonly')}, "
                f"appendfsync={self.durability.get('appendfsync')}); start it with "
                "--appendonly yes --appendfsync always (or CONFIG SET both)")

    def _durability(self) -> dict[str, str]:
        try:
            got = {}
            for name in ("appendonly", "appendfsync"):
                got.update(self.client.config_get(name))
            return got
        except self._redis_mod.RedisError as e:
            return {"error": str(e)}

    def _key(self, user: str) -> str:
        return f"{self.prefix}events:{user}"

    def append(self, events: Sequence[Event]) -> None:
        if not events:
            return
        pipe = self.client.pipeline(transaction=True)
        last: dict[str, float] = {}
        for e in events:
            pipe.rpush(self._key(e.user), json.dumps([e.item, float(e.timestamp), e.event_type]))
            last[e.user] = time.time()
        pipe.zadd(f"{self.prefix}recent", last)
        try:
            pipe.execute()
        except self._redis_mod.RedisError as e:
            raise StoreError(f"{self.url}: write failed: {e}") from None

    def histories(self, users: Sequence[str]) -> dict[str, UserHistory]:
        keys = list(dict.fromkeys(users))
        pipe = self.client.pipeline(transaction=True)  # one consistent view
        for u in keys:
            pipe.lrange(self._key(u), 0, -1)
            pipe.sismember(f"{self.prefix}forgotten", u)
        try:
            res = pipe.execute()
        except self._redis_mod.RedisError as e:
            raise StoreError(f"{self.url}: read failed: {e}") from None
        out = {}
        for j, u in enumerate(keys):
            rows, forgotten = res[2 * j], res[2 * j + 1]
            events = [Event(u, str(item), float(ts), str(kind))
                      for item, ts, kind in (json.loads(r) for r in rows)]
            out[u] = UserHistory(events, bool(forgotten))
        return out

    def forget(self, user: str) -> int:
        pipe = self.client.pipeline(transaction=True)
        pipe.llen(self._key(user))
        pipe.delete(self._key(user))
        pipe.sadd(f"{self.prefix}forgotten", user)
        pipe.zrem(f"{self.prefix}recent", user)
        try:
            return int(pipe.execute()[0])
        except self._redis_mod.RedisError as e:
            raise StoreError(f"{self.url}: forget failed: {e}") from None

    def recent_users(self, limit: int) -> list[str]:
        return list(self.client.zrevrange(f"{self.prefix}recent", 0, limit - 1))

    def count_events(self) -> int:
        keys = list(self.client.scan_iter(match=f"{self.prefix}events:*", count=1000))
        if not keys:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.llen(k)
        return int(sum(pipe.execute()))

    def ping(self) -> None:
        try:
            self.client.ping()
        except self._redis_mod.RedisError as e:
            raise StoreError(f"cannot reach Redis at {self.url}: {e}") from None

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "kind": "redis", **self.durability}

    def close(self) -> None:
        self.client.close()
