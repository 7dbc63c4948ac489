"""Fixtures that start real things: the studio's web server, headless Chromium, avatar packs.

Network tests talk to 127.0.0.1 only. `make test` runs the suite inside `unshare -n` (a network
namespace holding nothing but loopback), so nothing can leave the machine even by mistake.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import pytest
import skimage.data

from agents.config import StudioConfig, parse_config

T = TypeVar("T")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def studio_config(
    channels: list[dict[str, Any]], llm: dict[str, Any] | None = None, irc: dict[str, Any] | None = None, **server: Any
) -> StudioConfig:
    """A config with test defaults: loopback, a free port, no greeting, no LLM unless asked for,
    and a chat box that says what it is given unless a channel says otherwise. Every test client is
    127.0.0.1, so the per-address limits are lifted unless a test sets them (tests/test_web_guard.py)."""
    channels = [{"conversation": {"chat": "say"}, **ch} for ch in channels]
    every_client_is_loopback = {"offers_per_minute": 100_000, "chats_per_minute": 100_000, "max_peers_per_client": 1000}
    return parse_config(
        {
            "server": {"host": "127.0.0.1", "port": free_port(), **every_client_is_loopback, **server},
            "lipsync": {"device": "cpu"},
            "llm": llm or {"backend": "none"},
            **({"irc": irc} if irc is not None else {}),
            "channels": channels,
        },
        "test config",
    )


async def eventually(predicate: Callable[[], bool], limit_s: float, what: str) -> None:
    """Wait for a condition another task or thread brings about (checked every 50 ms)."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {limit_s} s waiting for {what}"
        await asyncio.sleep(0.05)


class ServerThread:
    """A studio (its front, one worker in this process) and its web server on their own event loop in
    a thread, as in production. `studio` is that worker's Studio."""

    def __init__(self, cfg: StudioConfig) -> None:
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="studio", daemon=True)
        self.front: Any = None
        self.studio: Any = None
        self.runner: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.server.port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ServerThread:
        from aiohttp import web

        from agents.front.app import make_app
        from agents.front.front import Front

        async def up() -> None:
            self.front = Front(self.cfg)
            await self.front.start()
            self.studio = self.front.studio
            self.runner = web.AppRunner(make_app(self.front), access_log=None)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.cfg.server.port).start()

        self.thread.start()
        try:
            self.call(up(), timeout=120)
        except BaseException:
            self.stop()  # whatever started (worker processes, vLLM's server) goes with it
            raise
        return self

    def frame_counters(self) -> dict[str, tuple[int, int]]:
        """(frames sent, frames not rendered in time) of each channel's Program so far."""
        return {
            name: (ch.program.stats["video_frames"], ch.program.stats["late_frames"])
            for name, ch in self.studio.channels.items()
        }

    def stop(self) -> None:
        async def down() -> None:
            if self.runner is not None:
                await self.runner.cleanup()
            if self.front is not None:
                await self.front.aclose()

        try:
            self.call(down(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def assert_frames_in_time(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], elapsed_s: float, names: Iterable[str]
) -> None:
    """The faults' criterion (test_faults.py): each channel sent >= 95 % of 25 fps over the window and
    rendered >= 98 % of those frames in time (the rest repeated the last picture)."""
    for name in names:
        frames, late = after[name][0] - before[name][0], after[name][1] - before[name][1]
        assert frames >= 0.95 * 25 * elapsed_s, (name, "frames sent", frames, elapsed_s)
        assert late <= 0.02 * frames, (name, "frames late", late, frames)


@pytest.fixture(scope="session")
def face_models() -> Path:
    """The face-mesh models (fetched by `avatarcast setup`; fetched here if a run skipped it)."""
    from models.faces import fetch_face_models

    return fetch_face_models(progress=lambda _: None)


@pytest.fixture(scope="session")
def astronaut_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="session")
def astronaut_pack(face_models: Path, astronaut_png: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A photo avatar pack made from the astronaut photo that scikit-image ships."""
    from models.faces import prepare_photo_pack

    out = tmp_path_factory.mktemp("packs") / "astronaut"
    prepare_photo_pack(astronaut_png, out, progress=lambda _: None)
    return out


@contextlib.contextmanager
def chromium_driver(extra_flags: list[str] | None = None) -> Iterator[Any]:
    """Headless Debian Chromium driven by chromedriver (selenium), fake mic and camera."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are not installed (make test installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="avatarcast-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/lib/chromium/chromium" if os.path.exists("/usr/lib/chromium/chromium") else CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
        "--disable-features=WebRtcHideLocalIpsWithMdns", f"--user-data-dir={profile}", *(extra_flags or []),
    ):  # fmt: skip
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture()
def chromium() -> Iterator[Any]:
    with chromium_driver() as driver:
        yield driver


def espeak(text: str, rate: int = 48_000, pad_s: float = 0.0) -> np.ndarray:
    """Real synthetic speech of `text` from espeak-ng (a Debian package), as int16 mono at `rate`."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (make test installs it as root)")
    from agents.conversation.speech import to_program_rate

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(wav), text], check=True
        )  # 140 wpm: Whisper reads it reliably
        with wave.open(str(wav)) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
            source_rate = w.getframerate()
    out = to_program_rate(pcm, source_rate) if rate == 48_000 else pcm
    pad = np.zeros(round(pad_s * rate), np.int16)
    return np.concatenate([pad, out, pad])


def write_wav(path: Path, pcm: np.ndarray, rate: int = 48_000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype(np.int16).tobytes())
    return path


@pytest.fixture(scope="module")
def obs_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Real OBS Studio under Xvfb inside `unshare -n` (tests/obs_server.py), one per test module."""
    from tests.obs_server import ObsStudio

    studio = ObsStudio(tmp_path_factory.mktemp("obs"), free_port())
    try:
        studio.start()
        yield studio
    finally:
        studio.close()
