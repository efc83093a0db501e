"""The FastAPI app: a thin layer over the history store and the engine.

Writes (``POST /events``, ``DELETE /users/{id}``, ``POST /admin/reload``) need an API key; reads
are open. An event is acknowledged (200) only after the store made it durable, and a
recommendation reads the store after that, so it reflects every acknowledged event
(read-your-writes). Bad input gets a 4xx whose ``detail`` names the problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import json
import logging
import math
import signal
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

import seqrec
from seqrec.errors import SeqrecError
from seqrec.serve.auth import API_KEY_HEADER, KeyCheck
from seqrec.serve.batcher import MicroBatcher
from seqrec.serve.engine import Engine, Query, Ranked, SimilarUnavailable
from seqrec.serve.metrics import Metrics
from seqrec.serve.middleware import AccessLog, BodyLimit
from seqrec.serve.schemas import (
    EventBatch,
    EventIn,
    EventsAck,
    Forgotten,
    History,
    HistoryRequest,
    Recommendations,
    Reloaded,
    ReloadRequest,
    SimilarItems,
    Users,
)
from seqrec.serve.settings import ServeSettings
from seqrec.serve.stores import Event, HistoryStore, StoreError, open_store

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def settle_memory() -> None:
    """Collect, then move every object alive now out of the collector's reach (``gc.freeze``).

    A loaded service holds a few hundred thousand long-lived objects (PyTorch, FastAPI, the
    vocabularies); a full collection walks all of them, about 0.1 s on a small CPU (measured:
    one every ~6,000 requests of the Beauty load, 99 ms), in the middle of whichever requests are
    waiting. Frozen, they are never walked again; called again after a reload (unfreezing first)
    so a replaced model is freed."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ReloadBusy(Exception):
    pass


