"""Real aiortc viewers in a process of their own, as viewers on other machines would be.

    python -m tests.viewer_process BASE_URL SECONDS CHANNEL [CHANNEL ...]

Connects one viewer per CHANNEL argument (repeat a channel for more viewers), prints "connected"
once every viewer has its first frame, watches for SECONDS, then prints one JSON line: per viewer
its channel, frame arrival times, the mean grey level of each frame's top-left corner and the audio RMS with
arrival times (time.monotonic(), which is the same clock in every process on the machine).
Many viewers decoding in the studio's own process would measure the test's CPU, not the studio's.
"""

from __future__ import annotations

import asyncio
import json
import sys

from stream.webrtc import restrict_host_candidates
from tests.viewer_client import AiortcViewer

CORNER = (0, 0, 48, 48)
"""The region whose grey level is reported: a corner, where the channels' backgrounds differ."""


async def main(base_url: str, seconds: float, channels: list[str]) -> None:
    restrict_host_candidates(["127.0.0.1"])  # loopback candidates, as the studio offers (aioice skips them)
    viewers = [AiortcViewer(base_url, name, crop=CORNER) for name in channels]
    try:
        await asyncio.gather(*(v.connect() for v in viewers))
        print("connected", flush=True)
        await asyncio.sleep(seconds)  # watching for a fixed time is what this process is for
        report = [
            {
                "channel": v.channel,
                "video_times": v.got.video_times,
                "grey": [float(f.mean()) for f in v.got.frames],
                "audio_times": v.got.audio_times,
                "audio_rms": v.got.audio_rms,
            }
            for v in viewers
        ]
        print(json.dumps(report), flush=True)
    finally:
        await asyncio.gather(*(v.close() for v in viewers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3:]))
