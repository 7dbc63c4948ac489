"""Task lifetimes: cancelling a child must not eat the caller's own cancel."""

from __future__ import annotations

import asyncio

from agents.supervisor import cancel_and_wait


async def slow_to_stop(cleaning: asyncio.Event) -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        cleaning.set()
        await asyncio.Event().wait()  # cleanup that only a second cancel ends
        raise


async def test_cancel_and_wait_returns_once_the_task_has_stopped() -> None:
    task = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_a_caller_cancelled_while_it_waits_is_cancelled_too() -> None:
    cleaning, after = asyncio.Event(), asyncio.Event()
    child = asyncio.create_task(slow_to_stop(cleaning))
    await asyncio.sleep(0)

    async def closer() -> None:
        await cancel_and_wait(child)
        after.set()  # must not run: the closer itself was cancelled

    task = asyncio.create_task(closer())
    await cleaning.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done and task.cancelled() and not after.is_set()
    assert child.done()
