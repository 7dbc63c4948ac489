"""Config validation: a bad file names the key, the bad value and the fix; secrets stay hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.cli import main
from agents.config import ConfigError, load_config, parse_config
from models.defaults import PROJECT_ROOT

BAD = [
    pytest.param(
        {"channels": [{"name": "a", "colour": "red"}]},
        ["channels[0].colour", "unknown key", "allowed here"],
        id="unknown-key",
    ),
    pytest.param(
        {"channels": [{"name": "a", "video": {"widht": 640}}]},
        ["channels[0].video.widht", "width"],
        id="typo-in-nested-key",
    ),
    pytest.param(
        {"channels": [{"name": "a", "video": {"fps": 7}}]}, ["channels[0].video.fps", "7", "25"], id="bad-fps"
    ),
    pytest.param(
        {"channels": [{"name": "a", "video": {"width": 641}}]},
        ["channels[0].video.width", "641", "multiple"],
        id="odd-width",
    ),
    pytest.param(
        {"channels": [{"name": "My Channel"}]}, ["channels[0].name", "'My Channel'", "lower-case"], id="bad-name"
    ),
    pytest.param({"channels": [{"name": "a"}, {"name": "a"}]}, ["channels", "used twice"], id="duplicate-names"),
    pytest.param({"channels": []}, ["channels", "add at least one"], id="no-channels"),
    pytest.param({}, ["channels", "required"], id="missing-channels"),
    pytest.param(
        {"server": {"port": 70000}, "channels": [{"name": "a"}]}, ["server.port", "70000", "65535"], id="port-range"
    ),
    pytest.param(
        {"server": {"port": "http"}, "channels": [{"name": "a"}]}, ["server.port", "'http'", "integer"], id="port-type"
    ),
    pytest.param(
        {"lipsync": {"device": "tpu"}, "channels": [{"name": "a"}]},
        ["lipsync.device", "'tpu'", "cuda:N"],
        id="bad-device",
    ),
    pytest.param(
        {"lipsync": {"device": "cuda", "kernel": "opencv"}, "channels": [{"name": "a"}]},
        ["lipsync", "kernel opencv renders on the CPU", "fix: kernel: torch"],
        id="cpu-kernel-on-cuda",
    ),
    pytest.param(
        {"channels": [{"name": "a", "voice": {"backend": "espeak"}}]},
        ["channels[0].voice.backend", "piper", "coqui"],
        id="unknown-backend",
    ),
    pytest.param(
        {"channels": [{"name": "a", "avatar": {"pack": "/no/such/pack"}}]},
        ["channels[0].avatar.pack", "/no/such/pack", "avatarcast avatar prepare"],
        id="missing-pack",
    ),
    pytest.param(
        {"channels": [{"name": "a", "avatar": {"pack": "builtin:nobody"}}]},
        ["channels[0].avatar.pack", "nova"],
        id="unknown-builtin-pack",
    ),
    pytest.param(
        {"channels": [{"name": "a", "voice": {"model": "/no/voice.onnx"}}]},
        ["channels[0].voice.model", "no such file"],
        id="missing-voice",
    ),
    pytest.param(
        {"server": {"ice_servers": [{"urls": ["http://stun.example.org"]}]}, "channels": [{"name": "a"}]},
        ["server.ice_servers[0].urls", "stun:"],
        id="bad-ice-url",
    ),
    pytest.param(
        {
            "server": {"ice_servers": [{"urls": ["turn:t.example.org"], "credential": "$ecretPa55"}]},
            "channels": [{"name": "a"}],
        },
        ["server.ice_servers[0].credential", "env:NAME"],
        id="secret-in-file",
    ),
    pytest.param(
        {
            "server": {"ice_servers": [{"urls": ["turn:t.example.org"], "credential": "env:AVATARCAST_NO_SUCH"}]},
            "channels": [{"name": "a"}],
        },
        ["server.ice_servers[0].credential", "AVATARCAST_NO_SUCH", "export"],
        id="secret-env-missing",
    ),
]


@pytest.mark.parametrize(("data", "expected"), BAD)
def test_bad_config_names_key_value_and_fix(data: dict, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, "bad.yaml")
    message = str(err.value)
    assert message.startswith("bad.yaml")
    for part in expected:
        assert part in message, f"{part!r} missing from:\n{message}"
    assert "Traceback" not in message


def test_secret_written_in_the_file_is_not_echoed() -> None:
    data = {"server": {"ice_servers": [{"urls": ["turn:t"], "credential": "$ecretPa55"}]}, "channels": [{"name": "a"}]}
    with pytest.raises(ConfigError) as err:
        parse_config(data, "bad.yaml")
    assert "$ecretPa55" not in str(err.value)


def test_secret_reference_resolves_from_env_and_prints_as_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATARCAST_TEST_TURN", "s3cr3t")
    cfg = parse_config(
        {
            "server": {
                "ice_servers": [{"urls": ["turn:t"], "username": "u", "credential": "env:AVATARCAST_TEST_TURN"}]
            },
            "channels": [{"name": "a"}],
        }
    )
    credential = cfg.server.ice_servers[0].credential
    assert credential.reveal() == "s3cr3t"
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in str(cfg.model_dump())


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("channels:\n  - name: a\n    video: {fps: 25\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML at line \d+"):
        load_config(path)


def test_relative_pack_path_is_relative_to_the_config(tmp_path: Path, astronaut_pack: Path) -> None:
    (tmp_path / "packs").symlink_to(astronaut_pack.parent)
    path = tmp_path / "studio.yaml"
    path.write_text(f"channels:\n  - name: a\n    avatar: {{pack: packs/{astronaut_pack.name}}}\n")
    cfg = load_config(path)
    assert Path(cfg.channels[0].avatar.pack) == (tmp_path / "packs" / astronaut_pack.name).resolve()


def test_shipped_configs_are_valid() -> None:
    cfg = load_config(PROJECT_ROOT / "configs" / "demo.yaml")
    assert [c.name for c in cfg.channels] == ["demo"]
    assert cfg.server.host == "127.0.0.1" and cfg.server.ice_servers == []


def test_cli_reports_a_bad_config_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("channels:\n  - name: demo\n    video: {fps: 7}\n")
    assert main(["serve", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "channels[0].video.fps" in err and "Traceback" not in err


def test_the_studio_example_is_valid_and_has_four_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATARCAST_ADMIN_TOKEN", "x")
    cfg = load_config(PROJECT_ROOT / "configs" / "studio.yaml")
    assert [c.name for c in cfg.channels] == ["shop", "games", "kitchen", "lounge"]
    assert len({(c.avatar.background, c.video.width, c.persona.name) for c in cfg.channels}) == 4
    assert cfg.server.admin_token is not None and str(cfg.server.admin_token) == "env:AVATARCAST_ADMIN_TOKEN"
