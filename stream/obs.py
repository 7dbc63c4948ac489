"""Put channels into the streamer's own OBS over obs-websocket v5 (obsws-python), and keep them there.

One input per channel, named "avatarcast <channel>", in one scene. It is a Browser Source on
the channel's page when OBS has obs-browser; otherwise (Debian's OBS has none) a Media Source
playing the channel's MPEG-TS stream (stream/ts_stream.py), so OBS needs no other server.
Setting up is idempotent: it compares what OBS has with what it should have and changes only
the difference, so running it twice changes nothing, and it never moves or resizes a source
the streamer arranged. A chroma background gets OBS's Chroma Key filter in the same colour.

obsws-python is synchronous (websocket-client): every call here blocks, so ObsLink runs them
in a thread. obsws-python 1.8 logs the password at INFO when it connects; its logger is
silenced (ObsError says what went wrong) so that no password reaches a log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import obsws_python as obs
import websocket
from obsws_python.error import OBSSDKError, OBSSDKRequestError

log = logging.getLogger(__name__)
logging.getLogger("obsws_python").setLevel(logging.CRITICAL)

CHROMA_FILTER = "avatarcast chroma key"
BROWSER_KIND = "browser_source"
MEDIA_KIND = "ffmpeg_source"
SourceMode = Literal["auto", "browser", "media"]
_LINK_ERRORS = (OSError, websocket.WebSocketException, OBSSDKError)


class ObsError(RuntimeError):
    """OBS cannot be reached, refused us, or cannot do what is asked; str() says what to fix."""


@dataclass(frozen=True)
class ChannelSource:
    """What OBS should show for one channel."""

    channel: str
    page_url: str
    """The channel's page, for a Browser Source."""
    stream_url: str
    """The channel's MPEG-TS stream, for a Media Source."""
    width: int
    height: int
    chroma: tuple[int, int, int] | None = None
    """RGB of the channel's flat background, keyed out by OBS; None: keep the picture as it is."""

    @property
    def input_name(self) -> str:
        return f"avatarcast {self.channel}"

    def settings(self, kind: str) -> dict[str, Any]:
        if kind == BROWSER_KIND:
            return {"url": self.page_url, "width": self.width, "height": self.height, "reroute_audio": True}
        # Low latency: FFmpeg's default probing buffers ~1.5 s that OBS then plays behind live for
        # good (measured 1.5 s glass-to-glass; 0.37 s with these options, audio still found).
        # No network buffer, reconnect after 1 s, keep playing when not on screen.
        return {
            "is_local_file": False,
            "input": self.stream_url,
            "input_format": "mpegts",
            "ffmpeg_options": "fflags=nobuffer analyzeduration=0 probesize=32",
            "buffering_mb": 0,
            "reconnect_delay_sec": 1,
            "restart_on_activate": False,
            "close_when_inactive": False,
            "clear_on_media_end": False,
            "hw_decode": False,
        }

    def chroma_settings(self) -> dict[str, Any] | None:
        if self.chroma is None:
            return None
        r, g, b = self.chroma
        # OBS colours are 0xBBGGRR. OBS's similarity 400 is tuned for pure green (0, 255, 0); around a
        # broadcast green like (0, 177, 64) it eats skin tones too (measured: a face kept 2% alpha).
        # 200 keys the flat background, H.264 noise included, and leaves every face colour opaque.
        return {"key_color_type": "custom", "key_color": (b << 16) | (g << 8) | r, "similarity": 200, "smoothness": 50}


@dataclass
class ChannelResult:
    """What setting up one channel did; `changes` is empty when OBS already had it right."""

    channel: str
    input_name: str
    kind: str
    changes: list[str] = field(default_factory=list)
    error: str | None = None

    def summary(self) -> str:
        if self.error:
            return f"{self.channel}: FAILED — {self.error}"
        what = "; ".join(self.changes) if self.changes else "already set up, nothing changed"
        return f"{self.channel}: {self.kind} '{self.input_name}' — {what}"


