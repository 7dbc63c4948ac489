"""A client of the studio's public port, for tests of worker processes: /healthz, posts, the event stream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp


async def health(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as response:
        assert response.status == 200
        return await response.json()


async def health_until(url: str, wanted: Callable[[dict[str, Any]], bool], what: str, limit_s: float = 20.0) -> None:
    """Until `wanted(/healthz)` holds (checked every 100 ms)."""
    deadline = time.monotonic() + limit_s
    while not wanted(await health(url)):
        assert time.monotonic() < deadline, f"timed out after {limit_s} s waiting for {what}"
        await asyncio.sleep(0.1)


async def post(url: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(f"{url}{path}", json=body) as response:
        return response.status, await response.json()


async def listen(url: str, channel: str, wanted: Any, limit_s: float) -> asyncio.Task[list[dict[str, Any]]]:
    """Open the channel's event stream (through the front) and return once the server has it (its
    `: connected` line); the task reads on until `wanted(events)` holds and gives the events."""
    connected = asyncio.Event()
    reading = asyncio.create_task(_events_until(url, channel, wanted, limit_s, connected))
    waiting = asyncio.create_task(connected.wait())
    await asyncio.wait({reading, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if reading.done():
        reading.result()  # the stream failed or ended before it was connected: raise why
    return reading


async def _events_until(
    url: str, channel: str, wanted: Any, limit_s: float, connected: asyncio.Event
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with (
        asyncio.timeout(limit_s),
        aiohttp.ClientSession() as http,
        http.get(f"{url}/c/{channel}/events") as response,
    ):
        async for raw in response.content:
            if raw.startswith(b": connected"):
                connected.set()
            elif raw.startswith(b"data: "):
                seen.append(json.loads(raw[6:]))
                if wanted(seen):
                    return seen
    return seen
