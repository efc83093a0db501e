"""The HTTP API in process (real app, real SQLite store, real model trained on ML-100K): every
endpoint, read-your-writes, forgetting, auth, validation, limits, metrics, reload; and that what
it serves is exactly the Recommender's (the evaluator's) top-k."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from seqrec.recommend import Recommender
from seqrec.serve.app import create_app
from seqrec.serve.batcher import MicroBatcher
from seqrec.serve.settings import ServeSettings

from _serve_support import API_KEY, require_binary, tiny_artifact

KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def artifact(ml100k_slice) -> Path:
    return tiny_artifact(ml100k_slice, "sasrec", "model.d_model=16")


@pytest.fixture(scope="module")
def rec(artifact) -> Recommender:
    return Recommender.load(artifact)


def make_client(artifact, tmp_path, **kw) -> TestClient:
    settings = ServeSettings(artifact=artifact, store=f"sqlite:{tmp_path / 'h.sqlite3'}",
                             **{"api_keys": (API_KEY,), **kw})
    return TestClient(create_app(settings))


@pytest.fixture
def client(artifact, tmp_path):
    with make_client(artifact, tmp_path, max_events=50, max_body_bytes=64_000) as c:
        yield c


def test_user_recommendations_are_the_recommenders(client, rec):
    for user in rec.users.ids[:10]:
        body = client.get(f"/users/{user}/recommendations", params={"k": 7}).json()
        want = rec.recommend_user(user, k=7)
        assert body["user_id"] == user
        assert [i["item_id"] for i in body["items"]] == want.items
        assert [i["score"] for i in body["items"]] == want.scores
        assert [i["title"] for i in body["items"]] == want.titles
        assert body["history_length"] == len(rec.user_history(user))
    # the user id in the path may be written as the data set has it ("42") in either form
    assert client.get("/users/007/recommendations").json()["user_id"] == 7


@pytest.mark.parametrize("mode, where", [("auto", "event loop"), ("off", "event loop"),
                                         ("on", "inference thread")])
def test_batches_on_the_loop_or_a_thread_give_the_same_answers(artifact, tmp_path, rec, mode, where):
    with make_client(artifact, tmp_path, inference_thread=mode) as c:
        assert c.get("/health").json()["batches"] == where  # auto: a thread only for ANN
        user = rec.users.ids[5]
        c.post("/events", json={"user_id": user, "item_id": rec.items.ids[9]}, headers=KEY)
        body = c.get(f"/users/{user}/recommendations", params={"k": 5}).json()
        want = rec.recommend(list(rec.user_history(user)) + [rec.items.ids[9]], k=5)
        assert [i["item_id"] for i in body["items"]] == want.items


def test_read_your_writes(client, rec):
    user = rec.users.ids[3]
    before = client.get(f"/users/{user}/recommendations", params={"k": 10}).json()
    clicked = before["items"][0]["item_id"]
    r = client.post("/events", json={"user_id": user, "item_id": clicked}, headers=KEY)
    assert r.status_code == 200 and r.json() == {"accepted": 1}
    after = client.get(f"/users/{user}/recommendations", params={"k": 10}).json()
    assert after["history_length"] == before["history_length"] + 1
    assert clicked not in [i["item_id"] for i in after["items"]]  # seen now, so masked
    want = rec.recommend(rec.user_history(user) + [clicked], k=10)
    assert [i["item_id"] for i in after["items"]] == want.items
    hist = client.get(f"/users/{user}/history").json()
    assert hist["events"][-1]["item_id"] == clicked and hist["events"][-1]["source"] == "live"
    assert hist["events"][-1]["title"] == rec.title(rec.items.index(clicked))
    assert [e["item_id"] for e in hist["events"][:-1]] == rec.user_history(user)
    # keeping seen items is a request away
    kept = client.get(f"/users/{user}/recommendations",
                      params={"k": 10, "exclude_seen": "false"}).json()
    assert [i["item_id"] for i in kept["items"]] == \
        rec.recommend(rec.user_history(user) + [clicked], k=10, exclude_seen=False).items


def test_new_user_batch_of_events_and_history_order(client, rec):
    items = rec.items.ids[:4]
    events = [{"user_id": "new-user-1" if False else 900001, "item_id": i,
               "timestamp": 1_700_000_000 + n, "event_type": "view"} for n, i in enumerate(items)]
    events[1]["timestamp"] = "2024-01-02T03:04:05Z"
    r = client.post("/events", json={"events": events}, headers=KEY)
    assert r.json() == {"accepted": 4}
    hist = client.get("/users/900001/history").json()
    assert [e["item_id"] for e in hist["events"]] == items
    assert hist["events"][0]["timestamp"] == 1_700_000_000
    assert hist["events"][1]["timestamp"] == 1704164645.0
    assert {e["event_type"] for e in hist["events"]} == {"view"}
    recs = client.get("/users/900001/recommendations", params={"k": 5}).json()
    assert [i["item_id"] for i in recs["items"]] == rec.recommend(items, k=5).items
    assert client.get("/users/900001/history", params={"limit": 2}).json()["events"][0]["item_id"] == items[2]


def test_stateless_recommendations_list_unknown_items(client, rec):
    hist = [rec.items.ids[5], rec.items.ids[9], 999_999, "nope"]
    body = client.post("/recommendations", json={"history": hist, "k": 4}).json()
    want = rec.recommend(hist, k=4)
    assert [i["item_id"] for i in body["items"]] == want.items
    assert body["unknown_items"] == [999_999, "nope"] and body["history_length"] == 2
    empty = client.post("/recommendations", json={"history": [], "k": 3}).json()
    assert len(empty["items"]) == 3 and empty["history_length"] == 0


def test_forget_a_user(client, rec):
    user = rec.users.ids[7]
    client.post("/events", json={"user_id": user, "item_id": rec.items.ids[0]}, headers=KEY)
    assert client.delete(f"/users/{user}").status_code == 401  # needs the key
    r = client.delete(f"/users/{user}", headers=KEY)
    assert r.status_code == 200 and r.json() == {"user_id": user, "deleted_events": 1,
                                                 "forgotten": True}
    hist = client.get(f"/users/{user}/history").json()
    assert hist["events"] == [] and hist["forgotten"] is True  # the artifact's events too
    recs = client.get(f"/users/{user}/recommendations").json()
    assert recs["history_length"] == 0
    # Recommender.recommend([]) alone fails in left_pad (an empty flat array), so the empty
    # history's answer is taken from a batch where it sits beside a one-item history (same width)
    assert [i["item_id"] for i in recs["items"]] == \
        rec.recommend_many([[], [rec.items.ids[0]]], k=10)[0].items
    svc = client.app.state.service
    assert svc.store.history(str(user)).events == []
    import sqlite3
    db = sqlite3.connect(svc.store.path)  # gone from the file, not just hidden
    assert db.execute("SELECT COUNT(*) FROM events WHERE user_id = ?", (str(user),)).fetchone() == (0,)
    db.close()


def test_similar_items(client, rec):
    item = rec.items.ids[0]
    body = client.get(f"/items/{item}/similar", params={"k": 5}).json()
    assert body["item_id"] == item and len(body["items"]) == 5
    assert item not in [i["item_id"] for i in body["items"]]
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0001 for s in scores)
    assert client.get("/items/123456789/similar").status_code == 404
    assert "unknown item id '123456789'" in client.get("/items/123456789/similar").json()["detail"]


def test_validation_errors_name_the_problem(client, rec):
    item = rec.items.ids[0]
    cases = [
        (client.post("/events", json={"user_id": 1, "item_id": 999_999}, headers=KEY),
         422, "unknown item ids: 999999 (event 0); nothing was stored"),
        (client.post("/events", json={"user_id": 1, "item_id": 3.5}, headers=KEY),
         422, "item_id: expected an integer or a string, got 3.5"),
        (client.post("/events", json={"user_id": "abc", "item_id": item}, headers=KEY),
         422, "malformed user id 'abc': the user ids of this data set are integers"),
        (client.post("/events", json={"user_id": 1}, headers=KEY), 422, "item_id: Field required"),
        (client.post("/events", json={"user_id": 1, "item_id": item, "colour": 1}, headers=KEY),
         422, "colour: Extra inputs are not permitted"),
        (client.post("/events", json={"user_id": 1, "item_id": item, "timestamp": "yesterday"},
                     headers=KEY), 422, "timestamp 'yesterday' is neither Unix seconds nor"),
        (client.post("/events", json={"user_id": 1, "item_id": item, "event_type": "a b"},
                     headers=KEY), 422, "event_type: String should match pattern"),
        (client.post("/events", content=b"{not json", headers=KEY), 422, "not valid JSON"),
        (client.post("/events", json={"events": []}, headers=KEY), 422, "no events"),
        (client.post("/events", json={"events": [{"user_id": 1, "item_id": item}] * 51}, headers=KEY),
         413, "a batch of 51 events is over the limit of 50 per request"),
        (client.post("/events", content=b" " * 70_000, headers=KEY), 413,
         "request body over the limit of 64000 bytes"),
        (client.get("/users/1/recommendations", params={"k": 0}), 422, "k must be between 1 and 1000"),
        (client.get("/users/1/recommendations", params={"k": 5000}), 422, "got 5000"),
        (client.get("/users/1/recommendations", params={"k": "ten"}), 422, "k: Input should be a valid integer"),
        (client.get("/users/x%01y/recommendations"), 422, "control characters"),
        (client.get(f"/users/{'9' * 200}/recommendations"), 422, "must be 1 to 128 characters"),
        (client.post("/recommendations", json={"history": [True], "k": 3}), 422, "history.0"),
        (client.post("/recommendations", json={"history": [1], "k": -1}), 422, "k must be between"),
    ]
    for r, status, text in cases:
        assert r.status_code == status, (text, r.json())
        assert text in r.json()["detail"], (text, r.json())
    assert client.post("/events", json={"user_id": 1, "item_id": 999_999},
                       headers=KEY).json()["unknown_items"] == [999_999]
    assert client.get("/users/1/history").json()["events"][-1]["source"] == "artifact"


def test_chunked_body_over_the_limit_is_refused(client):
    def chunks():
        for _ in range(20):
            yield b" " * 8000

    r = client.post("/events", content=chunks(), headers=KEY)
    assert r.status_code == 413


def test_api_keys(artifact, tmp_path, rec):
    event = {"user_id": 1, "item_id": rec.items.ids[0]}
    with make_client(artifact, tmp_path, api_keys=()) as c:  # no key configured
        r = c.post("/events", json=event)
        assert r.status_code == 403 and "--insecure" in r.json()["detail"]
        assert c.get("/users/1/recommendations").status_code == 200  # reads stay open
    with make_client(artifact, tmp_path, api_keys=(), insecure=True) as c:
        assert c.post("/events", json=event).status_code == 200
    with make_client(artifact, tmp_path, api_keys=("a" * 20, API_KEY), insecure=True) as c:
        assert c.post("/events", json=event).status_code == 401  # keys set: --insecure is moot
        r = c.post("/events", json=event, headers={"X-API-Key": "wrong-key-wrong-key"})
        assert r.status_code == 401 and r.json()["detail"] == "invalid API key"
        assert r.headers["www-authenticate"] == "X-API-Key"
        assert c.post("/events", json=event, headers={"X-API-Key": "a" * 20}).status_code == 200
        assert c.post("/events", json=event, headers=KEY).status_code == 200
        assert c.post("/admin/reload").status_code == 401


def test_health_metrics_docs_and_page(client, rec):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model"]["model"] == "sasrec"
    assert h["model"]["index"]["kind"] == "exact" and h["store"]["journal_mode"] == "wal"
    client.get("/users/1/recommendations")
    client.post("/events", json={"user_id": 1, "item_id": rec.items.ids[0]}, headers=KEY)
    m = client.get("/metrics")
    assert m.headers["content-type"].startswith("text/plain")
    text = m.text
    assert 'seqrec_http_requests_total{method="GET",route="/users/{user_id}/recommendations",status="200"}' in text
    assert "seqrec_http_request_duration_seconds_bucket" in text
    assert "seqrec_events_ingested_total 1.0" in text
    assert "seqrec_inference_batch_size_count" in text and "seqrec_model_info{" in text
    spec = client.get("/openapi.json").json()
    for path in ("/events", "/users/{user_id}/recommendations", "/recommendations",
                 "/items/{item_id}/similar", "/users/{user_id}/history", "/users/{user_id}",
                 "/health", "/metrics"):
        assert path in spec["paths"], path
    assert "anyOf" in str(spec["paths"]["/events"]["post"]["requestBody"])
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "seqrec" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/users", params={"limit": 5}).json()["users"][0] == {"user_id": 1, "live": True}
    assert "x-request-id" in page.headers


def test_reload_swaps_the_model_and_keeps_it_on_failure(client, artifact, ml100k_slice, tmp_path):
    other = tiny_artifact(ml100k_slice, "gru4rec", "model.max_len=20", "model.hidden_dim=32")
    v0 = client.get("/health").json()["model"]["version"]
    r = client.post("/admin/reload", json={"artifact": str(other)}, headers=KEY)
    assert r.status_code == 200, r.json()
    assert r.json()["previous_version"] == v0 and r.json()["version"] != v0
    h = client.get("/health").json()["model"]
    assert h["model"] == "gru4rec" and h["incremental"] is True
    recs = client.get("/users/1/recommendations").json()
    assert recs["model_version"] == r.json()["version"]
    bad = client.post("/admin/reload", json={"artifact": str(tmp_path / "missing")}, headers=KEY)
    assert bad.status_code == 422 and "still serving the previous model" in bad.json()["detail"]
    assert client.get("/health").json()["model"]["model"] == "gru4rec"
    assert "seqrec_model_reloads_total{outcome=\"failed\"} 1.0" in client.get("/metrics").text


def test_micro_batcher_groups_concurrent_requests_without_mixing_answers():
    seen_batches: list[int] = []

    def run(queries: list[int]) -> list[int]:
        seen_batches.append(len(queries))
        return [q * q for q in queries]

    b: MicroBatcher[int, int] = MicroBatcher(lambda: run, max_batch=8, in_loop=True)
    b.start()

    async def main():
        first = await b.submit(0)  # a lone request runs on the loop's next turn, alone
        # 19 requests that arrive together: batches of at most 8, answers not mixed
        rest = await asyncio.gather(*(b.submit(i) for i in range(1, 20)))
        return [first, *rest]

    try:
        assert asyncio.run(main()) == [i * i for i in range(20)]
    finally:
        b.stop()
    assert seen_batches == [1, 8, 8, 3]
    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(b.submit(1))


def test_micro_batcher_on_its_own_thread_groups_waiting_requests():
    seen_batches: list[int] = []
    gate = threading.Event()

    def run(queries: list[int]) -> list[int]:
        gate.wait(5)  # the first batch holds the thread while the others queue up
        seen_batches.append(len(queries))
        return [q * q for q in queries]

    b: MicroBatcher[int, int] = MicroBatcher(lambda: run, max_batch=8, in_loop=False)
    b.start()

    async def main():
        tasks = [asyncio.ensure_future(b.submit(0))]
        await asyncio.sleep(0.2)  # the lone request runs at once, alone (no waiting window)
        tasks += [asyncio.ensure_future(b.submit(i)) for i in range(1, 20)]
        await asyncio.sleep(0.2)
        gate.set()
        return await asyncio.gather(*tasks)

    try:
        assert asyncio.run(main()) == [i * i for i in range(20)]
    finally:
        b.stop()
    assert seen_batches == [1, 8, 8, 3]


@pytest.mark.parametrize("in_loop", [True, False])
def test_a_failing_batch_fails_its_requests_only(in_loop):
    calls = []

    def run(queries):
        calls.append(queries)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return queries

    b = MicroBatcher(lambda: run, in_loop=in_loop)
    b.start()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            asyncio.run(b.submit(1))
        assert asyncio.run(b.submit(2)) == 2
    finally:
        b.stop()


def test_a_started_service_freezes_its_long_lived_objects(client):
    import gc

    client.get("/health")
    assert gc.get_freeze_count() > 10_000  # torch, FastAPI, the model: out of every collection


def test_compiled_model_serves_the_same_lists(rec):
    """``--compile``: torch.compile'd query, compiled for every shape class at load time."""
    import torch

    from seqrec.serve.engine import Engine, EngineOptions, Query

    require_binary("g++", "g++")  # PyTorch's CPU backend compiles C++
    plain = Engine(rec, EngineOptions())
    compiled = Engine(rec, EngineOptions(compile=True))
    assert compiled.describe()["compiled"] is True
    users = rec.users.ids[:24]
    qs = [Query(live_items=[], user=u) for u in users]
    for batch in (qs[:1], qs[1:2], qs[2:]):  # one request, and a batch of several
        for a, b in zip(plain.recommend(batch), compiled.recommend(batch)):
            assert a.items == b.items
            torch.testing.assert_close(torch.tensor(a.scores), torch.tensor(b.scores))
