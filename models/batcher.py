"""Deadline-aware micro-batches shared by every channel: one worker thread, fair, bounded.

Every channel asks the shared model services for small pieces of work (a frame or two of lip-sync,
a sentence of speech), each with a deadline: the loop time at which its result goes on air. The
batcher gathers what waits into one call of the batch function, so N channels cost one call, not N,
and closes a batch
  * at `max_batch` items (cost units: frames, sentences);
  * when waiting longer for company would miss the earliest deadline, judged by a cost model
    learnt from the batches that ran (batch seconds ≈ fixed + per item × items);
  * after `max_wait_s` at most, so a lone job is never held back for long.
Jobs go earliest deadline first. Jobs that are due already, or will be before a batch could
finish, are equally urgent and take turns by key (round robin); and while other keys wait, no key
takes more than its share of a batch. So one chatty channel cannot starve the others, whatever
deadlines it claims. The queue is bounded in total and per key: a job that does not fit fails at
once with Overloaded (the caller reuses its last frame, or says its filler line); nothing waits
without bound. A cancelled job leaves the queue at once and never runs, and so does a job whose
`expires` has passed (a frame whose time on air is over fails with Expired): an overloaded worker
sheds the past and catches up instead of rendering frames nobody will see.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

P = TypeVar("P")
R = TypeVar("R")

SAFETY_S = 0.002
"""Added to the cost model's own error when judging how long a batch may still wait."""


class Overloaded(RuntimeError):
    """The queue, or the caller's share of it, is full: the job was refused at once."""


class Expired(Overloaded):
    """The job could not have finished before it expired; it was dropped unrun."""


class CostModel:
    """Seconds a batch of n items takes: fixed + per_item × n, by exponentially weighted least squares.

    The two parts differ a lot between backends (a GPU call is mostly fixed overhead, a CPU render
    mostly per frame), so both are learnt from the batches that ran, recent ones weighing most;
    `error` (a running mean of the absolute misprediction) is the safety margin on top.
    """

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = alpha
        self.fixed = 0.0
        self.per_item = 0.0
        self.error = 0.0
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    def estimate(self, n: int) -> float:
        return self.fixed + self.per_item * n

    def observe(self, n: int, seconds: float) -> None:
        if self._w:
            self.error += self.alpha * (abs(seconds - self.estimate(n)) - self.error)
        keep = 1.0 - self.alpha
        self._w = keep * self._w + 1.0
        self._x = keep * self._x + n
        self._y = keep * self._y + seconds
        self._xx = keep * self._xx + n * n
        self._xy = keep * self._xy + n * seconds
        spread = self._w * self._xx - self._x * self._x
        slope = (self._w * self._xy - self._x * self._y) / spread if spread > 1e-6 * self._w**2 else -1.0
        if slope < 0:  # every batch the same size so far (or noise): cost in proportion to size
            self.fixed, self.per_item = 0.0, self._y / self._x
        else:
            self.per_item = slope
            self.fixed = max(0.0, (self._y - slope * self._x) / self._w)


@dataclass(slots=True)
class KeyStats:
    """One key's (channel's) counters, for /metrics."""

    jobs: int = 0
    items: int = 0
    completed: int = 0
    deadline_misses: int = 0
    rejected: int = 0
    cancelled: int = 0
    expired: int = 0
    queued: int = 0  # items waiting now


@dataclass(slots=True, eq=False)
class _Job:
    key: Hashable
    payload: Any
    cost: int
    deadline: float | None  # None: as soon as possible, nothing to miss
    expires: float | None  # after this the result is of no use
    order: float  # the deadline, or the submission time
    submitted: float
    seq: int
    future: asyncio.Future[Any]
    waiting: bool = True


@dataclass(slots=True)
class _Totals:
    batches: int = 0
    jobs: int = 0
    items: int = 0
    errors: int = 0
    rejected: int = 0
    cancelled: int = 0
    expired: int = 0
    deadline_misses: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)


