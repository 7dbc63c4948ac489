"""When a viewer's packets really leave, against their timestamps: the A/V offset that viewer gets.

aiortc turns a packet's pts into its RTP timestamp and, in its RTCP sender reports, pairs the
last RTP timestamp it sent with the wall time it sent it. A receiver that keeps lip-sync (every
browser) lines audio and video up through those reports, so it plays together what the sender
sent together, each stream shifted by how late it was sent. SendTiming records, for each packet
a viewer's track hands to aiortc, its lateness: the clock now minus the packet's pts in seconds.
The A/V offset is the audio's median lateness minus the video's over the last WINDOW_S seconds:
positive when the voice is behind the picture.

It is measured, not derived: it moves when either stream leaves late (a slow encoder, a stalled
queue, a program re-based), which the program's own audio and video positions, two readings of
one counter, never show. The constant part includes what really delays audio against video: the
Opus encoder's look-ahead (its packets' pts are 312 samples, 6.5 ms, before the input's) and
the H.264 encode time. tests/test_av_offset.py checks it against what an aiortc viewer works
out from the RTP timestamps and sender reports it receives.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from statistics import median
from typing import Any

import av

WINDOW_S = 5.0
"""The offset is taken over the packets sent in the last this many seconds."""
MIN_PACKETS = 10
"""Packets of each kind in the window before an offset is reported (None before)."""
MAX_SAMPLES = 512
"""Kept per kind: 10 s of Opus (20 ms packets), 20 s of video at 25 fps."""
REFRESH_S = 0.5
"""An offset is worked out at most this often: /healthz, /metrics and the studio page all ask for
every viewer's, and with 100 viewers the medians cost more of the channel's loop than sending."""


class SendTiming:
    """One viewer's send lateness per kind ("audio", "video")."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window_s: float = WINDOW_S) -> None:
        self.clock = clock
        self.window_s = window_s
        self._lateness: dict[str, deque[tuple[float, float]]] = {
            "audio": deque(maxlen=MAX_SAMPLES),
            "video": deque(maxlen=MAX_SAMPLES),
        }
        self._lock = threading.Lock()  # packets are recorded on the send loop, offsets read on the channel's
        self._offset: tuple[float, float | None] = (float("-inf"), None)  # (worked out at, offset)
        self.first_pts_s: dict[str, float] = {}
        """The pts (seconds on the channel's timeline) of the first packet of each kind sent: what a
        receiver needs to pair its first RTP timestamps with the timeline."""

    def sent(self, kind: str, packet: av.Packet) -> None:
        """`packet` is being handed to aiortc to send now."""
        if packet.pts is None or packet.time_base is None:
            return
        pts_s = float(packet.pts * packet.time_base)
        now = self.clock()
        self.first_pts_s.setdefault(kind, pts_s)
        with self._lock:
            self._lateness[kind].append((now, now - pts_s))

    def _recent(self, kind: str, since: float) -> list[float]:
        samples = self._lateness[kind]
        with self._lock:
            while samples and samples[0][0] < since:  # sent in time order: the old ones are at the left
                samples.popleft()
            return [late for _, late in samples]

    def offset_s(self) -> float | None:
        """Audio's lateness minus video's over the window (seconds); None until both have enough packets."""
        now = self.clock()
        if now - self._offset[0] < REFRESH_S:
            return self._offset[1]
        since = now - self.window_s
        audio, video = self._recent("audio", since), self._recent("video", since)
        offset = None if len(audio) < MIN_PACKETS or len(video) < MIN_PACKETS else median(audio) - median(video)
        self._offset = (now, offset)
        return offset

    def to_json(self) -> dict[str, Any]:
        offset = self.offset_s()
        return {
            "av_offset_ms": None if offset is None else round(offset * 1000, 1),
            "first_pts_s": dict(self.first_pts_s),  # set once per kind, read after
        }


def median_offset_ms(timings: list[SendTiming]) -> float | None:
    """The median A/V offset over viewers that have one (ms), None when none has."""
    offsets = [o for o in (t.offset_s() for t in timings) if o is not None]
    return round(median(offsets) * 1000, 1) if offsets else None
