"""A channel's broadcast outputs besides its WebRTC viewers: RTMP ingests and a recording.

All of them take the packets of the channel's one encoder; none encodes again. Each RTMP
output runs on its own (a dead ingest never touches the channel or the other outputs) and
reports its state for the page, /metrics and the logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from agents.config.outputs import OutputsConfig
from stream.encoder import ChannelEncoder
from stream.mp4 import Mp4Writer
from stream.rtmp import RtmpOutput

log = logging.getLogger(__name__)


def recording_path(template: str, channel: str, now: float | None = None) -> Path:
    """`record:` with {channel} and {time} (local time, YYYYmmdd-HHMMSS) filled in."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return Path(template.replace("{channel}", channel).replace("{time}", stamp))


class ChannelOutputs:
    def __init__(self, cfg: OutputsConfig, encoder: ChannelEncoder, name: str) -> None:
        self.cfg = cfg
        self.encoder = encoder
        self.name = name
        self.rtmp = [
            RtmpOutput(
                encoder,
                target.url,
                target.key.reveal() if target.key else None,
                name=name,
                backoff_s=(1.0, cfg.reconnect_max_s),
            )
            for target in cfg.rtmp
        ]
        self.recording: Mp4Writer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Begin recording and pushing (call on the event loop once the channel is on air)."""
        if self.cfg.record:
            path = recording_path(self.cfg.record, self.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            # fragmented: a recording cut short (a crash, a power loss) still plays up to its last second
            self.recording = Mp4Writer(path, self.encoder, fragmented=True)
            log.info("channel %s: recording to %s", self.name, path)
        for output in self.rtmp:
            self._tasks.append(asyncio.create_task(output.run(), name=f"{self.name}:rtmp"))
            log.info("channel %s: pushing to %s", self.name, output.label)

    def info(self) -> list[dict[str, Any]]:
        out = [o.info() for o in self.rtmp]
        if self.recording is not None:
            out.append({"kind": "record", "path": str(self.recording.path), "video_frames": self.recording.frames})
        return out

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.recording is not None:
            self.recording.close()
