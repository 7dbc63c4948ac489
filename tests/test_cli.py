"""The command line as a user meets it: the demo goes on air and prints its URL; bad photos fail clearly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from agents.cli import main
from models.defaults import PROJECT_ROOT
from tests.conftest import free_port

AVATARCAST = [sys.executable, "-m", "agents.cli"]


def test_demo_config_goes_on_air_and_prints_its_url(tmp_path: Path) -> None:
    """configs/demo.yaml as `avatarcast demo` serves it (here without loading the LLM)."""
    cfg = yaml.safe_load((PROJECT_ROOT / "configs" / "demo.yaml").read_text())
    cfg["llm"] = {"backend": "none"}
    (tmp_path / "knowledge").symlink_to(PROJECT_ROOT / "configs" / "knowledge")
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    proc = subprocess.Popen(
        [*AVATARCAST, "serve", "-c", str(tmp_path / "demo.yaml"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the demo announces itself once it is on air
            lines.append(line)
            if "/c/demo" in line:
                break
        url = next((ln.split()[-1] for ln in lines if "/c/demo" in ln), None)
        assert url == f"http://127.0.0.1:{port}/c/demo", "".join(lines)
        with urllib.request.urlopen(url, timeout=10) as res:
            assert res.status == 200 and b"chat-text" in res.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/c/demo/info", timeout=10) as res:
            assert json.load(res)["title"] == "Nova"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, "".join(lines) + out
    assert "Traceback" not in out


def test_port_in_use_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["demo", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err


def test_avatar_prepare_writes_a_pack(
    astronaut_png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], face_models: Path
) -> None:
    out = tmp_path / "me"
    assert main(["avatar", "prepare", str(astronaut_png), "-o", str(out)]) == 0
    assert (out / "pack.json").is_file() and (out / "image.png").is_file() and (out / "preview.png").is_file()
    assert "avatar pack written" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        pytest.param("missing.jpg", None, "no such file", id="missing"),
        pytest.param("empty.jpg", b"", "cannot read", id="empty"),
        pytest.param("notes.jpg", b"not a picture", "cannot read", id="text-file"),
    ],
)
def test_avatar_prepare_bad_photo_exits_2(
    name: str,
    content: bytes | None,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    face_models: Path,
) -> None:
    photo = tmp_path / name
    if content is not None:
        photo.write_bytes(content)
    assert main(["avatar", "prepare", str(photo), "-o", str(tmp_path / "pack")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "pack" / "pack.json").exists()


def test_avatar_prepare_photo_without_a_face(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], face_models: Path
) -> None:
    import cv2
    import skimage.data

    photo = tmp_path / "coffee.png"
    cv2.imwrite(str(photo), skimage.data.coffee()[..., ::-1])
    assert main(["avatar", "prepare", str(photo), "-o", str(tmp_path / "pack")]) == 2
    assert "no face found in coffee.png" in capsys.readouterr().err