class DeadlineBatcher(Generic[P, R]):
    """Jobs of every channel -> batched calls of `run_batch` in one worker thread.

    `run_batch(payloads)` gets the payloads of one batch in order and returns one result per
    payload; a result that is an exception fails only its own job, and an exception raised by
    `run_batch` fails the whole batch. `batching=False` runs one job per call (for comparison).
    """

    def __init__(
        self,
        run_batch: Callable[[list[P]], Sequence[R | BaseException]],
        *,
        name: str,
        max_batch: int = 32,
        max_queue: int = 512,
        max_queue_per_key: int | None = None,
        max_wait_s: float = 0.02,
        batching: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or (max_queue_per_key is not None and max_queue_per_key < 1):
            raise ValueError("max_batch, max_queue and max_queue_per_key must be at least 1")
        self.name = name
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_queue_per_key = max_queue_per_key
        self.max_wait_s = max_wait_s
        self.batching = batching
        self.cost = CostModel()
        self._run_batch = run_batch
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._waiting: list[_Job] = []
        self._queued = 0
        self._in_flight: list[_Job] = []
        self._keys: dict[Hashable, KeyStats] = {}
        self._last_served: dict[Hashable, int] = {}
        self._totals = _Totals()
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
        self._worker: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ callers
    def submit(
        self,
        key: Hashable,
        payload: P,
        *,
        cost: int = 1,
        deadline: float | None = None,
        expires: float | None = None,
    ) -> asyncio.Future[R]:
        """Queue one job of `cost` items for `key`, due at loop time `deadline` (None: as soon as possible).

        Returns a future for its result; cancel it to withdraw the job. Raises Overloaded at once
        when the queue, or this key's share of it, has no room. A job still waiting when it can no
        longer finish before `expires` (loop time; None: never) fails with Expired, unrun.
        """
        if cost < 1:
            raise ValueError(f"a job costs at least 1 item, got {cost}")
        stats = self._keys.setdefault(key, KeyStats())
        if self._queued + cost > self.max_queue:
            self._refuse(stats, f"{self.name} queue full ({self._queued} of {self.max_queue} items waiting)")
        if self.max_queue_per_key is not None and stats.queued + cost > self.max_queue_per_key:
            self._refuse(
                stats, f"{self.name} queue full for {key} ({stats.queued} of {self.max_queue_per_key} items waiting)"
            )
        now = self._clock()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        order = now if deadline is None else deadline
        job = _Job(key, payload, cost, deadline, expires, order, now, next(self._seq), future)
        future.add_done_callback(lambda _: self._withdraw(job))
        self._waiting.append(job)
        self._queued += cost
        stats.jobs += 1
        stats.items += cost
        stats.queued += cost
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name=f"{self.name}-batcher")
            self._worker.add_done_callback(self._worker_done)
        self._wakeup.set()
        return future

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:  # a bug: the next submit starts a new worker
            log.error("%s: the batch worker failed", self.name, exc_info=task.exception())

    def _refuse(self, stats: KeyStats, why: str) -> None:
        stats.rejected += 1
        self._totals.rejected += 1
        raise Overloaded(why)

    def _withdraw(self, job: _Job) -> None:
        """A job's future is done: if it was still waiting (cancelled), it leaves the queue unrun."""
        if not job.waiting:
            return
        self._waiting.remove(job)
        self._dequeue(job)
        self._keys[job.key].cancelled += 1
        self._totals.cancelled += 1

    def _dequeue(self, job: _Job) -> None:
        job.waiting = False
        self._queued -= job.cost
        self._keys[job.key].queued -= job.cost

    def forget(self, key: Hashable) -> None:
        """Drop a removed channel's counters (its jobs still waiting stay queued until done)."""
        if not any(job.key == key for job in self._waiting):
            self._keys.pop(key, None)
            self._last_served.pop(key, None)

    # ------------------------------------------------------------------ worker
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._until_batch_closes()
            batch = self._take_batch()
            if not batch:
                continue
            self._in_flight = batch
            try:
                await self._execute(loop, batch)
            finally:
                self._in_flight = []

    async def _until_batch_closes(self) -> None:
        while True:
            delay = self._close_in() if self._waiting else None
            if delay is not None and delay <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()

    def _close_in(self) -> float:
        """Seconds the waiting jobs may still wait for company (<= 0: close the batch now)."""
        if not self.batching or self._queued >= self.max_batch:
            return 0.0
        size = min(self._queued, self.max_batch)
        earliest = min(job.order for job in self._waiting)
        oldest = min(job.submitted for job in self._waiting)
        start_by = earliest - self.cost.estimate(size) - 2 * self.cost.error - SAFETY_S
        return min(start_by, oldest + self.max_wait_s) - self._clock()

    def _take_batch(self) -> list[_Job]:
        """The next batch: by deadline, due jobs round robin by key, each key its share while others wait."""
        for job in [job for job in self._waiting if job.future.done()]:
            self._withdraw(job)  # cancelled, its done-callback not run yet: it must not run
        # Only what has already expired is dropped, not what the cost model predicts will: a model that
        # once learnt a slow batch would otherwise expire every job, run none, and never learn better.
        now = self._clock()
        for job in [job for job in self._waiting if job.expires is not None and job.expires < now]:
            self._expire(job)
        if not self._waiting:
            return []
        capacity = self.max_batch if self.batching else 1
        horizon = self._clock() + self.cost.estimate(min(self._queued, capacity))
        ranked = sorted(self._waiting, key=lambda j: (max(j.order, horizon), self._last_served.get(j.key, -1), j.seq))
        share = math.ceil(capacity / len({job.key for job in ranked}))
        taken: list[_Job] = []
        held_back: list[_Job] = []
        size = 0
        per_key: Counter[Hashable] = Counter()
        for job in ranked:
            if not self.batching and taken:
                break
            if taken and size + job.cost > capacity:
                continue
            if per_key[job.key] and per_key[job.key] + job.cost > share:
                held_back.append(job)  # over its share: only if the other keys leave room
                continue
            taken.append(job)
            size += job.cost
            per_key[job.key] += job.cost
        for job in held_back:
            if size + job.cost <= capacity:
                taken.append(job)
                size += job.cost
        batch_no = self._totals.batches
        for job in taken:
            self._waiting.remove(job)
            self._dequeue(job)
            self._last_served[job.key] = batch_no
        return taken

    def _expire(self, job: _Job) -> None:
        self._waiting.remove(job)
        self._dequeue(job)
        self._keys[job.key].expired += 1
        self._totals.expired += 1
        job.future.set_exception(Expired(f"{self.name} job of {job.key} expired before it could run"))

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
        size = sum(job.cost for job in batch)
        t0 = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._pool, self._run_batch, [job.payload for job in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: the batch function returned {len(results)} results for {len(batch)}")
            self.cost.observe(size, time.perf_counter() - t0)
        except Exception as exc:
            log.warning("%s: a batch of %d jobs failed: %s", self.name, len(batch), exc)
            self._totals.errors += 1
            results = [exc] * len(batch)
        now = self._clock()
        totals = self._totals
        totals.batches += 1
        totals.jobs += len(batch)
        totals.items += size
        totals.batch_sizes[size] += 1
        for job, result in zip(batch, results, strict=True):
            stats = self._keys.setdefault(job.key, KeyStats())
            stats.completed += 1
            if job.deadline is not None and now > job.deadline:
                stats.deadline_misses += 1
                totals.deadline_misses += 1
            if job.future.done():  # the caller gave up meanwhile
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    # ------------------------------------------------------------------ metrics
    @property
    def queue_depth(self) -> int:
        """Items waiting (not yet in a batch)."""
        return self._queued

    @property
    def batch_sizes(self) -> Counter[int]:
        """Batches run, by size in items (a histogram's raw counts)."""
        return self._totals.batch_sizes

    def metrics(self) -> dict[str, Any]:
        """Plain numbers for /metrics: counters since start, gauges now, per key and in total."""
        totals = asdict(self._totals)
        totals["batch_sizes"] = dict(sorted(self._totals.batch_sizes.items()))
        return {
            "name": self.name,
            "batching": self.batching,
            "max_batch": self.max_batch,
            **totals,
            "queue_depth": self._queued,
            "queue_jobs": len(self._waiting),
            "in_flight": sum(job.cost for job in self._in_flight),
            "cost_model": {"fixed_s": self.cost.fixed, "per_item_s": self.cost.per_item, "error_s": self.cost.error},
            "keys": {str(key): asdict(stats) for key, stats in self._keys.items()},
        }

    async def aclose(self) -> None:
        """Stop the worker; jobs still waiting or running are cancelled (their callers see CancelledError)."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        for job in [*self._waiting, *self._in_flight]:
            job.future.cancel()
        await asyncio.to_thread(self._pool.shutdown, True)
