"""A real OBS Studio for tests: Debian's OBS 29 (obs-websocket 5.1) under Xvfb in a fresh HOME.

obs-websocket binds every interface and has no bind-address option, so OBS is only ever
started where the process sees nothing but loopback (`unshare -n`, as `make test` runs the
suite); anywhere else the fixture refuses. The profile is small on purpose (640x360, 10 fps):
OBS renders with llvmpipe on a shared 2-core machine here (notes/real-components.md, section 3).
Also what OBS's Media Source plays: a small aiohttp site on the studio's loop serving the
channels' MPEG-TS streams, and a PyAV player of such a stream.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import obsws_python as obs
import pytest
from aiohttp import web
from obsws_python.error import OBSSDKError
from websocket import WebSocketException

from stream.ts_stream import MpegTsServer

OBS = shutil.which("obs") or "/usr/bin/obs"
XVFB = shutil.which("Xvfb") or "/usr/bin/Xvfb"
PASSWORD = "obs-test-pass-7731"

GLOBAL_INI = """[General]
FirstRun=true
EnableAutoUpdates=false
[Basic]
Profile=avatarcast
ProfileDir=avatarcast
SceneCollection=avatarcast
SceneCollectionFile=avatarcast
[OBSWebSocket]
FirstLoad=false
ServerEnabled=true
ServerPort={port}
AlertsEnabled=false
AuthRequired=true
ServerPassword={password}
"""
PROFILE_INI = """[General]
Name=avatarcast
[Video]
BaseCX=640
BaseCY=360
OutputCX=640
OutputCY=360
FPSType=1
FPSInt={fps}
[Audio]
SampleRate=48000
ChannelSetup=Stereo
"""


def roomy(cfg: Any) -> Any:
    """`cfg` with admission control relaxed: these tests are about outputs, on a box shared with others."""
    return cfg.model_copy(update={"admission": cfg.admission.model_copy(update={"max_loop_lag_ms": 5000.0})})


def outside_interfaces() -> list[str]:
    """Network interfaces besides loopback that this process can see (none inside `unshare -n`)."""
    return [name for _, name in socket.if_nameindex() if name != "lo"]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class ObsStudio:
    """OBS under its own Xvfb display; `start()` in a fresh HOME each time, `stop()` with SIGTERM."""

    def __init__(self, work: Path, port: int, password: str = PASSWORD, fps: int = 10) -> None:
        if outside := outside_interfaces():
            pytest.fail(
                f"refusing to start OBS: obs-websocket listens on every interface and this process sees "
                f"{', '.join(outside)}; run the tests inside `unshare -n` (make test does)"
            )
        if not (os.path.exists(OBS) and os.path.exists(XVFB)):
            pytest.fail("OBS or Xvfb is missing: apt-get install obs-studio xvfb (make system-deps)")
        self.work = work
        self.port = port
        self.password = password
        self.fps = fps
        self.display: str | None = None
        self.xvfb: subprocess.Popen[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _start_xvfb(self) -> None:
        read_fd, write_fd = os.pipe()
        log = (self.work / "xvfb.log").open("ab")
        self.xvfb = subprocess.Popen(
            [XVFB, "-displayfd", str(write_fd), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
            stdout=log,
            stderr=log,
            pass_fds=(write_fd,),
        )
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:  # Xvfb writes the display number it took once it is ready
            number = pipe.readline().strip()
        if not number:
            pytest.fail(f"Xvfb did not start: {(self.work / 'xvfb.log').read_text(errors='replace')[-1000:]}")
        self.display = f":{number}"

    def _fresh_home(self) -> Path:
        home = Path(tempfile.mkdtemp(prefix="home-", dir=self.work))
        config = home / ".config" / "obs-studio"
        (config / "basic" / "profiles" / "avatarcast").mkdir(parents=True)
        (config / "global.ini").write_text(GLOBAL_INI.format(port=self.port, password=self.password))
        (config / "basic" / "profiles" / "avatarcast" / "basic.ini").write_text(PROFILE_INI.format(fps=self.fps))
        return home

    def start(self, limit_s: float = 30) -> None:
        if self.xvfb is None:
            self._start_xvfb()
        home = self._fresh_home()
        env = {**os.environ, "HOME": str(home), "DISPLAY": str(self.display), "LIBGL_ALWAYS_SOFTWARE": "1"}
        self.starts += 1
        log = (self.work / f"obs-{self.starts}.log").open("ab")
        self.proc = subprocess.Popen(
            [OBS, "--minimize-to-tray", "--disable-shutdown-check", "--multi"],
            cwd=home,
            env=env,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + limit_s
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log_text = (self.work / f"obs-{self.starts}.log").read_text(errors="replace")
                pytest.fail(f"OBS did not come up: {log_text[-2000:]}")
            if _listening(self.port):
                with contextlib.suppress(OSError, WebSocketException, OBSSDKError), self.client(timeout=5) as client:
                    client.get_version()
                    return
            time.sleep(0.1)

    def client(self, password: str | None = None, timeout: float = 10) -> obs.ReqClient:
        return obs.ReqClient(host="127.0.0.1", port=self.port, password=password or self.password, timeout=timeout)

    def stop(self) -> None:
        """SIGTERM: OBS shuts down cleanly and its websocket closes."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        if self.xvfb is not None:
            self.xvfb.terminate()
            self.xvfb.wait(10)
            self.xvfb = None