class Service:
    """The state behind the routes: settings, store, the engine in service, the batcher."""

    def __init__(self, settings: ServeSettings, store: HistoryStore | None = None,
                 engine: Engine | None = None) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.metrics = Metrics()
        self.keys = KeyCheck(settings.api_keys, settings.insecure)
        self.batcher: MicroBatcher[Query, Ranked] = MicroBatcher(
            lambda: self.run_batch, settings.max_batch, self.metrics.batch_size.observe)
        self._reload_lock = threading.Lock()
        self._own_store = store is None

    @property
    def current(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("no model loaded yet")
        return self.engine

    def start(self) -> None:
        if self.store is None:
            self.store = open_store(self.settings.store)
        if self.engine is None:
            self.engine = Engine.load(self.settings.artifact, self.settings.engine)
        self.metrics.set_model(self.engine.describe())
        mode = self.settings.inference_thread
        # a large catalog's ANN search releases the GIL: a thread lets the loop work meanwhile
        self.batcher.in_loop = mode == "off" or (mode == "auto" and self.engine.index.kind != "ann")
        self.batcher.start()
        settle_memory()
        if not self.keys.configured and not self.settings.insecure:
            log.warning("no API key configured: write endpoints will answer 403 "
                        "(set SEQREC_API_KEY or --api-key-file, or use --insecure)")

    def stop(self) -> None:
        self.batcher.stop()
        if self._own_store and self.store is not None:
            self.store.close()

    def run_batch(self, queries: list[Query]) -> list[Ranked]:
        """On the event loop, per batch: read the stored histories of the batch's users in one go
        (after the request arrived, so every event acknowledged before it is there), then rank."""
        keys = [q.cache_key for q in queries if q.user is not None and q.cache_key is not None]
        if keys:
            assert self.store is not None
            stored = self.store.histories(keys)
            for q in queries:
                if q.user is not None and q.cache_key is not None:
                    h = stored[q.cache_key]
                    q.live_items = [e.item for e in h.events]
                    q.forgotten = h.forgotten
        return self.current.recommend(queries)

    def reload(self, artifact: str | Path | None = None) -> dict[str, Any]:
        """Load an artifact beside the one in service, then swap: requests never wait for it."""
        if not self._reload_lock.acquire(blocking=False):
            raise ReloadBusy
        try:
            t0 = time.perf_counter()
            path = Path(artifact) if artifact else self.settings.artifact
            previous_engine = self.current
            previous = previous_engine.version
            try:
                engine = Engine.load(path, self.settings.engine)
            except Exception:
                self.metrics.reloads.labels("failed").inc()
                raise
            self.engine = engine  # one reference swap; batches in progress finish on the old one
            self.settings.artifact = path
            self.metrics.set_model(engine.describe())
            self.metrics.reloads.labels("ok").inc()
            del previous_engine
            settle_memory()
            out = {"version": engine.version, "previous_version": previous, "artifact": str(path),
                   "seconds": round(time.perf_counter() - t0, 3)}
            log.info("model reloaded", extra=out)
            return out
        finally:
            self._reload_lock.release()

    # -- ids -----------------------------------------------------------------------------------

    def _check_id(self, raw: Any, what: str) -> None:
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise HTTPException(422, f"malformed {what} id {raw!r}: expected an integer or a string")
        if isinstance(raw, int):
            if abs(raw) >= 2**63:
                raise HTTPException(422, f"malformed {what} id {raw}: out of the 64-bit range")
            return
        if not raw or len(raw) > self.settings.max_id_length:
            raise HTTPException(422, f"malformed {what} id {raw[:40]!r}: must be 1 to "
                                     f"{self.settings.max_id_length} characters")
        if raw != raw.strip() or any(ord(c) < 32 or ord(c) == 127 for c in raw):
            raise HTTPException(422, f"malformed {what} id {raw!r}: leading/trailing spaces or "
                                     "control characters")

    def user_ref(self, raw: Any) -> tuple[Any, str]:
        """A user id as given -> (the id in the data set's type, its store key)."""
        self._check_id(raw, "user")
        users = self.current.users
        value = users.normalise(raw)
        if users.is_int and not isinstance(value, int):
            raise HTTPException(422, f"malformed user id {raw!r}: the user ids of this data set "
                                     "are integers")
        return value, str(value)

    def check_k(self, k: int) -> None:
        if not 1 <= k <= self.settings.max_k:
            raise HTTPException(422, f"k must be between 1 and {self.settings.max_k}, got {k}")


def _timestamp(raw: Any, where: str) -> float:
    if raw is None:
        return time.time()
    if isinstance(raw, str):
        try:
            t = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise HTTPException(422, f"{where}: timestamp {raw!r} is neither Unix seconds nor an "
                                     "ISO 8601 date-time") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        return t.timestamp()
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise HTTPException(422, f"{where}: timestamp {raw!r} must be a non-negative number of "
                                 "seconds")
    return value


def _recommendations(user: Any, r: Ranked, version: str) -> JSONResponse:
    """The :class:`Recommendations` body, written directly (the hot path skips re-validating
    what the engine built)."""
    return JSONResponse({"user_id": user, "items": _ranked_items(r),
                         "history_length": r.history_length, "unknown_items": r.unknown,
                         "model_version": version})


def _ranked_items(r: Ranked) -> list[dict[str, Any]]:
    return [{"item_id": i, "score": s, "title": t} for i, s, t in zip(r.items, r.scores, r.titles)]


_UNION_TAGS = ("int", "str", "float")


def _validation_message(errors: list[dict[str, Any]]) -> str:
    """One readable line: ``field.path: problem; ...``. An id that matched neither branch of
    ``int | str`` reads as one problem, not two."""
    by_loc: dict[str, list[dict[str, Any]]] = {}
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "header")]
        while loc and loc[-1] in _UNION_TAGS:
            loc.pop()
        by_loc.setdefault(".".join(loc), []).append(e)
    parts = []
    for loc, errs in by_loc.items():
        if len(errs) > 1 and all(e.get("type", "").endswith(("_type", "_parsing")) for e in errs):
            msg = f"expected an integer or a string, got {errs[0].get('input')!r}"
        else:
            msg = "; ".join(dict.fromkeys(str(e.get("msg", "invalid")) for e in errs))
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _event_schema(max_events: int) -> dict[str, Any]:
    one = EventIn.model_json_schema()
    batch = {"type": "object", "title": "EventBatch", "required": ["events"],
             "properties": {"events": {"type": "array", "items": one, "maxItems": max_events}},
             "additionalProperties": False}
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"anyOf": [one, batch]},
        "examples": {"one": {"value": {"user_id": 1, "item_id": 50}},
                     "batch": {"value": {"events": [{"user_id": 1, "item_id": 50},
                                                    {"user_id": 2, "item_id": 181,
                                                     "event_type": "purchase"}]}}}}}}}


