"""Both history stores pass one contract on real servers: a SQLite file in WAL mode and a real
redis-server (private, fsyncing every write)."""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid

import pytest

from seqrec.serve.stores import Event, RedisStore, SQLiteStore, StoreError, open_store

from _serve_support import RedisProcess


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / "h.sqlite3")
        yield s
        s.close()
    elif os.environ.get("SEQREC_TEST_REDIS_URL"):  # CI's redis-server (.ci/run starts it)
        s = RedisStore(os.environ["SEQREC_TEST_REDIS_URL"], prefix=f"seqrec-test-{uuid.uuid4().hex}:")
        yield s
        for key in s.client.scan_iter(match=f"{s.prefix}*"):
            s.client.delete(key)
        s.close()
    else:  # a private one
        server = RedisProcess(tmp_path / "redis")
        s = open_store(server.url)
        yield s
        s.close()
        server.kill()


def ev(user, item, t=0.0, kind="click"):
    return Event(user, str(item), t, kind)


def test_histories_keep_arrival_order_per_user(store):
    store.append([ev("1", 10, 5.0), ev("2", 20), ev("1", 11, 1.0, "purchase")])
    store.append([ev("1", 12, 3.0)])
    h = store.history("1")
    assert [e.item for e in h.events] == ["10", "11", "12"]  # arrival order, not timestamps
    assert [e.timestamp for e in h.events] == [5.0, 1.0, 3.0]
    assert h.events[1].event_type == "purchase" and not h.forgotten
    both = store.histories(["2", "nobody"])
    assert [e.item for e in both["2"].events] == ["20"] and both["nobody"].events == []
    assert store.count_events() == 4
    assert store.recent_users(10) == ["1", "2"]  # the most recently active first


def test_forget_deletes_and_remembers(store):
    store.append([ev("a", 1), ev("a", 2), ev("b", 3)])
    assert store.forget("a") == 2
    h = store.history("a")
    assert h.events == [] and h.forgotten
    assert store.forget("a") == 0
    assert [e.item for e in store.history("b").events] == ["3"] and not store.history("b").forgotten
    store.append([ev("a", 4)])  # a forgotten user may come back; they start afresh
    h = store.history("a")
    assert [e.item for e in h.events] == ["4"] and h.forgotten
    assert "a" in store.recent_users(5)


def test_concurrent_appends_are_all_kept_in_each_writers_order(store):
    def writer(w):
        for i in range(40):
            store.append([ev(f"w{w}", i)])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in range(6):
        assert [int(e.item) for e in store.history(f"w{w}").events] == list(range(40))
    assert store.count_events() == 240


def test_sqlite_is_wal_with_full_sync_and_shared_between_processes(tmp_path):
    path = tmp_path / "h.sqlite3"
    s = SQLiteStore(path)
    assert s.pragmas() == {"journal_mode": "wal", "synchronous": 2}  # 2 = FULL
    s.append([ev("1", 1)])
    other = sqlite3.connect(path)  # another reader sees the committed write at once
    assert other.execute("SELECT item_id FROM events").fetchall() == [("1",)]
    other.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.append([ev("1", 2)])
    s2 = SQLiteStore(path)  # reopened: the events are there
    assert [e.item for e in s2.history("1").events] == ["1"]
    s2.close()


def test_sqlite_group_commit_isolates_a_failing_write(tmp_path):
    s = SQLiteStore(tmp_path / "h.sqlite3")
    bad = Event("1", "x", float("nan"), "click")  # NaN is stored as NULL: NOT NULL fails
    with pytest.raises(sqlite3.IntegrityError):
        s.append([ev("1", 1), bad])
    assert s.history("1").events == []  # the failing append left nothing behind
    s.append([ev("1", 2)])
    assert [e.item for e in s.history("1").events] == ["2"]
    s.close()


def test_open_store_specs(tmp_path):
    with pytest.raises(StoreError, match="use sqlite:PATH or redis://"):
        open_store("postgres://x")
    with pytest.raises(StoreError, match="needs a file path"):
        open_store("sqlite::memory:")
    s = open_store(f"sqlite:{tmp_path / 'sub' / 'h.db'}")
    assert isinstance(s, SQLiteStore) and (tmp_path / "sub" / "h.db").exists()
    s.close()
    with pytest.raises(StoreError, match="cannot reach Redis"):
        open_store("redis://127.0.0.1:1/0")


def test_redis_without_fsync_on_every_write_is_refused(tmp_path):
    server = RedisProcess(tmp_path / "redis", durable=False)
    try:
        with pytest.raises(StoreError, match="appendonly=no, appendfsync=everysec"):
            RedisStore(server.url)
        RedisStore(server.url, require_durable=False).close()  # possible, on purpose only
    finally:
        server.kill()