def input_names(client: obs.ReqClient) -> list[str]:
    """Every input OBS has, in any scene."""
    return [i["inputName"] for i in client.send("GetInputList", raw=True)["inputs"]]


def screenshot(client: obs.ReqClient, source: str, width: int, height: int, alpha: bool = False) -> np.ndarray:
    """GetSourceScreenshot of `source` as uint8 (height, width, 3) RGB, or RGBA with `alpha`."""
    data = client.get_source_screenshot(source, "png", width, height, -1).image_data
    raw = base64.b64decode(data.split(",", 1)[1])
    with av.open(io.BytesIO(raw), format="png_pipe") as png:
        return next(png.decode(video=0)).to_ndarray(format="rgba" if alpha else "rgb24")


class TsSite:
    """The channels' MPEG-TS streams (GET /c/{channel}/stream.ts) on their own port, on the studio's loop."""

    def __init__(self, studio: Any, port: int, **server: Any) -> None:
        self.studio = studio
        self.port = port
        self.ts = MpegTsServer(**server)
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        channel = self.studio.channels[request.match_info["channel"]]
        return await self.ts.serve(request, channel.encoder, channel.name)

    async def start(self) -> TsSite:
        app = web.Application()
        app.router.add_get("/c/{channel}/stream.ts", self._stream)

        async def end_streams(_: web.Application) -> None:
            self.ts.close()

        app.on_shutdown.append(end_streams)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


AUD = b"\x00\x00\x00\x01\x09"
"""An H.264 access unit delimiter: FFmpeg's MPEG-TS muxer puts one in front of every frame."""


@dataclass
class TsReceived:
    video: list[tuple[float, float]] = field(default_factory=list)  # (arrival, pts seconds)
    audio: list[tuple[float, float, float]] = field(default_factory=list)  # (arrival, pts seconds, rms)
    video_payloads: list[bytes] = field(default_factory=list)
    """Each H.264 packet as demuxed, its AUD taken off: what the channel's encoder made."""
    codecs: dict[str, str] = field(default_factory=dict)
    last_image: np.ndarray | None = None
    error: str | None = None


class TsPlayer:
    """Plays an MPEG-TS URL with PyAV in a thread (demux, then decode) until `stop()` or `limit_s`."""

    def __init__(self, url: str, limit_s: float = 60, keep_images: bool = False) -> None:
        self.url = url
        self.limit_s = limit_s
        self.keep_images = keep_images
        self.images: list[tuple[float, np.ndarray]] = []
        self.got = TsReceived()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="ts-player", daemon=True)

    def start(self) -> TsPlayer:
        self._thread.start()
        return self

    def _play(self) -> None:
        deadline = time.monotonic() + self.limit_s
        try:
            with av.open(self.url, format="mpegts", timeout=(10, 5)) as container:
                self.got.codecs = {s.type: s.codec_context.name for s in container.streams}
                for packet in container.demux():
                    if packet.size and packet.stream.type == "video":
                        data = bytes(packet)
                        self.got.video_payloads.append(data[6:] if data.startswith(AUD) else data)
                    for frame in packet.decode():
                        self._frame(frame)
                    if self._stop.is_set() or time.monotonic() > deadline:
                        return
        except (av.error.FFmpegError, OSError) as exc:
            self.got.error = f"{type(exc).__name__}: {exc}"

    def _frame(self, frame: av.VideoFrame | av.AudioFrame) -> None:
        now = time.monotonic()
        if isinstance(frame, av.VideoFrame):
            self.got.video.append((now, float(frame.time)))
            self.got.last_image = frame.to_ndarray(format="rgb24")
            if self.keep_images:
                self.images.append((now, self.got.last_image))
        else:
            pcm = frame.to_ndarray().astype(np.float32) * 32768  # AAC decodes to float
            self.got.audio.append((now, float(frame.time), float(np.sqrt(np.mean(pcm**2)))))

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(RuntimeError):
            self._thread.join(10)
