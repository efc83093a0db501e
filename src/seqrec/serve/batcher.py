"""Concurrent recommendation requests answered in batches by one inference thread.

Requests wait in a queue; the thread takes every request waiting (up to ``max_batch``) and runs
them as one batch: one model call and one ranking pass instead of many. There is no waiting
window: a lone request runs at once, alone, so batching adds no latency at low load and only
pays (fewer, larger matrix products) when requests overlap. One thread also means the model and
its state cache are never used concurrently, and the PyTorch work of many requests does not fight
over the few cores.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

Q = TypeVar("Q")
R = TypeVar("R")


@dataclass
class _Job(Generic[Q]):
    query: Q
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class MicroBatcher(Generic[Q, R]):
    """``await submit(query)`` -> ``run([queries])[i]``, computed on the batcher's own thread.

    ``run`` is looked up again for every batch (``get_run()``), so a reloaded model takes over
    from the next batch on while the batch in progress finishes on the old one.
    """

    def __init__(self, get_run: Callable[[], Callable[[list[Q]], list[R]]], max_batch: int = 64,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.get_run = get_run
        self.max_batch = max_batch
        self.on_batch = on_batch
        self._queue: queue.Queue[_Job[Q] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="seqrec-inference", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def submit(self, query: Q) -> R:
        if not self.running:
            raise RuntimeError("the inference thread is not running")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put(_Job(query, fut, loop))
        return await fut

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            stop = False
            while len(jobs) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            self._run(jobs)
            if stop:
                return

    def _run(self, jobs: list[_Job[Q]]) -> None:
        if self.on_batch is not None:
            self.on_batch(len(jobs))
        try:
            results: list[Any] = self.get_run()([j.query for j in jobs])
        except Exception as e:  # every request of the batch gets the error
            log.exception("inference batch of %d failed", len(jobs))
            for j in jobs:
                j.loop.call_soon_threadsafe(_set_exception, j.future, e)
            return
        for j, r in zip(jobs, results):
            j.loop.call_soon_threadsafe(_set_result, j.future, r)


def _set_result(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
