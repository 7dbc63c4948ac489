"""`avatarcast obs setup` against a real OBS Studio 29 (obs-websocket 5.1) under Xvfb, in `unshare -n`.

Debian's OBS has no Browser Source, so each channel becomes a Media Source playing the studio's
MPEG-TS stream of it. One OBS per module (started in ~1 s), restarted once at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import obsws_python as obs
import pytest
import yaml

from agents.config import StudioConfig, load_config
from agents.errors import UserError
from agents.front.obs_setup import cmd_obs_setup, obs_link, studio_url
from agents.worker.media import CHROMA_COLOURS
from stream.obs import CHROMA_FILTER, ChannelSource, ObsLink
from tests.conftest import ServerThread, assert_frames_in_time, eventually, free_port, studio_config
from tests.irc_servers import AirLog
from tests.obs_server import ObsStudio, TsSite, input_names, roomy, screenshot
from tests.viewer_client import AiortcViewer

PASSWORD_ENV = "AVATARCAST_TEST_OBS_PASSWORD"
SCENE = "avatarcast test"
SIZE = 256
METER_MAX = 16.0
"""+24 dBFS as a linear peak: past anything a source at volume 1 can meter."""


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ServerThread, TsSite]]:
    video = {"width": SIZE, "height": SIZE}
    cfg = studio_config(
        [{"name": "plain", "video": video}, {"name": "keyed", "video": video, "avatar": {"background": "green"}}]
    )
    server = ServerThread(roomy(cfg)).start()
    site: TsSite | None = None
    try:
        site = server.call(TsSite(server.studio, free_port()).start())
        yield server, site
    finally:
        if site is not None:
            server.call(site.stop())
        server.stop()


@pytest.fixture()
def config_file(
    tmp_path: Path, obs_studio: ObsStudio, served: tuple[ServerThread, TsSite], monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The studio's config as a user writes it, with an obs: section pointing at this OBS."""
    monkeypatch.setenv(PASSWORD_ENV, obs_studio.password)
    server, site = served
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": server.cfg.server.port},
        "llm": {"backend": "none"},
        "obs": {"port": obs_studio.port, "password": f"env:{PASSWORD_ENV}", "scene": SCENE, "studio_url": site.url},
        "channels": [ch.model_dump(include={"name", "video", "avatar"}) for ch in server.cfg.channels],
    }
    path = tmp_path / "studio.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _setup(config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    cmd_obs_setup(argparse.Namespace(config=str(config)))
    return capsys.readouterr().out


def _items(obs_studio: ObsStudio) -> list[str]:
    with obs_studio.client() as client:
        return [i["sourceName"] for i in client.send("GetSceneItemList", {"sceneName": SCENE}, raw=True)["sceneItems"]]


def _filters(obs_studio: ObsStudio, source: str) -> list[dict[str, Any]]:
    with obs_studio.client() as client:
        return client.send("GetSourceFilterList", {"sourceName": source}, raw=True)["filters"]


def _media_state(obs_studio: ObsStudio, source: str) -> str:
    with obs_studio.client() as client:
        return client.send("GetMediaInputStatus", {"inputName": source}, raw=True)["mediaState"]


