"""Config of a channel's broadcast outputs (RTMP, recording, captions) and of the OBS link."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from agents.config.base import ConfigModel
from agents.config.secrets import SecretRef


class RtmpTarget(ConfigModel):
    url: str
    """The ingest without the key, e.g. rtmp://live.twitch.tv/app or rtmp://a.rtmp.youtube.com/live2."""
    key: SecretRef | None = None
    """The stream key: env:NAME or file:PATH; appended to `url` as its last path part."""

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not re.match(r"^rtmps?://[^/\s]+(/\S*)?$", url):
            raise ValueError("not an RTMP URL; fix: rtmp://HOST[:PORT]/APP (put the stream key in `key`)")
        return url


class OutputsConfig(ConfigModel):
    rtmp: list[RtmpTarget] = []
    """RTMP ingests the channel is pushed to (H.264 + AAC from the channel's one encoder)."""
    record: str | None = None
    """Write the program to this MP4 file while on air; {channel} and {time} are filled in."""
    burn_in_captions: bool = False
    """Draw the spoken words into the picture (every output shows them)."""
    reconnect_max_s: float = Field(10.0, ge=1.0, le=300.0)
    """An RTMP output retries after 1 s, 2 s, 4 s ... up to this long between tries."""


class ObsConfig(ConfigModel):
    host: str = "127.0.0.1"
    port: int = Field(4455, ge=1, le=65535)
    password: SecretRef | None = None
    """obs-websocket's password (Tools > WebSocket Server Settings): env:NAME or file:PATH."""
    scene: str = Field("avatarcast", min_length=1, max_length=100)
    """The scene the channel sources go into (made if missing)."""
    studio_url: str | None = None
    """How OBS reaches this studio; default http://<server.host>:<server.port>."""
    source: Literal["auto", "browser", "media"] = "auto"
    """auto: a Browser Source when OBS has obs-browser, else a Media Source on the channel's MPEG-TS stream."""
    setup_at_start: bool = False
    """`avatarcast serve` puts the sources in OBS at start, and again whenever OBS comes back."""