def create_app(settings: ServeSettings, store: HistoryStore | None = None,
               engine: Engine | None = None) -> FastAPI:
    """The app for ``settings``. ``store``/``engine`` may be given ready-made (tests); otherwise
    they are opened when the app starts (its lifespan), before it accepts requests."""
    service = Service(settings, store, engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(service.start)
        loop = asyncio.get_running_loop()
        hup = False
        if settings.reload_on_sighup and hasattr(signal, "SIGHUP"):
            def on_hup() -> None:
                loop.run_in_executor(None, _reload_logged, service)
            loop.add_signal_handler(signal.SIGHUP, on_hup)
            hup = True
        try:
            yield
        finally:
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
            await run_in_threadpool(service.stop)

    app = FastAPI(
        title="seqrec", version=seqrec.__version__, lifespan=lifespan,
        description="Real-time sequential recommendation: post events, get fresh top-k lists. "
                    f"Write endpoints need the `{API_KEY_HEADER}` header.")
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog, metrics=service.metrics)  # outermost: times everything

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        return JSONResponse(status_code=422, content={"detail": _validation_message(errors),
                                                      "errors": jsonable_encoder(errors)})

    @app.exception_handler(StoreError)
    async def on_store_error(request: Request, exc: StoreError) -> JSONResponse:
        log.error("store error: %s", exc)
        return JSONResponse(status_code=503, content={"detail": f"history store unavailable: {exc}"})

    def authorize(key: str | None) -> None:
        refused = service.keys.refuse(key)
        if refused is not None:
            status, message = refused
            headers = {"WWW-Authenticate": API_KEY_HEADER} if status == 401 else None
            raise HTTPException(status, message, headers=headers)

    # -- events --------------------------------------------------------------------------------

    @app.post("/events", response_model=EventsAck, tags=["events"],
              openapi_extra=_event_schema(settings.max_events),
              summary="Add one event or a batch; answered once they are durable")
    async def post_events(request: Request,
                          x_api_key: str | None = Header(None, alias=API_KEY_HEADER)) -> EventsAck:
        authorize(x_api_key)
        body = await request.body()
        try:
            raw = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HTTPException(422, f"request body is not valid JSON: {e}") from None
        try:
            if isinstance(raw, dict) and "events" in raw:
                events = EventBatch.model_validate(raw).events
            else:
                events = [EventIn.model_validate(raw)]
        except ValidationError as e:
            raise HTTPException(422, _validation_message(e.errors())) from None
        if not events:
            raise HTTPException(422, "no events: send {\"user_id\": ..., \"item_id\": ...} or "
                                     "{\"events\": [...]} with at least one")
        if len(events) > settings.max_events:
            raise HTTPException(413, f"a batch of {len(events)} events is over the limit of "
                                     f"{settings.max_events} per request")
        engine = service.current
        rows, unknown = [], []
        for n, ev in enumerate(events):
            where = f"event {n}" if len(events) > 1 else "event"
            _, key = service.user_ref(ev.user_id)
            service._check_id(ev.item_id, "item")
            idx = engine.item_index(ev.item_id)
            if idx is None:
                unknown.append((n, ev.item_id))
                continue
            item = engine.items.ids[idx - 1]
            rows.append(Event(key, str(item), _timestamp(ev.timestamp, where), ev.event_type))
        if unknown:
            service.metrics.rejected_items.inc(len(unknown))
            listed = ", ".join(f"{i!r} (event {n})" for n, i in unknown[:20])
            more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
            return JSONResponse(status_code=422, content={
                "detail": f"unknown item ids: {listed}{more}; nothing was stored",
                "unknown_items": [i for _, i in unknown]})
        assert service.store is not None
        await run_in_threadpool(service.store.append, rows)
        service.metrics.events.inc(len(rows))
        return EventsAck(accepted=len(rows))

    # -- recommendations -----------------------------------------------------------------------

    @app.get("/users/{user_id}/recommendations", response_model=Recommendations,
             tags=["recommendations"], summary="Top-k for a user's stored history")
    async def user_recommendations(user_id: str, k: int = 10,
                                   exclude_seen: bool = True) -> JSONResponse:
        service.check_k(k)
        user, key = service.user_ref(user_id)
        # the stored history is read when the batch runs, for the whole batch at once
        r = await service.batcher.submit(Query(live_items=[], k=k, exclude_seen=exclude_seen,
                                               user=user, cache_key=key))
        return _recommendations(user, r, service.current.version)

    @app.post("/recommendations", response_model=Recommendations, tags=["recommendations"],
              summary="Top-k for a history the caller keeps (nothing stored)")
    async def history_recommendations(body: HistoryRequest) -> JSONResponse:
        service.check_k(body.k)
        if len(body.history) > settings.max_history:
            raise HTTPException(413, f"a history of {len(body.history)} items is over the limit of "
                                     f"{settings.max_history}")
        for item in body.history:
            service._check_id(item, "item")
        r = await service.batcher.submit(Query(live_items=body.history, k=body.k,
                                               exclude_seen=body.exclude_seen))
        return _recommendations(body.user_id, r, service.current.version)

    @app.get("/items/{item_id}/similar", response_model=SimilarItems, tags=["recommendations"],
             summary="Items closest to one item (cosine of the model's item vectors)")
    def similar_items(item_id: str, k: int = 10) -> SimilarItems:
        service.check_k(k)
        service._check_id(item_id, "item")
        engine = service.current
        idx = engine.item_index(item_id)
        if idx is None:
            raise HTTPException(404, f"unknown item id {item_id!r}")
        try:
            r = engine.similar(idx, k)
        except SimilarUnavailable as e:
            raise HTTPException(409, str(e)) from None
        return SimilarItems(item_id=engine.items.ids[idx - 1], title=engine.title(idx),
                            items=_ranked_items(r),  # type: ignore[arg-type]
                            model_version=engine.version)

    # -- users ---------------------------------------------------------------------------------

    @app.get("/users/{user_id}/history", response_model=History, tags=["users"],
             summary="The user's events, oldest first: the artifact's, then live ones")
    def user_history(user_id: str, limit: int | None = None) -> History:
        user, key = service.user_ref(user_id)
        if limit is not None and limit < 1:
            raise HTTPException(422, f"limit must be at least 1, got {limit}")
        engine = service.current
        assert service.store is not None
        hist = service.store.history(key)
        events: list[dict[str, Any]] = []
        if not hist.forgotten:
            u = engine.users.get(user)
            if u is not None:
                seqs = engine.seqs
                a, b = int(seqs.offsets[u - 1]), int(seqs.offsets[u])
                for j in range(a, b):
                    i = int(seqs.items[j])
                    ts = None if seqs.times is None else float(seqs.times[j])
                    events.append({"item_id": engine.items.ids[i - 1], "title": engine.title(i),
                                   "timestamp": ts, "event_type": None, "source": "artifact"})
        for e in hist.events:
            idx = engine.item_index(e.item)
            events.append({"item_id": engine.items.ids[idx - 1] if idx else e.item,
                           "title": engine.title(idx) if idx else None, "timestamp": e.timestamp,
                           "event_type": e.event_type, "source": "live"})
        if limit is not None:
            events = events[-limit:]
        return History(user_id=user, events=events,  # type: ignore[arg-type]
                       forgotten=hist.forgotten)

    @app.delete("/users/{user_id}", response_model=Forgotten, tags=["users"],
                summary="Forget a user: their events are deleted and their history no longer used")
    def forget_user(user_id: str,
                    x_api_key: str | None = Header(None, alias=API_KEY_HEADER)) -> Forgotten:
        authorize(x_api_key)
        user, key = service.user_ref(user_id)
        assert service.store is not None
        n = service.store.forget(key)
        log.info("user forgotten", extra={"user": key, "deleted_events": n})
        return Forgotten(user_id=user, deleted_events=n)

    @app.get("/users", response_model=Users, tags=["users"],
             summary="Some users to look at: recently active ones, then users of the artifact")
    def list_users(limit: int = 20) -> Users:
        if not 1 <= limit <= 1000:
            raise HTTPException(422, f"limit must be between 1 and 1000, got {limit}")
        engine = service.current
        assert service.store is not None
        live = service.store.recent_users(limit)
        out = [{"user_id": engine.users.normalise(u), "live": True} for u in live]
        shown = set(live)
        for u in engine.users.ids:
            if len(out) >= limit:
                break
            if str(u) not in shown:
                out.append({"user_id": u, "live": False})
        return Users(users=out)  # type: ignore[arg-type]

    # -- operations ----------------------------------------------------------------------------

    @app.post("/admin/reload", response_model=Reloaded, tags=["operations"],
              summary="Load the artifact again (or a new one) and swap it in without a pause")
    async def reload(body: ReloadRequest | None = None,
                     x_api_key: str | None = Header(None, alias=API_KEY_HEADER)) -> Reloaded:
        authorize(x_api_key)
        try:
            out = await run_in_threadpool(service.reload, body.artifact if body else None)
        except ReloadBusy:
            raise HTTPException(409, "a reload is already in progress") from None
        except SeqrecError as e:
            raise HTTPException(422, f"reload failed, still serving the previous model: {e}") from None
        return Reloaded(**out)

    @app.get("/health", tags=["operations"], summary="Liveness and what is being served")
    def health() -> JSONResponse:
        engine = service.current
        assert service.store is not None
        body: dict[str, Any] = {"status": "ok", "model": engine.describe(),
                                "store": service.store.describe(),
                                "batches": "event loop" if service.batcher.in_loop else "inference thread"}
        status = 200
        try:
            service.store.ping()
        except StoreError as e:
            body.update(status="degraded", error=str(e))
            status = 503
        if not service.batcher.running:
            body["status"], status = "degraded", 503
        return JSONResponse(status_code=status, content=jsonable_encoder(body))

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    def metrics() -> Response:
        cache = service.current.cache
        if cache is not None:
            service.metrics.cache_hits.set(cache.hits)
            service.metrics.cache_misses.set(cache.misses)
        data, content_type = service.metrics.render()
        return Response(content=data, media_type=content_type)

    # -- the page ------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={
            "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'",
            "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _reload_logged(service: Service) -> None:
    try:
        service.reload()
    except ReloadBusy:
        log.warning("SIGHUP ignored: a reload is already in progress")
    except Exception:
        log.exception("reload on SIGHUP failed; still serving the previous model")