def _face_gap(shot: np.ndarray, still: np.ndarray) -> float:
    """Largest difference in mean colour between the middle halves (the face) of two frames."""
    h, w = shot.shape[:2]
    sh, sw = still.shape[:2]
    a = shot[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, :3].reshape(-1, 3).mean(0)
    b = still[sh // 4 : 3 * sh // 4, sw // 4 : 3 * sw // 4].reshape(-1, 3).mean(0)
    return float(np.abs(a - b).max())


async def test_setup_puts_one_playing_source_per_channel_and_a_second_run_changes_nothing(
    obs_studio: ObsStudio, served: tuple[ServerThread, TsSite], config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, site = served
    first = _setup(config_file, capsys)
    assert "plain: ffmpeg_source 'avatarcast plain' — created scene" in first
    assert f"created it on {site.url}/c/keyed/stream.ts" in first
    assert sorted(_items(obs_studio)) == ["avatarcast keyed", "avatarcast plain"]

    second = _setup(config_file, capsys)
    assert second.count("already set up, nothing changed") == 2, second
    assert sorted(_items(obs_studio)) == ["avatarcast keyed", "avatarcast plain"], "a second run added sources"
    assert len(_filters(obs_studio, "avatarcast keyed")) == 1

    await eventually(lambda: _media_state(obs_studio, "avatarcast plain") == "OBS_MEDIA_STATE_PLAYING", 20, "playing")
    still = server.studio.channels["plain"].face.still

    def shows_the_avatar() -> bool:
        with obs_studio.client() as client:
            shot = screenshot(client, "avatarcast plain", SIZE // 2, SIZE // 2)
        return shot.mean() > 30 and _face_gap(shot, still) < 20

    await eventually(shows_the_avatar, 20, "OBS to show the channel's avatar")


async def test_the_channels_voice_reaches_obs(
    obs_studio: ObsStudio, served: tuple[ServerThread, TsSite], config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = served
    _setup(config_file, capsys)
    peaks: dict[str, float] = {}
    readings = {"sane": 0, "glitches": 0}

    def on_input_volume_meters(data: Any) -> None:
        for meter in data.inputs:
            for channel in meter["inputLevelsMul"]:
                # Debian's OBS 29 now and then meters a channel as ~1e32: no decoded AAC sample is past
                # +24 dBFS at volume 1, so such a reading is the meter's, not the stream's; count it
                if not 0.0 <= channel[1] <= METER_MAX:
                    readings["glitches"] += 1
                    continue
                readings["sane"] += 1
                peaks[meter["inputName"]] = max(peaks.get(meter["inputName"], 0.0), channel[1])

    with obs_studio.client() as client:
        client.send("SetCurrentProgramScene", {"sceneName": SCENE}, raw=True)  # OBS mixes what is on air
    meters = obs.EventClient(
        host="127.0.0.1", port=obs_studio.port, password=obs_studio.password, subs=obs.Subs.INPUTVOLUMEMETERS
    )
    try:
        meters.callback.register(on_input_volume_meters)
        await eventually(lambda: "avatarcast plain" in peaks, 20, "OBS to meter the source")
        assert peaks["avatarcast plain"] < 0.01, "the idle channel should be silent"

        async def say() -> None:
            server.studio.channels["plain"].conversation.start_turn(
                "say", "Hello there, this is a sound check for OBS."
            )

        server.call(say())
        await eventually(lambda: peaks["avatarcast plain"] > 0.05, 20, "the channel's speech in OBS's meters")
        assert readings["glitches"] <= readings["sane"] // 20, f"mostly glitched meter readings: {readings}"
    finally:
        meters.disconnect()


async def test_a_chroma_background_gets_one_chroma_key_in_its_colour(
    obs_studio: ObsStudio, served: tuple[ServerThread, TsSite], config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _setup(config_file, capsys)
    _setup(config_file, capsys)
    keyed = _filters(obs_studio, "avatarcast keyed")
    assert [(f["filterName"], f["filterKind"]) for f in keyed] == [(CHROMA_FILTER, "chroma_key_filter_v2")]
    r, g, b = CHROMA_COLOURS["green"]
    assert keyed[0]["filterSettings"]["key_color_type"] == "custom"
    assert keyed[0]["filterSettings"]["key_color"] == (b << 16) | (g << 8) | r
    assert _filters(obs_studio, "avatarcast plain") == []

    await eventually(lambda: _media_state(obs_studio, "avatarcast keyed") == "OBS_MEDIA_STATE_PLAYING", 20, "playing")

    def keyed_out() -> bool:  # the green is gone (transparent), the face is not
        with obs_studio.client() as client:
            shot = screenshot(client, "avatarcast keyed", SIZE // 2, SIZE // 2, alpha=True)
        corner, face = shot[:8, :8, 3].mean(), shot[48:80, 48:80, 3].mean()
        return corner < 30 and face > 200

    await eventually(keyed_out, 20, "OBS to key the green background out")


def test_a_wrong_password_is_a_clear_error(
    obs_studio: ObsStudio, config_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password-31")
    with pytest.raises(UserError) as refused:
        cmd_obs_setup(argparse.Namespace(config=str(config_file)))
    message = str(refused.value)
    assert f"obs-websocket at 127.0.0.1:{obs_studio.port} refused the password" in message
    assert "fix:" in message and "Tools > WebSocket Server Settings" in message
    assert "not-the-password-31" not in message + caplog.text
    assert obs_studio.password not in caplog.text


def test_setup_refuses_while_the_studio_is_not_serving(tmp_path: Path, config_file: Path) -> None:
    data = yaml.safe_load(config_file.read_text())
    data["obs"]["studio_url"] = f"http://127.0.0.1:{free_port()}"
    path = tmp_path / "nobody.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError) as refused:
        cmd_obs_setup(argparse.Namespace(config=str(path)))
    assert "the studio is not serving" in str(refused.value) and "avatarcast serve" in str(refused.value)


def test_the_default_studio_url_is_the_servers_own_address(config_file: Path) -> None:
    data = yaml.safe_load(config_file.read_text())
    del data["obs"]["studio_url"]
    data["server"]["host"] = "0.0.0.0"
    path = config_file.with_name("default.yaml")
    path.write_text(yaml.safe_dump(data))
    assert studio_url(load_config(path)) == f"http://127.0.0.1:{data['server']['port']}"


def _with_setup_at_start(config_file: Path) -> StudioConfig:
    data = yaml.safe_load(config_file.read_text())
    data["obs"]["setup_at_start"] = True
    config_file.write_text(yaml.safe_dump(data))
    return load_config(config_file)


async def _say(server: ServerThread, channel: str, text: str) -> None:
    server.studio.channels[channel].conversation.start_turn("say", text)


async def test_the_link_sets_obs_up_again_after_obs_restarts(
    obs_studio: ObsStudio, served: tuple[ServerThread, TsSite], config_file: Path
) -> None:
    server, site = served
    link = obs_link(_with_setup_at_start(config_file))
    assert isinstance(link, ObsLink)
    link.poll_s, link.backoff_s = 0.2, (0.2, 1.0)

    async def start() -> asyncio.Task[None]:
        return asyncio.create_task(link.run())

    task = server.call(start())
    air = AirLog(server.studio.channels["plain"])
    viewers = [AiortcViewer(server.url, name) for name in ("plain", "keyed")]
    try:
        for viewer in viewers:
            await viewer.connect()
        await eventually(lambda: link.setups == 1, 20, "the first setup")
        # OBS restarting is one of test_faults.py's faults: the channels keep their frames in time,
        # their viewers their picture, and what is said meanwhile airs
        gone, before = time.monotonic(), server.frame_counters()
        obs_studio.stop()
        await eventually(lambda: link.state == "reconnecting", 10, "the link to notice OBS went away")
        server.call(_say(server, "plain", "OBS is away for a moment; this page still hears me."))
        await eventually(lambda: air.said("still hears me"), 20, "the line said while OBS was away")
        obs_studio.start()  # a fresh profile: nothing of the first setup is left in it
        await eventually(lambda: link.setups == 2 and link.state == "connected", 20, "the setup after the restart")
        back = time.monotonic() - gone
        assert_frames_in_time(before, server.frame_counters(), back, ("plain", "keyed"))
        for viewer in viewers:
            assert viewer.got.video_rate(gone) >= 0.9 * 25
        print(f"OBS restart: set up again {back:.1f} s after it went away")
        assert sorted(_items(obs_studio)) == ["avatarcast keyed", "avatarcast plain"]
        assert len(_filters(obs_studio, "avatarcast keyed")) == 1
        await eventually(lambda: _media_state(obs_studio, "avatarcast plain") == "OBS_MEDIA_STATE_PLAYING", 20, "play")
        # a channel put on air at run time joins OBS at the link's next poll
        extra = ChannelSource("extra", "", f"{site.url}/c/extra/stream.ts", SIZE, SIZE)
        link.set_sources([*link.sources, extra])
        await eventually(lambda: link.setups == 3, 10, "the setup for the new channel")
        assert sorted(_items(obs_studio)) == ["avatarcast extra", "avatarcast keyed", "avatarcast plain"]
        # taken off air again: its input leaves OBS; the others stay as they are
        link.set_sources([s for s in link.sources if s.channel != "extra"])
        await eventually(lambda: link.setups == 4, 10, "the setup without it")
        assert sorted(_items(obs_studio)) == ["avatarcast keyed", "avatarcast plain"]
        with obs_studio.client() as client:
            inputs = input_names(client)
        assert "avatarcast extra" not in inputs and "avatarcast plain" in inputs
    finally:
        for viewer in viewers:
            await viewer.close()

        async def stop() -> None:
            task.cancel()

        server.call(stop())
