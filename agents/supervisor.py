"""Keep a channel's long-running work alive: restart it with backoff when it fails.

One channel's failure must never stall another, and must not leave its own viewers with a dead
picture: the failed task is logged with its reason, counted, and started again — at once the
first time (its viewers see the picture stop for a frame or two at most), then with a growing
pause if it keeps failing, so a broken pipeline cannot spin a core. A task that ran well for a
while starts its next outage from the shortest pause again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


class Supervised:
    """Runs `factory()` until cancelled; restarts it whenever it raises (or returns early)."""

    def __init__(
        self,
        what: str,
        factory: Callable[[], Awaitable[None]],
        *,
        backoff_s: tuple[float, float] = (0.0, 5.0),
        healthy_after_s: float = 30.0,
    ) -> None:
        self.what = what
        self.factory = factory
        self.backoff_s = backoff_s
        self.healthy_after_s = healthy_after_s
        self.restarts = 0
        self.last_error: str | None = None

    async def run(self) -> None:
        delay = self.backoff_s[0]
        while True:
            started = time.monotonic()
            failure: BaseException | None = None
            try:
                await self.factory()
                self.last_error = "stopped on its own"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure, self.last_error = exc, f"{type(exc).__name__}: {exc}"
            if time.monotonic() - started > self.healthy_after_s:
                delay = self.backoff_s[0]  # it ran well for a while: a fresh outage
            self.restarts += 1
            log.error("%s failed (%s); restarting in %.1f s", self.what, self.last_error, delay, exc_info=failure)
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, 0.1), self.backoff_s[1])


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has stopped. Its CancelledError ends here, but one aimed at
    the caller (cancelled while it waits) goes on up: swallowing that would leave the caller running
    after its own cancel, the bug that once kept a stopped studio encoding."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


class TaskSet:
    """The tasks one owner (a channel's half, a desk) runs; closing it never hangs.

    A task that ends with an error is logged with its name. `aclose` cancels them all and waits;
    a task that outlives its cancel (one that swallowed the CancelledError) is named in the log and
    cancelled again: closing one channel must never hang the studio's shutdown.
    """

    STOP_TIMEOUT_S = 5.0

    def __init__(self, owner: str, tag: str = "") -> None:
        """`owner` names it in the log ("channel alpha"), `tag` its tasks ("alpha:program")."""
        self.owner = owner
        self.tag = tag or owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any], what: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.tag}:{what}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: task %s failed", self.owner, task.get_name(), exc_info=task.exception())

    async def aclose(self) -> None:
        tasks = set(self._tasks)
        while tasks:
            for task in tasks:
                task.cancel()
            _, tasks = await asyncio.wait(tasks, timeout=self.STOP_TIMEOUT_S)
            for task in tasks:
                log.error("%s: %s ignored its cancel; cancelling again", self.owner, task.get_name())
