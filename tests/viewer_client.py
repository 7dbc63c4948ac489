"""A real aiortc viewer: offers like a browser, decodes what the channel sends, keeps score."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtcpSrPacket

RTP_RATES = {"audio": 48_000, "video": 90_000}
NTP_FRACTION = 1 << 32


@dataclass
class SenderReports:
    """What one stream's RTCP sender reports said, as this viewer received them, and its first RTP timestamp.

    aiortc's receiver keeps both to itself: the tap wraps its packet handlers (the transport looks
    them up on the receiver object for every packet).
    """

    kind: str
    first_rtp: int | None = None
    reports: list[tuple[float, float, int]] = field(default_factory=list)
    """(arrival, monotonic; sender's wall time of its last sent packet, s; that packet's RTP timestamp)."""

    def tap(self, receiver: RTCRtpReceiver) -> None:
        handle_rtp, handle_rtcp = receiver._handle_rtp_packet, receiver._handle_rtcp_packet

        async def on_rtp(packet, arrival_time_ms: int) -> None:  # type: ignore[no-untyped-def]
            if self.first_rtp is None:
                self.first_rtp = packet.timestamp
            await handle_rtp(packet, arrival_time_ms)

        async def on_rtcp(packet) -> None:  # type: ignore[no-untyped-def]
            info = getattr(packet, "sender_info", None)
            if isinstance(packet, RtcpSrPacket) and info.ntp_timestamp:  # 0: nothing sent yet
                self.reports.append((time.monotonic(), info.ntp_timestamp / NTP_FRACTION, info.rtp_timestamp))
            await handle_rtcp(packet)

        receiver._handle_rtp_packet, receiver._handle_rtcp_packet = on_rtp, on_rtcp

    def lateness(self, first_pts_s: float, since: float = 0.0) -> list[float]:
        """Per report received after `since`: the sender's wall time of the packet it names minus that
        packet's place on the channel's timeline (the first packet's pts, from the channel, plus the
        RTP time since it). Only differences between streams mean anything (the clocks differ)."""
        assert self.first_rtp is not None
        rate = RTP_RATES[self.kind]
        return [
            ntp - (first_pts_s + ((rtp - self.first_rtp) % (1 << 32)) / rate)
            for arrival, ntp, rtp in self.reports
            if arrival >= since
        ]


def av_offset_from_reports(
    audio: SenderReports, video: SenderReports, first_pts_s: dict[str, float], since: float = 0.0
) -> float | None:
    """The A/V offset a lip-syncing receiver plays, audio minus video (s), from the sender reports
    received after `since`; None until each stream has had two."""
    a, v = audio.lateness(first_pts_s["audio"], since), video.lateness(first_pts_s["video"], since)
    if len(a) < 2 or len(v) < 2:
        return None
    return float(np.median(a) - np.median(v))


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
        self.reports = {kind: SenderReports(kind) for kind in RTP_RATES}

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
        for transceiver in self.pc.getTransceivers():
            self.reports[transceiver.kind].tap(transceiver.receiver)
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
