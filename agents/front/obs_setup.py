"""`avatarcast obs setup -c CONFIG`: put every channel of CONFIG into the streamer's OBS.

The sources play from the studio (its MPEG-TS streams or its pages), so the studio must be
serving first; the command checks that OBS will find something there before it touches OBS.
What it does per channel is printed; a second run changes nothing. The same setup runs at
start, and again whenever OBS comes back, with `obs.setup_at_start` (obs_link()).
"""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agents.config import ChannelConfig, StudioConfig, load_config
from agents.config.outputs import ObsConfig
from agents.errors import UserError
from stream.obs import ChannelSource, ObsError, ObsLink, ObsSetup, connect

TS_SYNC = 0x47
"""The first byte of every MPEG-TS packet."""


def studio_url(cfg: StudioConfig) -> str:
    """Where OBS reaches the studio: obs.studio_url, else the studio's own address."""
    if cfg.obs is not None and cfg.obs.studio_url:
        return cfg.obs.studio_url.rstrip("/")
    host = cfg.server.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"  # OBS on this machine; OBS elsewhere needs obs.studio_url
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.server.port}"


def channel_sources(cfg: StudioConfig, channels: Iterable[ChannelConfig] | None = None) -> list[ChannelSource]:
    """One source per channel: those of `cfg`, or `channels` (the ones on air, added at run time too)."""
    from agents.worker.media import CHROMA_COLOURS  # here: it loads the media stack, `--help` need not

    base = studio_url(cfg)
    return [
        ChannelSource(
            channel=ch.name,
            page_url=f"{base}/c/{ch.name}",
            stream_url=f"{base}/c/{ch.name}/stream.ts",
            width=ch.video.width,
            height=ch.video.height,
            chroma=CHROMA_COLOURS.get(ch.avatar.background),
        )
        for ch in (cfg.channels if channels is None else channels)
    ]


def obs_link(cfg: StudioConfig, channels: Iterable[ChannelConfig] | None = None) -> ObsLink | None:
    """The link `avatarcast serve` keeps to OBS when obs.setup_at_start is on (else None).

    `channels`: those on air (a source for a channel that did not make it would only retry).
    """
    obs = cfg.obs
    if obs is None or not obs.setup_at_start:
        return None
    password = obs.password.reveal() if obs.password else None
    return ObsLink(obs.host, obs.port, password, obs.scene, channel_sources(cfg, channels), obs.source)


def check_studio_serving(sources: list[ChannelSource], timeout_s: float = 5.0) -> None:
    """Raise ObsError unless every channel's stream answers with MPEG-TS at its URL."""
    for source in sources:
        url = source.stream_url
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                first = response.read(1)
        except urllib.error.HTTPError as exc:
            raise ObsError(
                f"{url} answered {exc.code}: channel {source.channel!r} is not on air there; "
                "fix: serve this same config (avatarcast serve -c CONFIG), or point obs.studio_url at it"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ObsError(
                f"the studio is not serving at {url} ({reason}); OBS plays the channels from it; "
                "fix: start it first with `avatarcast serve -c CONFIG`, or set obs.studio_url to where it runs"
            ) from None
        if first[:1] != bytes([TS_SYNC]):
            raise ObsError(f"{url} did not send MPEG-TS; fix: point obs.studio_url at the avatarcast studio")


def run_setup(cfg: StudioConfig, say: Any = print) -> bool:
    """Set up OBS for every channel of `cfg`; False when a channel failed. Raises ObsError."""
    obs_cfg = cfg.obs or ObsConfig()
    sources = channel_sources(cfg)
    check_studio_serving(sources)
    password = obs_cfg.password.reveal() if obs_cfg.password else None
    client = connect(obs_cfg.host, obs_cfg.port, password)
    try:
        version = client.send("GetVersion", raw=True)
        setup = ObsSetup(client)
        say(
            f"OBS {version['obsVersion']} (obs-websocket {version['obsWebSocketVersion']}) at "
            f"{obs_cfg.host}:{obs_cfg.port}, scene '{obs_cfg.scene}'"
        )
        results = setup.apply(obs_cfg.scene, sources, obs_cfg.source)
    finally:
        client.disconnect()
    for result in results:
        say(f"  {result.summary()}")
    return all(r.error is None for r in results)


def cmd_obs_setup(args: argparse.Namespace) -> None:
    cfg = load_config(Path(args.config))
    try:
        ok = run_setup(cfg)
    except ObsError as exc:
        raise UserError(str(exc)) from None
    if not ok:
        raise UserError("OBS refused some of the channels (see above); the others are set up")


def register(subparsers: Any) -> None:
    """Add `obs setup` to the avatarcast command line."""
    obs = subparsers.add_parser("obs", help="OBS Studio (obs-websocket v5)")
    commands = obs.add_subparsers(dest="obs_command", required=True)
    setup = commands.add_parser("setup", help="put one source per channel into an OBS scene (idempotent)")
    setup.add_argument("-c", "--config", required=True)
    setup.set_defaults(func=cmd_obs_setup)
