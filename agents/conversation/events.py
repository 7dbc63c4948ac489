"""A channel's live events (captions, speaking state) for pages that listen over SSE.

Every listener has its own bounded queue; a slow page loses its oldest events, it never makes
the channel wait or grow memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

LISTENER_QUEUE = 64
MAX_LISTENERS = 500


class EventHub:
    def __init__(self) -> None:
        self._listeners: set[_Listener] = set()

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def publish(self, event: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            listener.push(event)

    def listen(self) -> _Listener:
        if len(self._listeners) >= MAX_LISTENERS:
            raise OverflowError(f"too many event listeners ({MAX_LISTENERS})")
        listener = _Listener(self)
        self._listeners.add(listener)
        return listener

    def close(self) -> None:
        for listener in list(self._listeners):
            listener.close()


class _Listener:
    def __init__(self, hub: EventHub) -> None:
        self._hub = hub
        self._queue: deque[dict[str, Any] | None] = deque(maxlen=LISTENER_QUEUE)
        self._event = asyncio.Event()

    def push(self, event: dict[str, Any] | None) -> None:
        self._queue.append(event)
        self._event.set()

    def close(self) -> None:
        self.push(None)
        self._hub._listeners.discard(self)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                while self._queue:
                    event = self._queue.popleft()
                    if event is None:
                        return
                    yield event
                self._event.clear()
                await self._event.wait()
        finally:
            self._hub._listeners.discard(self)
