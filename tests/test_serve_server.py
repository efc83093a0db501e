"""The real service in a real process: no acknowledged event is lost when it is killed with
SIGKILL in the middle of a burst (SQLite; Redis, killed too), and a hot reload under load drops
no request."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from seqrec.errors import ConfigError
from seqrec.serve.auth import load_api_keys

from _serve_support import API_KEY, RedisProcess, ServerProcess, tiny_artifact

KEY = {"X-API-Key": API_KEY}
WRITERS = 6


@pytest.fixture(scope="module")
def artifact(ml100k_slice) -> Path:
    return tiny_artifact(ml100k_slice, "sasrec", "model.d_model=16")


def burst(url: str, item_ids: list, stop: threading.Event) -> tuple[set, int]:
    """Writers post single events and small batches until the server dies. Returns the events
    acknowledged (user, timestamp) and how many were in flight (sent, never answered)."""
    acked: set[tuple[int, float]] = set()
    in_flight = [0]
    lock = threading.Lock()

    def writer(w: int) -> None:
        user = 800_000 + w
        n = 0
        with httpx.Client(base_url=url, timeout=10, headers=KEY) as c:
            while not stop.is_set():
                size = 1 if n % 3 else 4
                evs = [{"user_id": user, "item_id": item_ids[(n + j) % len(item_ids)],
                        "timestamp": float(n + j)} for j in range(size)]
                body = evs[0] if size == 1 else {"events": evs}
                try:
                    r = c.post("/events", json=body)
                except httpx.HTTPError:  # the server died under us: this batch is unknown
                    with lock:
                        in_flight[0] += size
                    return
                if r.status_code == 200:
                    with lock:
                        acked.update((user, e["timestamp"]) for e in evs)
                n += size

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    return acked, threads, in_flight  # type: ignore[return-value]


def stored_events(url: str) -> set[tuple[int, float]]:
    out = set()
    with httpx.Client(base_url=url, timeout=10) as c:
        for w in range(WRITERS):
            user = 800_000 + w
            for e in c.get(f"/users/{user}/history").json()["events"]:
                assert e["source"] == "live"
                out.add((user, e["timestamp"]))
    return out


def kill_mid_burst(url: str, item_ids: list, kill) -> tuple[set, int]:
    stop = threading.Event()
    acked, threads, in_flight = burst(url, item_ids, stop)
    deadline = time.monotonic() + 30
    while len(acked) < 400 and time.monotonic() < deadline:
        time.sleep(0.02)
    kill()  # SIGKILL while every writer has a request in flight
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acked) >= 400, "the burst was too slow to test anything"
    return set(acked), in_flight[0]


def test_sigkill_mid_burst_loses_no_acknowledged_event_sqlite(artifact, tmp_path):
    from seqrec.recommend import Recommender

    items = Recommender.load(artifact).items.ids[:50]
    store = f"sqlite:{tmp_path / 'events.sqlite3'}"
    server = ServerProcess(artifact, store, tmp_path / "server.log")
    acked, in_flight = kill_mid_burst(server.url, items, lambda: server.kill(signal.SIGKILL))
    assert server.proc.returncode == -signal.SIGKILL
    with ServerProcess(artifact, store, tmp_path / "server2.log") as again:
        stored = stored_events(again.url)
    lost = acked - stored
    assert not lost, f"{len(lost)} acknowledged events lost of {len(acked)}"
    assert len(stored - acked) <= in_flight  # only unanswered requests may have landed


def test_sigkill_of_server_and_redis_mid_burst_loses_no_acknowledged_event(artifact, tmp_path):
    from seqrec.recommend import Recommender

    items = Recommender.load(artifact).items.ids[:50]
    redis = RedisProcess(tmp_path / "redis")
    try:
        server = ServerProcess(artifact, redis.url, tmp_path / "server.log")

        def kill_both() -> None:
            redis.kill(signal.SIGKILL)  # the store itself dies without a chance to flush
            server.kill(signal.SIGKILL)

        acked, in_flight = kill_mid_burst(server.url, items, kill_both)
        redis.restart()  # same folder: replays its append-only file
        with ServerProcess(artifact, redis.url, tmp_path / "server2.log") as again:
            stored = stored_events(again.url)
    finally:
        redis.kill()
    lost = acked - stored
    assert not lost, f"{len(lost)} acknowledged events lost of {len(acked)}"
    assert len(stored - acked) <= in_flight


def test_hot_reload_under_load_drops_no_request(artifact, ml100k_slice, tmp_path):
    other = tiny_artifact(ml100k_slice, "sasrec", "model.d_model=16", "train.seed=8")
    server = ServerProcess(artifact, f"sqlite:{tmp_path / 'h.sqlite3'}", tmp_path / "server.log")
    stop = threading.Event()
    statuses: list[int] = []
    versions: list[str] = []
    errors: list[str] = []

    def reader(w: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            n = 0
            while not stop.is_set():
                try:
                    if n % 4 == 3:
                        r = c.post("/events", json={"user_id": 1 + w, "item_id": 50}, headers=KEY)
                    else:
                        r = c.get(f"/users/{1 + (n % 50)}/recommendations", params={"k": 10})
                        if r.status_code == 200:
                            versions.append(r.json()["model_version"])
                    statuses.append(r.status_code)
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                n += 1

    threads = [threading.Thread(target=reader, args=(w,)) for w in range(4)]
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            v0 = c.get("/health").json()["model"]["version"]
            for t in threads:
                t.start()
            time.sleep(1.0)
            r = c.post("/admin/reload", json={"artifact": str(other)}, headers=KEY)
            assert r.status_code == 200, r.text
            v1 = r.json()["version"]
            time.sleep(1.0)
            server.proc.send_signal(signal.SIGHUP)  # reload the same path again: same version
            time.sleep(1.5)
            stop.set()
            for t in threads:
                t.join(timeout=30)
            health = c.get("/health").json()
            metrics = c.get("/metrics").text
    finally:
        stop.set()
        server.kill(signal.SIGTERM)
    assert not errors, errors[:3]
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert v0 != v1 and versions[0] == v0 and versions[-1] == v1 and set(versions) == {v0, v1}
    assert health["model"]["version"] == v1 and health["model"]["artifact"] == str(other)
    assert 'seqrec_model_reloads_total{outcome="ok"} 2.0' in metrics
    log = server.log_path.read_text()
    assert '"message": "model reloaded"' in log and '"message": "request"' in log  # JSON logs


def test_api_key_file(artifact, tmp_path):
    """Keys from a file (the environment variable is covered by every other server test; no key
    at all and --insecure by test_serve_app.test_api_keys)."""
    store = f"sqlite:{tmp_path / 'h.sqlite3'}"
    event = {"user_id": 1, "item_id": 50}
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# rotated monthly\nfile-key-0123456789abc\n")
    with ServerProcess(artifact, store, tmp_path / "b.log", "--api-key-file", str(key_file),
                       api_key=None) as server:
        ok = httpx.post(f"{server.url}/events", json=event,
                        headers={"X-API-Key": "file-key-0123456789abc"})
        assert ok.status_code == 200
        assert httpx.post(f"{server.url}/events", json=event).status_code == 401
        assert httpx.get(f"{server.url}/users/1/recommendations").status_code == 200


def test_api_key_loading(tmp_path):
    assert load_api_keys("a" * 16 + ", " + "b" * 16) == ("a" * 16, "b" * 16)
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_api_keys("short")
    empty = tmp_path / "k"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no key"):
        load_api_keys(None, empty)
    with pytest.raises(ConfigError, match="cannot read the API key file"):
        load_api_keys(None, tmp_path / "missing")
