"""Plain ASGI middleware (no per-request task overhead): request-size limit, and one structured
log line plus metrics per request."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from seqrec.serve.metrics import Metrics

log = logging.getLogger("seqrec.serve.access")

Scope = dict[str, Any]


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class _TooLarge(Exception):
    pass


class BodyLimit:
    """413 for a body over ``max_bytes``: from ``Content-Length`` before reading anything, or
    while reading a body sent without one (chunked)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"request body over the limit of {self.max_bytes} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    return await _send_json(send, 400, {"detail": "malformed Content-Length"})
                if too_big:
                    return await _send_json(send, 413, {"detail": message})
        seen = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return msg

        async def tracking_send(msg: Any) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, {"detail": message})


class AccessLog:
    """Times every request, counts it by route template and status, logs one line, and gives
    each response an ``X-Request-ID`` (the caller's, or a new one)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        rid = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value.decode("latin-1")[:64]
        rid = rid or uuid.uuid4().hex[:16]
        status = 500

        async def wrapped_send(msg: Any) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
                msg = {**msg, "headers": [*msg.get("headers", []),
                                          (b"x-request-id", rid.encode("latin-1"))]}
            await send(msg)

        try:
            await self.app(scope, receive, wrapped_send)
        finally:
            seconds = time.perf_counter() - t0
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(seconds)
            if log.isEnabledFor(logging.INFO):
                log.info("request", extra={"method": method, "path": scope.get("path"),
                                           "route": template, "status": status,
                                           "ms": round(seconds * 1000, 3), "request_id": rid})
