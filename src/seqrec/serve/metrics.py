"""Prometheus metrics of one service instance, in a registry of its own (nothing global)."""

from __future__ import annotations

from typing import Any

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
                   0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("seqrec_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("seqrec_http_request_duration_seconds",
                                 "Time from request to the end of the response",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.events = Counter("seqrec_events_ingested", "Events acknowledged (durable)", registry=r)
        self.rejected_items = Counter("seqrec_unknown_items_rejected",
                                      "Unknown item ids refused in POST /events", registry=r)
        self.batch_size = Histogram("seqrec_inference_batch_size",
                                    "Recommendation requests computed together",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.reloads = Counter("seqrec_model_reloads", "Artifact reloads by outcome", ["outcome"],
                               registry=r)
        self.model = Gauge("seqrec_model_info", "The artifact being served (value 1)",
                           ["version", "model", "index"], registry=r)
        self.cache_hits = Gauge("seqrec_state_cache_hits",
                                "Recurrent-state cache hits since the model was loaded", registry=r)
        self.cache_misses = Gauge("seqrec_state_cache_misses",
                                  "Recurrent-state cache misses since the model was loaded",
                                  registry=r)

    def set_model(self, describe: dict[str, Any]) -> None:
        self.model.clear()
        self.model.labels(describe["version"], describe["model"], describe["index"]["kind"]).set(1)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
