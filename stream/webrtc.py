"""WebRTC viewers of one channel: SDP offer in, answer out, shared packets to every peer.

Each viewer gets its own aiortc tracks, but their recv() returns the channel encoder's packets:
aiortc only packetises them (H264Encoder.pack / OpusEncoder.pack) and never opens an encoder of
its own for them. Three aiortc details this relies on (notes/fanout.md):

- the server's transceivers are added, with H.264 preferred, BEFORE setRemoteDescription, so
  the answer picks H.264 whatever order the offer lists codecs in (a VP8 sender would "pack"
  H.264 bytes as VP8);
- a viewer's picture-loss request (PLI/FIR) only reaches aiortc's private `_send_keyframe`;
  it is re-pointed at the shared encoder, rate-limited there;
- aiortc's default ICE server is Google's public STUN: ICE servers come from config, none by
  default.

The peers live on the process's send loop (stream/send_loop.py), not on the channel's: answer()
is awaited from the channel's loop and hops there; what the channel needs back (keyframe requests,
microphone frames, a viewer leaving) hops back with call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aioice.ice
import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from stream.encoder import ChannelEncoder
from stream.fanout import PacketFanout, PacketQueue
from stream.send_loop import CrossLoopFanout, SendLoop, shared_send_loop
from stream.send_timing import SendTiming, median_offset_ms

log = logging.getLogger(__name__)

MAX_SDP_BYTES = 64 * 1024
VIDEO_QUEUE = 8  # packets, ~320 ms at 25 fps
AUDIO_QUEUE = 5  # Opus packets, ~100 ms
CONNECT_TIMEOUT_S = 30.0

_original_host_addresses = aioice.ice.get_host_addresses


def restrict_host_candidates(addresses: Sequence[str] | None) -> None:
    """Offer only these local addresses as ICE host candidates (None: every interface).

    aioice leaves loopback out of its host candidates; a server that only listens on 127.0.0.1
    (the demo, the tests) must offer 127.0.0.1 and nothing else.
    """
    if addresses is None:
        aioice.ice.get_host_addresses = _original_host_addresses
        return
    v4 = [a for a in addresses if ":" not in a]
    v6 = [a for a in addresses if ":" in a]

    def host_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
        return (v4 if use_ipv4 else []) + (v6 if use_ipv6 else [])

    aioice.ice.get_host_addresses = host_addresses


class OfferError(ValueError):
    """An offer this server cannot answer; the message is safe to show to the viewer."""


class FanoutTrack(MediaStreamTrack):
    """A viewer's outgoing track: a bounded queue on the channel's shared packet stream.

    It subscribes at its first recv(), i.e. when aiortc starts sending after DTLS is up, so
    nothing piles up while ICE and DTLS are still being negotiated.
    """

    def __init__(
        self,
        kind: str,
        fanout: PacketFanout,
        maxlen: int,
        on_lag: Callable[[str], None] | None,
        timing: SendTiming,
    ) -> None:
        super().__init__()
        self.kind = kind
        self._fanout = fanout
        self.queue = PacketQueue(kind, maxlen, on_lag)
        self.timing = timing
        self._subscribed = False

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        if not self._subscribed:
            self._subscribed = True
            self._fanout.subscribe(self.queue)
        try:
            packet = await self.queue.get()
        except EOFError:
            raise MediaStreamError from None
        self.timing.sent(self.kind, packet)  # aiortc packs and sends it now
        return packet

    def stop(self) -> None:
        super().stop()
        self._fanout.unsubscribe(self.queue)
        self.queue.close()


@dataclass
class Viewer:
    id: str
    pc: RTCPeerConnection
    tracks: list[FanoutTrack] = field(default_factory=list)
    timing: SendTiming = field(default_factory=SendTiming)
    plis: int = 0
    mic_frames: int = 0
    consumers: list[asyncio.Task] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.pc.connectionState


def _codecs(kind: str, mimes: Sequence[str]) -> list:
    caps = RTCRtpSender.getCapabilities(kind).codecs
    out = [c for m in mimes for c in caps if c.mimeType.lower() == m.lower()]
    # the encoder writes Constrained Baseline (profile-level-id 42e01f): offer that entry first
    out.sort(key=lambda c: c.parameters.get("profile-level-id", "42e01f") != "42e01f")
    return out


def _media_sections(sdp: str) -> list[tuple[str, str]]:
    """(kind, direction) of each m= section of an offer, in order."""
    out: list[tuple[str, str]] = []
    for section in re.split(r"^(?=m=)", sdp, flags=re.M)[1:]:
        kind = section[2:].split(" ", 1)[0]
        direction = next(
            (d for d in ("sendrecv", "sendonly", "recvonly", "inactive") if f"a={d}" in section), "sendrecv"
        )
        out.append((kind, direction))
    return out


class WebRTCEndpoint:
    """Answers viewers' offers for one channel and keeps their peer connections (on the send loop)."""

    def __init__(
        self,
        encoder: ChannelEncoder,
        *,
        ice_servers: Sequence[RTCIceServer] = (),
        on_mic: Callable[[str, av.AudioFrame], None] | None = None,
        on_leave: Callable[[str], None] | None = None,
        max_viewers: int = 200,
        name: str = "",
        send: SendLoop | None = None,
    ) -> None:
        self.encoder = encoder
        self.ice_servers = list(ice_servers)
        self.on_mic = on_mic
        self.on_leave = on_leave
        self.max_viewers = max_viewers
        self.name = name
        self.send = send or shared_send_loop()
        self.viewers: dict[str, Viewer] = {}
        """Written on the send loop only; other threads read it through list()/len()/in."""
        self._ids = itertools.count(1)
        self._channel_loop: asyncio.AbstractEventLoop | None = None
        self._streams: dict[str, CrossLoopFanout] = {}

    def subscribers(self, kind: str) -> int:
        """Viewer tracks receiving this channel's video ("video") or Opus ("audio") now."""
        stream = self._streams.get(kind)
        return stream.mirror.subscribers if stream else 0

    def _to_channel(self, fn: Callable[..., object], *args: object) -> None:
        assert self._channel_loop is not None
        self._channel_loop.call_soon_threadsafe(fn, *args)

    def _ask_keyframe(self, reason: str) -> None:
        """From the send loop: the channel's encoder makes an IDR (it rate-limits them)."""
        self._to_channel(self.encoder.request_keyframe, reason)

    async def answer(self, sdp: object, type_: object) -> tuple[str, str]:
        """An SDP offer -> (answer SDP, viewer id). Raises OfferError for anything unusable.

        Awaited on the channel's loop (whose encoder feeds the viewers)."""
        if type_ != "offer":
            raise OfferError(f"expected an SDP of type 'offer', got {type_!r}")
        if not isinstance(sdp, str) or not sdp.startswith("v=0"):
            raise OfferError("the offer is not SDP text (it must start with 'v=0')")
        if len(sdp) > MAX_SDP_BYTES:
            raise OfferError(f"the offer is {len(sdp)} bytes; at most {MAX_SDP_BYTES} are accepted")
        sections = _media_sections(sdp)
        if not any(kind == "video" for kind, _ in sections):
            raise OfferError("the offer has no video section; add a recvonly video transceiver")
        if not re.search(r"^a=rtpmap:\d+ H264/90000", sdp, flags=re.M | re.I):
            raise OfferError("the offer has no H.264 video; this server sends H.264 only")
        if not self._streams:  # the first offer: the channel's packets start crossing to the send loop
            self._channel_loop = asyncio.get_running_loop()
            video = CrossLoopFanout(self.encoder.video, self.send, self._channel_loop, self.encoder.request_keyframe)
            self._streams = {"video": video, "audio": CrossLoopFanout(self.encoder.opus, self.send, self._channel_loop)}
        return await self.send.run(self._open(sdp, sections))

    async def _open(self, sdp: str, sections: list[tuple[str, str]]) -> tuple[str, str]:
        """On the send loop: the viewer's peer connection, its tracks, the answer."""
        if len(self.viewers) >= self.max_viewers:
            raise OfferError(f"channel {self.name} is full ({self.max_viewers} viewers)")
        viewer = Viewer(f"v{next(self._ids)}", RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers)))
        self.viewers[viewer.id] = viewer
        try:
            self._add_tracks(viewer, sections)
            await viewer.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await viewer.pc.setLocalDescription(await viewer.pc.createAnswer())
        except asyncio.CancelledError:  # the asker went away: no half-made peer stays behind
            await self._drop(viewer)
            raise
        except Exception as exc:
            await self._drop(viewer)
            raise OfferError(f"the offer could not be answered: {type(exc).__name__}: {exc}") from exc
        viewer.consumers.append(asyncio.create_task(self._expire_unconnected(viewer)))
        log.info("channel %s: viewer %s joined (%d viewers)", self.name, viewer.id, len(self.viewers))
        return viewer.pc.localDescription.sdp, viewer.id

    def _add_tracks(self, viewer: Viewer, sections: list[tuple[str, str]]) -> None:
        pc = viewer.pc
        seen: set[str] = set()
        for kind, direction in sections:
            if kind in seen or kind not in ("audio", "video"):
                continue
            seen.add(kind)
            if kind == "video":
                video = self._streams["video"]
                track = FanoutTrack("video", video.mirror, VIDEO_QUEUE, self._ask_keyframe, viewer.timing)
                transceiver = pc.addTransceiver(track, direction="sendonly")
                transceiver.setCodecPreferences(_codecs("video", ["video/H264", "video/rtx"]))
                sender = transceiver.sender

                def on_picture_loss(viewer: Viewer = viewer) -> None:
                    viewer.plis += 1
                    self._ask_keyframe("pli")

                sender._send_keyframe = on_picture_loss  # aiortc calls this on PLI and FIR
            else:
                track = FanoutTrack("audio", self._streams["audio"].mirror, AUDIO_QUEUE, None, viewer.timing)
                mic = direction in ("sendrecv", "sendonly")
                transceiver = pc.addTransceiver(track, direction="sendrecv" if mic else "sendonly")
                transceiver.setCodecPreferences(_codecs("audio", ["audio/opus"]))
            viewer.tracks.append(track)

        @pc.on("track")
        def on_track(remote: MediaStreamTrack) -> None:
            viewer.consumers.append(asyncio.create_task(self._consume(viewer, remote)))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._drop(viewer)

    def av_offset_ms(self) -> float | None:
        """The A/V offset the connected viewers get, measured as their packets leave (median over
        viewers, ms; stream/send_timing.py). None without viewers."""
        return median_offset_ms([v.timing for v in list(self.viewers.values()) if v.state == "connected"])

    def sync(self) -> dict[str, dict]:
        """Each viewer's measured A/V offset and the timeline pts of its first packets."""
        return {v.id: v.timing.to_json() for v in list(self.viewers.values())}

    async def _consume(self, viewer: Viewer, remote: MediaStreamTrack) -> None:
        """Every received track gets a reader (an unread track grows without bound)."""
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await remote.recv()
                if remote.kind == "audio":
                    viewer.mic_frames += 1
                    if self.on_mic is not None:
                        self._to_channel(self.on_mic, viewer.id, frame)

    async def _expire_unconnected(self, viewer: Viewer) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT_S)
        if viewer.state != "connected":
            log.info("channel %s: viewer %s did not connect in %.0f s", self.name, viewer.id, CONNECT_TIMEOUT_S)
            await self._drop(viewer)

    async def _drop(self, viewer: Viewer) -> None:
        if self.viewers.pop(viewer.id, None) is None:
            return
        for track in viewer.tracks:
            track.stop()
        current = asyncio.current_task()
        for task in viewer.consumers:
            if task is not current:
                task.cancel()
        await viewer.pc.close()
        if self.on_leave is not None:
            self._to_channel(self.on_leave, viewer.id)
        log.info("channel %s: viewer %s left (%d viewers)", self.name, viewer.id, len(self.viewers))

    async def aclose(self) -> None:
        await self.send.run(self._drop_all())
        for stream in self._streams.values():
            stream.close()

    async def _drop_all(self) -> None:
        await asyncio.gather(*(self._drop(v) for v in list(self.viewers.values())), return_exceptions=True)
