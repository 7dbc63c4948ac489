"""The deadline batcher: order, closing rules, fairness, bounds, cancellation, expiry, batching off.

The batch function is real and cheap: it records what it ran and returns a result per payload.
A gate (a threading.Event the first batch waits on) holds the worker busy while a test queues
jobs, so what is queued when the worker comes free is known exactly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from models.batcher import CostModel, DeadlineBatcher, Expired, Overloaded
from tests.conftest import eventually


class Recorder:
    """A batch function: doubles numbers, records every batch; the payload "gate" waits for open()."""

    def __init__(self) -> None:
        self.batches: list[list[object]] = []
        self.started = threading.Event()
        self._gate = threading.Event()

    def __call__(self, payloads: list[object]) -> list[object]:
        if "gate" in payloads:
            self.started.set()
            assert self._gate.wait(10), "the test never opened the gate"
        self.batches.append(list(payloads))
        return [p * 2 if isinstance(p, int) else p for p in payloads]

    def open(self) -> None:
        self._gate.set()

    def ran(self) -> list[object]:
        return [p for batch in self.batches for p in batch if p != "gate"]


@pytest.fixture()
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.open()


async def make(recorder: Recorder, **options: object) -> DeadlineBatcher[object, object]:
    return DeadlineBatcher(recorder, name="test", **options)  # type: ignore[arg-type]


async def hold_worker(batcher: DeadlineBatcher[object, object], recorder: Recorder) -> asyncio.Future[object]:
    gate = batcher.submit("gate", "gate")
    await eventually(recorder.started.is_set, 5, "the worker to start the gated batch")
    return gate


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_jobs_run_earliest_deadline_first(recorder: Recorder) -> None:
    batcher = await make(recorder, max_batch=1, max_wait_s=0.0)
    gate = await hold_worker(batcher, recorder)
    t = now()
    deadlines = {1: 5.0, 2: 1.0, 3: 3.0, 4: 2.0, 5: 4.0}
    jobs = [batcher.submit(f"ch{n}", n, deadline=t + d) for n, d in deadlines.items()]
    recorder.open()
    assert await asyncio.wait_for(asyncio.gather(*jobs), 5) == [2, 4, 6, 8, 10], "each job gets its own result"
    await gate
    assert recorder.ran() == [2, 4, 3, 5, 1], "by deadline, not by arrival"
    await batcher.aclose()


async def test_a_batch_closes_at_max_batch_without_waiting(recorder: Recorder) -> None:
    batcher = await make(recorder, max_batch=4, max_wait_s=60.0)  # only a full batch closes soon
    far = now() + 60
    first = [batcher.submit("a", n, deadline=far) for n in range(6)]
    await asyncio.wait_for(asyncio.gather(*first[:4]), 5)
    assert recorder.batches == [[0, 1, 2, 3]]
    assert not first[4].done(), "two jobs wait for company: the deadline is far and the wait is long"
    second = [batcher.submit("b", n, deadline=far) for n in (6, 7)]
    await asyncio.wait_for(asyncio.gather(*first[4:], *second), 5)
    assert len(recorder.batches) == 2 and sorted(recorder.batches[1]) == [4, 5, 6, 7]  # type: ignore[type-var]
    assert batcher.batch_sizes == {4: 2}
    await batcher.aclose()


async def test_a_batch_closes_early_when_waiting_would_miss_the_deadline(recorder: Recorder) -> None:
    batcher = await make(recorder, max_batch=8, max_wait_s=60.0)
    batcher.cost.observe(1, 0.2)  # as if a batch of one had taken 200 ms
    t = now()
    urgent = batcher.submit("a", 1, deadline=t + 0.5)
    relaxed = batcher.submit("b", 2, deadline=t + 30)
    await asyncio.wait_for(urgent, 5)
    done_at = now() - t
    assert recorder.batches == [[1, 2]], "the relaxed job rides along with the urgent one"
    assert relaxed.done()
    assert 0.05 < done_at < 0.45, f"should start ~0.4 s (2 items x 0.2 s) before the deadline; done at {done_at:.3f} s"
    assert batcher.metrics()["deadline_misses"] == 0
    await batcher.aclose()


async def test_one_flooding_channel_cannot_starve_another(recorder: Recorder) -> None:
    batcher = await make(recorder, max_batch=4, max_wait_s=0.0)
    gate = await hold_worker(batcher, recorder)
    t = now()
    flood = [batcher.submit("chatty", n, deadline=t - 1.0) for n in range(40)]  # claims to be overdue
    quiet = [batcher.submit("quiet", 100 + n, deadline=t + 2.0) for n in range(4)]
    recorder.open()
    await asyncio.wait_for(asyncio.gather(gate, *flood, *quiet), 5)
    batches = [b for b in recorder.batches if b != ["gate"]]
    assert [sorted(p for p in b if p >= 100) for b in batches[:2]] == [[100, 101], [102, 103]], (
        "the quiet channel gets its share of every batch while it waits"
    )
    assert all(len(b) == 4 for b in batches), "the flood fills what the quiet channel leaves"
    keys = batcher.metrics()["keys"]
    assert keys["quiet"]["deadline_misses"] == 0 and keys["quiet"]["completed"] == 4
    assert keys["chatty"]["deadline_misses"] == 40 and keys["chatty"]["completed"] == 40
    await batcher.aclose()


async def test_equally_urgent_channels_take_turns(recorder: Recorder) -> None:
    batcher = await make(recorder, batching=False)
    gate = await hold_worker(batcher, recorder)
    chatty = [batcher.submit("chatty", n) for n in range(6)]  # all "as soon as possible"
    quiet = [batcher.submit("quiet", 100 + n) for n in range(3)]
    recorder.open()
    await asyncio.wait_for(asyncio.gather(gate, *chatty, *quiet), 5)
    assert recorder.ran() == [0, 100, 1, 101, 2, 102, 3, 4, 5]
    await batcher.aclose()


async def test_batching_off_runs_one_job_per_call(recorder: Recorder) -> None:
    batcher = await make(recorder, max_batch=8, batching=False)
    gate = await hold_worker(batcher, recorder)
    jobs = [batcher.submit(f"ch{n % 2}", n, cost=2) for n in range(5)]
    recorder.open()
    await asyncio.wait_for(asyncio.gather(gate, *jobs), 5)
    assert all(len(b) == 1 for b in recorder.batches)
    assert batcher.batch_sizes == {1: 1, 2: 5}, "sizes count items: the gate, then five jobs of two"
    await batcher.aclose()


async def test_a_full_queue_refuses_at_once_in_total_and_per_channel(recorder: Recorder) -> None:
    batcher = await make(recorder, max_batch=1, max_queue=4, max_queue_per_key=3, max_wait_s=0.0)
    gate = await hold_worker(batcher, recorder)
    mine = [batcher.submit("chatty", n) for n in range(3)]
    with pytest.raises(Overloaded, match="full for chatty"):
        batcher.submit("chatty", 3)
    other = batcher.submit("quiet", 10)  # another channel still has room
    with pytest.raises(Overloaded, match="queue full"):
        batcher.submit("quiet", 11)
    metrics = batcher.metrics()
    assert metrics["rejected"] == 2 and metrics["queue_depth"] == 4
    assert metrics["keys"]["chatty"]["rejected"] == 1 and metrics["keys"]["quiet"]["queued"] == 1
    recorder.open()
    assert await asyncio.wait_for(asyncio.gather(*mine, other), 5) == [0, 2, 4, 20]
    await gate
    assert batcher.queue_depth == 0
    await batcher.aclose()


async def test_cancelled_jobs_are_skipped(recorder: Recorder) -> None:
    batcher = await make(recorder, max_batch=8, max_wait_s=0.0)
    gate = await hold_worker(batcher, recorder)
    jobs = [batcher.submit("a", n) for n in (1, 2, 3)]
    jobs[1].cancel()
    await eventually(lambda: batcher.queue_depth == 2, 1, "the cancelled job to leave the queue")
    recorder.open()
    await asyncio.wait_for(asyncio.gather(gate, jobs[0], jobs[2]), 5)
    assert recorder.ran() == [1, 3]
    assert batcher.metrics()["cancelled"] == 1
    await batcher.aclose()


async def test_a_job_whose_air_time_passed_is_dropped_unrun(recorder: Recorder) -> None:
    batcher = await make(recorder, max_batch=8, max_wait_s=0.0)
    gate = await hold_worker(batcher, recorder)
    expires = now() + 0.05
    stale = batcher.submit("a", 1, deadline=expires, expires=expires)  # e.g. a frame whose air time passes
    fresh = batcher.submit("b", 2, deadline=now() + 30, expires=now() + 30)
    await eventually(lambda: now() > expires, 1, "the stale job's air time to pass")
    recorder.open()
    with pytest.raises(Expired, match="expired"):
        await asyncio.wait_for(stale, 5)
    assert await asyncio.wait_for(fresh, 5) == 4
    await gate
    assert recorder.ran() == [2], "the worker sheds the past instead of rendering it"
    metrics = batcher.metrics()
    assert metrics["expired"] == 1 and metrics["keys"]["a"]["expired"] == 1 and metrics["queue_depth"] == 0
    await batcher.aclose()


async def test_one_slow_batch_learnt_does_not_stop_the_jobs_that_can_still_air(recorder: Recorder) -> None:
    """A cost model that once saw a slow batch (a cold start) must not make every later job expire:
    then nothing would run, the model would never learn better, and the face would freeze for good."""
    batcher = await make(recorder, max_batch=8, max_wait_s=0.0)
    batcher.cost.observe(1, 10.0)  # "a frame takes 10 s"
    recorder.open()
    job = batcher.submit("a", 3, deadline=now() + 0.5, expires=now() + 0.5)
    assert await asyncio.wait_for(job, 5) == 6
    assert batcher.metrics()["expired"] == 0
    await batcher.aclose()


async def test_a_failed_item_fails_only_its_job_and_a_failed_batch_fails_its_jobs() -> None:
    def run(payloads: list[int]) -> list[object]:
        if 13 in payloads:
            raise RuntimeError("unlucky batch")
        return [ValueError(f"bad {p}") if p < 0 else p for p in payloads]

    batcher: DeadlineBatcher[int, object] = DeadlineBatcher(run, name="test", max_wait_s=0.0)
    good, bad = batcher.submit("a", 1), batcher.submit("b", -1)
    assert await good == 1
    with pytest.raises(ValueError, match="bad -1"):
        await bad
    with pytest.raises(RuntimeError, match="unlucky"):
        await batcher.submit("a", 13)
    assert await batcher.submit("a", 2) == 2, "the worker goes on after a failed batch"
    assert batcher.metrics()["errors"] == 1
    await batcher.aclose()


def test_the_cost_model_learns_fixed_and_per_item_seconds() -> None:
    model = CostModel(alpha=0.2)
    for _ in range(20):
        for n in (1, 4, 16):
            model.observe(n, 0.005 + 0.002 * n)
    assert model.fixed == pytest.approx(0.005, abs=1e-6)
    assert model.per_item == pytest.approx(0.002, abs=1e-6)
    assert model.estimate(10) == pytest.approx(0.025, abs=1e-5)
    assert model.error < 1e-6
