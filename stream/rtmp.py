"""Push a channel to an RTMP ingest (Twitch, YouTube, nginx-rtmp) as FLV, from its one encoder.

The output repackages the channel's own H.264 + AAC packets (stream/mux.py); it never encodes.
Connecting and writing block on the network, so they run in the output's own thread, and the
channel never waits for an ingest: while one is down the packets are simply not taken. When
the ingest goes away the output reconnects with exponential backoff; every connection starts
at a fresh IDR with timestamps from zero for audio and video alike, so A/V stay in sync across
reconnects. The stream key never appears in logs, errors or the reported state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections import Counter
from enum import StrEnum
from typing import Any

import av

from stream.encoder import ChannelEncoder
from stream.mux import PacketFeed, TimelineMuxer

log = logging.getLogger(__name__)


class OutputState(StrEnum):
    CONNECTING = "connecting"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


class RtmpOutput:
    """One RTMP destination of one channel; `run()` until cancelled."""

    def __init__(
        self,
        encoder: ChannelEncoder,
        url: str,
        key: str | None = None,
        *,
        name: str = "",
        backoff_s: tuple[float, float] = (1.0, 10.0),
        io_timeout_s: float = 5.0,
    ) -> None:
        self.encoder = encoder
        self._target = f"{url.rstrip('/')}/{key}" if key else url
        self._key = key
        self.label = f"{url.rstrip('/')}/***" if key else url
        """Where it goes, fit for logs and pages: the key is masked."""
        self.name = name
        self.backoff_s = backoff_s
        self.io_timeout_s = io_timeout_s
        self.state = OutputState.CONNECTING
        self.last_error: str | None = None
        self.stats: Counter[str] = Counter()
        self.live_since: float | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"rtmp-{name}")

    def _safe(self, text: str) -> str:
        return text.replace(self._target, self.label).replace(self._key, "***") if self._key else text

    def info(self) -> dict[str, Any]:
        return {
            "kind": "rtmp",
            "target": self.label,
            "state": self.state.value,
            "last_error": self.last_error,
            "live_for_s": round(time.monotonic() - self.live_since, 1) if self.live_since else 0.0,
            **self.stats,
        }

    async def run(self) -> None:
        delay = self.backoff_s[0]
        try:
            while True:
                started = time.monotonic()
                try:
                    await self._session()
                except (av.error.FFmpegError, OSError, EOFError) as exc:
                    self.last_error = self._safe(f"{type(exc).__name__}: {exc}")
                if time.monotonic() - started > 2 * self.backoff_s[1]:
                    delay = self.backoff_s[0]  # it was up for a good while: a fresh outage
                self.state = OutputState.RECONNECTING
                self.live_since = None
                self.stats["failures"] += 1
                log.warning(
                    "channel %s: RTMP output %s lost (%s); retrying in %.1f s",
                    self.name,
                    self.label,
                    self.last_error,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_s[1])
        finally:
            self.state = OutputState.STOPPED
            self.live_since = None
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _session(self) -> None:
        """One connection: open, then mux packets until the ingest fails (raises) or we are cancelled."""
        loop = asyncio.get_running_loop()
        timeout = self.io_timeout_s
        container = await loop.run_in_executor(
            self._pool, lambda: av.open(self._target, "w", format="flv", timeout=(timeout, timeout))
        )
        feed = PacketFeed(self.encoder)  # subscribing asks the encoder for an IDR to start from
        muxer = TimelineMuxer(container, self.encoder)
        self.stats["connects"] += 1
        try:
            while True:
                batch = await feed.get_batch()
                await loop.run_in_executor(self._pool, self._write, muxer, batch)
                if self.state is not OutputState.LIVE and muxer.video_frames:
                    self.state, self.live_since, self.last_error = OutputState.LIVE, time.monotonic(), None
                    log.info("channel %s: RTMP output %s is live", self.name, self.label)
                self.stats["resyncs"] = feed.stats["resyncs"]
        finally:
            feed.close()
            self._pool.submit(self._close, container)

    def _write(self, muxer: TimelineMuxer, batch: list[tuple[str, av.Packet]]) -> None:
        before = muxer.video_frames
        for kind, packet in batch:
            muxer.mux(kind, packet)
        self.stats["video_frames"] += muxer.video_frames - before

    def _close(self, container: Any) -> None:
        with contextlib.suppress(av.error.FFmpegError, OSError):  # a dead ingest: nothing to flush to
            container.close()