def connect(host: str, port: int, password: str | None, timeout_s: float = 5.0) -> obs.ReqClient:
    """A connected, identified client; raises ObsError naming the fix."""
    where = f"obs-websocket at {host}:{port}"
    try:
        return obs.ReqClient(host=host, port=port, password=password or "", timeout=timeout_s)
    except (OSError, websocket.WebSocketException) as exc:
        raise ObsError(
            f"cannot reach {where} ({type(exc).__name__}: {exc}); fix: start OBS, tick Tools > WebSocket "
            "Server Settings > Enable WebSocket server, and check obs.host and obs.port"
        ) from None
    except OBSSDKError:
        if not password:
            raise ObsError(
                f"{where} asks for a password; fix: set obs.password to env:NAME (export NAME=the password "
                "from Tools > WebSocket Server Settings > Show Connect Info)"
            ) from None
        raise ObsError(
            f"{where} refused the password; fix: make obs.password hold the password shown in OBS under "
            "Tools > WebSocket Server Settings > Show Connect Info"
        ) from None


class ObsSetup:
    """Brings one connected OBS in line with the channels it should show."""

    def __init__(self, client: obs.ReqClient) -> None:
        self.client = client
        self._defaults: dict[str, dict[str, Any]] = {}

    def _send(self, request: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.client.send(request, data, raw=True) or {}

    def input_kind(self, mode: SourceMode) -> str:
        kinds = self._send("GetInputKindList", {"unversioned": True})["inputKinds"]
        if mode == "browser" and BROWSER_KIND not in kinds:
            raise ObsError(
                "this OBS has no Browser Source (obs-browser is not installed; Debian's OBS has none); "
                "fix: set obs.source to media or auto"
            )
        return BROWSER_KIND if mode != "media" and BROWSER_KIND in kinds else MEDIA_KIND

    def apply(self, scene: str, sources: Sequence[ChannelSource], mode: SourceMode = "auto") -> list[ChannelResult]:
        """Make `scene` hold exactly one input per channel, with the right settings and filters."""
        kind = self.input_kind(mode)
        scenes = [s["sceneName"] for s in self._send("GetSceneList")["scenes"]]
        created_scene = scene not in scenes
        if created_scene:
            self._send("CreateScene", {"sceneName": scene})
        results = []
        for source in sources:
            result = ChannelResult(source.channel, source.input_name, kind)
            if created_scene and not results:
                result.changes.append(f"created scene '{scene}'")
            try:
                self._apply_one(scene, source, kind, result)
            except OBSSDKRequestError as exc:  # this channel only: the others still get set up
                result.error = f"OBS refused: {exc}"
            results.append(result)
        return results

    def _apply_one(self, scene: str, source: ChannelSource, kind: str, result: ChannelResult) -> None:
        name = source.input_name
        inputs = {i["inputName"]: i for i in self._send("GetInputList")["inputs"]}
        existing = inputs.get(name)
        wanted = source.settings(kind)
        if existing is not None and existing["unversionedInputKind"] != kind:
            self.remove(name)
            result.changes.append(f"removed the old {existing['unversionedInputKind']}")
            existing = None
        if existing is None:
            self._send(
                "CreateInput",
                {
                    "sceneName": scene,
                    "inputName": name,
                    "inputKind": kind,
                    "inputSettings": wanted,
                    "sceneItemEnabled": True,
                },
            )
            result.changes.append(f"created it on {wanted.get('url') or wanted.get('input')}")
        else:
            have = {
                **self._default_settings(kind),
                **self._send("GetInputSettings", {"inputName": name})["inputSettings"],
            }
            differ = sorted(k for k, v in wanted.items() if have.get(k) != v)
            if differ:
                self._send("SetInputSettings", {"inputName": name, "inputSettings": wanted, "overlay": True})
                result.changes.append(f"updated {', '.join(differ)}")
        items = [
            i for i in self._send("GetSceneItemList", {"sceneName": scene})["sceneItems"] if i["sourceName"] == name
        ]
        if not items:
            self._send("CreateSceneItem", {"sceneName": scene, "sourceName": name, "sceneItemEnabled": True})
            result.changes.append(f"added to scene '{scene}'")
        for extra in items[1:]:
            self._send("RemoveSceneItem", {"sceneName": scene, "sceneItemId": extra["sceneItemId"]})
            result.changes.append("removed a duplicate from the scene")
        self._apply_chroma(source, result)

    def _apply_chroma(self, source: ChannelSource, result: ChannelResult) -> None:
        name, wanted = source.input_name, source.chroma_settings()
        filters = self._send("GetSourceFilterList", {"sourceName": name})["filters"]
        ours = next((f for f in filters if f["filterName"] == CHROMA_FILTER), None)
        if wanted is None:
            if ours is not None:
                self._send("RemoveSourceFilter", {"sourceName": name, "filterName": CHROMA_FILTER})
                result.changes.append("removed the chroma key")
            return
        colour = "#{:02x}{:02x}{:02x}".format(*source.chroma)  # type: ignore[str-format]
        if ours is None:
            self._send(
                "CreateSourceFilter",
                {
                    "sourceName": name,
                    "filterName": CHROMA_FILTER,
                    "filterKind": "chroma_key_filter_v2",
                    "filterSettings": wanted,
                },
            )
            result.changes.append(f"added a chroma key on {colour}")
        elif any(ours["filterSettings"].get(k) != v for k, v in wanted.items()):
            self._send(
                "SetSourceFilterSettings",
                {"sourceName": name, "filterName": CHROMA_FILTER, "filterSettings": wanted, "overlay": True},
            )
            result.changes.append(f"set the chroma key to {colour}")

    def remove(self, input_name: str) -> bool:
        """Take an input out of OBS; False when it is not there. Out of every scene first: OBS 29
        answers RemoveInput with success yet keeps an input that scenes still show (measured here);
        the last scene item gone, OBS drops the input itself."""
        if input_name not in self._input_names():
            return False
        for scene in self._send("GetSceneList")["scenes"]:
            for item in self._send("GetSceneItemList", {"sceneName": scene["sceneName"]})["sceneItems"]:
                if item["sourceName"] == input_name:
                    self._send("RemoveSceneItem", {"sceneName": scene["sceneName"], "sceneItemId": item["sceneItemId"]})
        if input_name in self._input_names():  # held elsewhere (a group, a transition)
            self._send("RemoveInput", {"inputName": input_name})
        return True

    def _input_names(self) -> set[str]:
        return {i["inputName"] for i in self._send("GetInputList")["inputs"]}

    def _default_settings(self, kind: str) -> dict[str, Any]:
        if kind not in self._defaults:
            self._defaults[kind] = self._send("GetInputDefaultSettings", {"inputKind": kind})["defaultInputSettings"]
        return self._defaults[kind]


class ObsLink:
    """Keeps the channels in OBS while the studio runs (`obs.setup_at_start`).

    Connects, sets up, then checks the link every `poll_s`; when OBS goes away (closed, crashed,
    restarted) it reconnects with exponential backoff and sets up again, since a restarted OBS
    may have lost what it had not saved. A channel taken off air at run time has its input removed
    (only those: inputs this link never set up are not its to remove). The studio never waits for OBS.
    """

    def __init__(
        self,
        host: str,
        port: int,
        password: str | None,
        scene: str,
        sources: Sequence[ChannelSource],
        mode: SourceMode = "auto",
        *,
        poll_s: float = 2.0,
        backoff_s: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self.host, self.port, self._password = host, port, password
        self.scene = scene
        self.sources = list(sources)
        self.mode: SourceMode = mode
        self.poll_s = poll_s
        self.backoff_s = backoff_s
        self.state = "connecting"
        self.setups = 0
        """How many times the setup was applied (once per connection)."""
        self.last_error: str | None = None
        self.results: list[ChannelResult] = []
        self._client: obs.ReqClient | None = None
        self._changed = False
        self._retired: set[str] = set()
        """Inputs of channels taken off air, still to be removed from OBS."""
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="obs-link")
        """One thread, so the calls on the (not thread-safe) client never overlap."""

    def set_sources(self, sources: Sequence[ChannelSource]) -> None:
        """The channels on air changed (added or removed at run time): OBS follows at the next poll."""
        kept = {s.input_name for s in sources}
        self._retired = (self._retired | {s.input_name for s in self.sources}) - kept
        self.sources = list(sources)
        self._changed = True

    def info(self) -> dict[str, Any]:
        return {
            "kind": "obs",
            "target": f"{self.host}:{self.port}",
            "state": self.state,
            "setups": self.setups,
            "last_error": self.last_error,
        }

    def _connect_and_apply(self) -> list[ChannelResult]:
        self._client = connect(self.host, self.port, self._password)
        try:
            return self._apply()
        except BaseException:
            self._disconnect()
            raise

    def _apply(self) -> list[ChannelResult]:
        assert self._client is not None
        self._changed = False
        setup = ObsSetup(self._client)
        results = setup.apply(self.scene, self.sources, self.mode)
        for name in sorted(self._retired):
            if setup.remove(name):
                log.info("OBS: removed %s (its channel went off air)", name)
            self._retired.discard(name)
        return results

    def _applied(self, results: list[ChannelResult]) -> None:
        self.results = results
        self.setups += 1
        for result in results:
            (log.error if result.error else log.info)("OBS: %s", result.summary())

    def _alive(self) -> bool:
        assert self._client is not None
        try:
            self._client.send("GetVersion", raw=True)
            return True
        except _LINK_ERRORS:
            return False

    async def _still_up(self, loop: asyncio.AbstractEventLoop) -> bool:
        """One cheap request (or the setup again, when the channels changed); False once OBS is gone."""
        if not self._changed:
            return await loop.run_in_executor(self._pool, self._alive)
        try:
            self._applied(await loop.run_in_executor(self._pool, self._apply))
        except (ObsError, *_LINK_ERRORS) as exc:
            self.last_error = str(exc)
            return False
        return True

    def _disconnect(self) -> None:
        if self._client is not None:
            with contextlib.suppress(*_LINK_ERRORS):
                self._client.disconnect()
            self._client = None

    async def run(self) -> None:
        """Until cancelled."""
        loop = asyncio.get_running_loop()
        delay = self.backoff_s[0]
        try:
            while True:
                try:
                    results = await loop.run_in_executor(self._pool, self._connect_and_apply)
                except (ObsError, *_LINK_ERRORS) as exc:
                    self.last_error = str(exc)
                    self.state = "reconnecting"
                    log.warning("OBS link %s:%s: %s; retrying in %.1f s", self.host, self.port, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.backoff_s[1])
                    continue
                self.state, self.last_error, delay = "connected", None, self.backoff_s[0]
                self._applied(results)
                up_since = time.monotonic()
                while True:  # polling: this synchronous client only notices a dead OBS at its next request
                    await asyncio.sleep(self.poll_s)
                    if not await self._still_up(loop):
                        break
                await loop.run_in_executor(self._pool, self._disconnect)
                self.state = "reconnecting"
                lost_after = time.monotonic() - up_since
                log.warning("OBS link %s:%s lost after %.0f s; reconnecting", self.host, self.port, lost_after)
        finally:
            self.state = "stopped"
            self._pool.submit(self._disconnect)  # after any call still running; nothing waits for OBS
            self._pool.shutdown(wait=False)
