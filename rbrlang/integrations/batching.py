"""Batching concurrent requests into grader batches, for the reward server
(`rbrlang.serve`: `Batcher`) and the engine hooks that are called from many
threads (OpenRLHF's reward file, veRL's `compute_score`: `ThreadBatcher`).

It lives here, beside the hooks, because the dependency rule lets `serve`
import `integrations` and not the other way round; its logger is the server's.

OpenRLHF sends one sample per request, from many rollout workers at once; the
grader is fastest on batches. Requests go into one asyncio queue; one worker
takes the first waiting request, then gathers more for at most `window_s` or
until `max_batch` samples, and scores the group in one call on a dedicated
thread (the event loop keeps accepting requests meanwhile). While the grader
is busy requests pile up, so the next batch fills at once: the window only
matters when the server is idle.

A request's samples are never split across batches. A scorer can fail one
item by giving an exception as its result: that request alone fails with it.
When a group's call fails, each request in it is scored alone, so one bad
request fails by itself (and the server stays up). A request whose caller is
gone (its future cancelled: a server that gave up on it at shutdown) is not
scored.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

log = logging.getLogger("rbrlang.serve")

_STOP = object()


@dataclass
class BatchStats:
    """Counts since the server started (the /health route shows them)."""

    requests: int = 0
    samples: int = 0
    batches: int = 0
    largest: int = 0
    failed_requests: int = 0
    busy_s: float = 0.0  # time the grader thread spent scoring
    sizes: dict = field(default_factory=dict)  # batch size -> how many batches had it

    @property
    def mean_batch(self) -> float:
        return self.samples / self.batches if self.batches else 0.0

    def as_dict(self) -> dict:
        return {"requests": self.requests, "samples": self.samples, "batches": self.batches,
                "mean_batch": round(self.mean_batch, 3), "largest_batch": self.largest,
                "failed_requests": self.failed_requests, "busy_s": round(self.busy_s, 3),
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())}}


@dataclass
class _Job:
    items: list
    future: asyncio.Future


class Batcher:
    """`await batcher.submit(items)` scores `items` together with other waiting requests' items.

    `score(items) -> results` (one result per item, in order; an exception
    as an item's result fails that item's request) runs on one worker thread. Start with `start()` inside the running loop; `stop()`
    scores everything already queued, then ends the worker.
    """

    def __init__(self, score: Callable[[list], Sequence], max_batch: int = 64, window_s: float = 0.005):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.score = score
        self.max_batch = int(max_batch)
        self.window_s = max(0.0, float(window_s))
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rbr-grader")
        self._held: _Job | None = None  # a request that did not fit the last batch: first in the next
        self.in_flight = 0  # requests submitted and not yet answered

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="rbr-batcher")

    async def stop(self) -> None:
        """Score what is queued, then end the worker and its thread."""
        if self._worker is not None and not self._worker.done():
            await self._queue.put(_STOP)
            await self._worker
        self._executor.shutdown(wait=True)

    async def submit(self, items: list) -> list:
        if not self.running:
            raise RuntimeError("the batcher is not running")
        if not items:
            return []
        future = asyncio.get_running_loop().create_future()
        self.in_flight += 1
        try:
            await self._queue.put(_Job(list(items), future))
            return await future
        finally:
            self.in_flight -= 1

    # --- the worker ------------------------------------------------------------------
    async def _run(self) -> None:
        stopping = False
        while not stopping or self._held is not None or not self._queue.empty():
            group, stopping = await self._gather(stopping)
            if group:
                await self._score(group)

    async def _gather(self, stopping: bool) -> tuple[list[_Job], bool]:
        """The next group of requests: waits for a first one, then up to `window_s` for more."""
        loop = asyncio.get_running_loop()
        group: list[_Job] = []
        size = 0
        if self._held is not None:
            group, size, self._held = [self._held], len(self._held.items), None
        elif not stopping:
            first = await self._queue.get()
            if first is _STOP:
                return [], True
            group, size = [first], len(first.items)
        deadline = loop.time() + self.window_s
        while size < self.max_batch:
            try:
                # After stop() nothing new arrives: take what is queued without waiting.
                timeout = 0 if stopping else deadline - loop.time()
                job = self._queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self._queue.get(), timeout)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            if job is _STOP:
                stopping = True
                continue
            if size + len(job.items) > self.max_batch:
                self._held = job
                break
            group.append(job)
            size += len(job.items)
        return group, stopping

    async def _score(self, group: list[_Job]) -> None:
        group = [job for job in group if not job.future.done()]
        if not group:
            return
        loop = asyncio.get_running_loop()
        items = [it for job in group for it in job.items]
        start = loop.time()
        try:
            results = await loop.run_in_executor(self._executor, self.score, items)
            self.stats.busy_s += loop.time() - start
            if len(results) != len(items):
                raise RuntimeError(f"the scorer gave {len(results)} results for {len(items)} items")
        except Exception as exc:
            if len(group) == 1:
                self._fail(group[0], exc)
                return
            # Find the request at fault: score each alone.
            for job in group:
                await self._score([job])
            return
        self._count(len(group), len(items))
        start = 0
        for job in group:
            mine = list(results[start:start + len(job.items)])
            start += len(job.items)
            failed = next((r for r in mine if isinstance(r, BaseException)), None)
            if failed is not None:
                self._fail(job, failed)
            elif not job.future.done():  # its client may have gone away
                job.future.set_result(mine)

    def _count(self, requests: int, samples: int) -> None:
        s = self.stats
        s.requests += requests
        s.samples += samples
        s.batches += 1
        s.largest = max(s.largest, samples)
        s.sizes[samples] = s.sizes.get(samples, 0) + 1

    def _fail(self, job: _Job, exc: Exception) -> None:
        self.stats.failed_requests += 1
        if not job.future.done():
            job.future.set_exception(exc)


class ThreadBatcher:
    """A `Batcher` on its own event-loop thread, for callers on plain threads.

    OpenRLHF calls a `reward_func` file from many threads at once, one sample
    each, and veRL's reward loop calls `compute_score` from a thread pool:
    `submit(items)` blocks its caller until the batch holding its items is
    scored, so those calls share grader batches as the server's requests do,
    and the grader runs on one thread only."""

    def __init__(self, score: Callable[[list], Sequence], max_batch: int = 64, window_s: float = 0.005):
        import threading

        self.batcher = Batcher(score, max_batch, window_s)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rbr-batcher-loop", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.batcher.start(), self._loop).result()

    @property
    def stats(self) -> BatchStats:
        return self.batcher.stats

    def submit(self, items: list) -> list:
        return self.submit_future(items).result()

    def submit_future(self, items: list):
        """`submit` without blocking: a `concurrent.futures.Future` of the results
        (`asyncio.wrap_future` awaits it from another event loop)."""
        return asyncio.run_coroutine_threadsafe(self.batcher.submit(items), self._loop)

    def close(self) -> None:
        """Score what is queued, then end the threads."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.batcher.stop(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
