"""The OBS integration as `avatarcast serve` and `avatarcast obs setup` run it: the studio's own
/c/{channel}/stream.ts route, the link it keeps (obs.setup_at_start) and the command's exit codes.
A real OBS 29 under Xvfb in `unshare -n` (tests/obs_server.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from agents import cli
from agents.config import load_config
from tests.conftest import ServerThread, eventually, free_port
from tests.obs_server import ObsStudio, TsPlayer, input_names, roomy, screenshot

PASSWORD_ENV = "AVATARCAST_TEST_OBS_PASSWORD"
SIZE = 256


@pytest.fixture(scope="module")
def config_file(obs_studio: ObsStudio, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("config") / "studio.yaml"
    data = {
        "server": {"host": "127.0.0.1", "port": free_port()},
        "lipsync": {"device": "cpu"},
        "llm": {"backend": "none"},
        "obs": {"port": obs_studio.port, "password": f"env:{PASSWORD_ENV}", "setup_at_start": True},
        "channels": [{"name": "cast", "video": {"width": SIZE, "height": SIZE}}],
    }
    path.write_text(yaml.safe_dump(data))
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PASSWORD_ENV, obs_studio.password)
        yield path


@pytest.fixture(scope="module")
def served(config_file: Path) -> Iterator[ServerThread]:
    server = ServerThread(roomy(load_config(config_file))).start()
    try:
        yield server
    finally:
        server.stop()


async def test_serve_keeps_its_channels_in_obs_from_its_own_stream_route(
    obs_studio: ObsStudio, served: ServerThread
) -> None:
    async def start_link() -> None:
        served.front.start_obs_link()

    served.call(start_link())
    await eventually(lambda: served.front.obs.setups == 1, 20, "the setup at start")
    with obs_studio.client() as client:
        settings = client.send("GetInputSettings", {"inputName": "avatarcast cast"}, raw=True)["inputSettings"]
    assert settings["input"] == f"{served.url}/c/cast/stream.ts"  # the server's own address by default

    def playing() -> bool:
        with obs_studio.client() as client:
            state = client.send("GetMediaInputStatus", {"inputName": "avatarcast cast"}, raw=True)["mediaState"]
            return state == "OBS_MEDIA_STATE_PLAYING" and screenshot(client, "avatarcast cast", 64, 64).mean() > 30

    await eventually(playing, 20, "OBS to play the channel")
    async with aiohttp.ClientSession() as http, http.get(f"{served.url}/healthz") as response:
        health = await response.json()
    assert health["obs"]["state"] == "connected" and health["obs"]["setups"] == 1
    assert obs_studio.password not in json.dumps(health)

    # a channel put on air at run time joins OBS, and leaves it when it is taken off air
    guest = served.studio.cfg.channels[0].model_copy(update={"name": "guest"})
    served.call(served.front.add_channel(guest))
    await eventually(lambda: "avatarcast guest" in _inputs(obs_studio), 20, "the new channel in OBS")
    served.call(served.front.remove_channel("guest"))
    await eventually(lambda: "avatarcast guest" not in _inputs(obs_studio), 20, "the removed channel out of OBS")
    assert "avatarcast cast" in _inputs(obs_studio)


def _inputs(obs_studio: ObsStudio) -> list[str]:
    with obs_studio.client() as client:
        return input_names(client)


async def test_the_stream_route_plays_and_refuses_an_unknown_channel(served: ServerThread) -> None:
    player = TsPlayer(f"{served.url}/c/cast/stream.ts").start()
    try:
        await eventually(lambda: len(player.got.video) >= 10 and len(player.got.audio) >= 10, 20, "video and AAC")
        assert player.got.codecs == {"video": "h264", "audio": "aac"}
    finally:
        player.stop()
    async with aiohttp.ClientSession() as http, http.get(f"{served.url}/c/nope/stream.ts") as response:
        assert response.status == 404 and "cast" in await response.text()


def test_the_command_prints_what_it_did_and_ends_bad_passwords_with_code_2(
    served: ServerThread, config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(["obs", "setup", "-c", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "cast: ffmpeg_source 'avatarcast cast'" in out
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password-31")
    assert cli.main(["obs", "setup", "-c", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: obs-websocket at 127.0.0.1:") and "refused the password" in err
    assert "not-the-password-31" not in err
