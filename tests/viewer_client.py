"""A real aiortc viewer: offers like a browser, decodes what the channel sends, keeps score."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError


@dataclass
class Received:
    video_pts: list[int] = field(default_factory=list)
    video_times: list[float] = field(default_factory=list)
    audio_pts: list[int] = field(default_factory=list)
    audio_rms: list[float] = field(default_factory=list)
    audio_times: list[float] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    first_video: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def video_rate(self, since: float = 0.0) -> float:
        """Frames per second over the frames received after `since` (monotonic time)."""
        times = [t for t in self.video_times if t >= since]
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


class AiortcViewer:
    def __init__(
        self,
        base_url: str,
        channel: str,
        crop: tuple[int, int, int, int] | None = None,
        mic: MediaStreamTrack | None = None,
    ) -> None:
        """`crop` (x0, y0, x1, y1): keep that region of every decoded frame in `got.frames`.
        `mic`: an audio track to send, as a browser sends its microphone."""
        self.base_url = base_url
        self.channel = channel
        self.crop = crop
        self.mic = mic
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.got = Received()
        self._tasks: list[asyncio.Task] = []
        self.viewer_id: str | None = None

    async def connect(self, limit_s: float = 20) -> None:
        if self.mic is not None:
            self.pc.addTransceiver(self.mic, direction="sendrecv")
        else:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")

        @self.pc.on("track")
        def on_track(track) -> None:  # type: ignore[no-untyped-def]
            self._tasks.append(asyncio.create_task(self._read(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        url = f"{self.base_url}/c/{self.channel}/offer"
        async with aiohttp.ClientSession() as http, http.post(url, json=offer) as res:
            body = await res.json()
            assert res.status == 200, body
        self.viewer_id = body["viewer"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
        await asyncio.wait_for(self.got.first_video.wait(), limit_s)

    async def _read(self, track) -> None:  # type: ignore[no-untyped-def]
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    self.got.video_pts.append(frame.pts)
                    self.got.video_times.append(now)
                    if self.crop is not None:
                        x0, y0, x1, y1 = self.crop
                        self.got.frames.append(frame.to_ndarray(format="gray")[y0:y1, x0:x1].astype(np.float32))
                    self.got.first_video.set()
                else:
                    pcm = frame.to_ndarray().astype(np.float32)
                    self.got.audio_pts.append(frame.pts)
                    self.got.audio_times.append(now)
                    self.got.audio_rms.append(float(np.sqrt((pcm**2).mean())))
                self.got.changed.set()

    async def until(self, done: Callable[[Received], bool], limit_s: float, what: str) -> None:
        """Wait, frame by frame, until `done(received)` holds; fail after `limit_s` seconds."""
        deadline = time.monotonic() + limit_s
        while not done(self.got):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out after {limit_s} s waiting for {what}"
            self.got.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.got.changed.wait(), left)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class ScriptedMic(MediaStreamTrack):
    """A viewer's microphone that is silent until told to say something (48 kHz stereo, 20 ms).

    Paced by pts against its own start time, as aiortc's tracks are.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: list[np.ndarray] = []
        self._pos = 0
        self._start: float | None = None
        self.said_at: list[float] = []  # monotonic time each queued sound began to go out

    def say(self, pcm48k_mono: np.ndarray) -> None:
        self._queue.append(pcm48k_mono.astype(np.int16))

    async def recv(self):  # type: ignore[no-untyped-def]
        import fractions

        import av

        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pos / 48_000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = np.zeros(960, np.int16)
        if self._queue:
            if not getattr(self, "_began", False):
                self.said_at.append(time.monotonic())
                self._began = True
            head = self._queue[0]
            n = min(960, len(head))
            chunk[:n] = head[:n]
            if n == len(head):
                self._queue.pop(0)
                self._began = False
            else:
                self._queue[0] = head[n:]
        frame = av.AudioFrame.from_ndarray(np.repeat(chunk, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = 48_000, self._pos, fractions.Fraction(1, 48_000)
        self._pos += 960
        return frame
