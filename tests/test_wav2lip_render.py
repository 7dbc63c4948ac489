"""Neural lip-sync on the render path: a Wav2Lip network (random weights saved in the upstream layout)
drawing the mouth of photo and video packs from the audio each frame airs with."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml

from models.faces.video_pack import VideoPack, loop_index
from models.frame_ring import FrameRing
from models.lipsync.mel import FRAME_PAD, FRAME_WINDOW, HOP, WINDOW_STEPS
from models.lipsync.neural import NeuralFace, Wav2LipRenderer, feathered_mask
from models.lipsync.params import neutral
from models.lipsync.remote import RemoteLipSync
from models.lipsync.service import LipSyncService, NeuralModel
from models.lipsync.wav2lip_net import Wav2Lip
from tests.conftest import free_port
from tests.test_video_pack import moving_astronaut, write_clip

SIZE = (256, 256)
FPS = 25


def lively(net: torch.nn.Module) -> torch.nn.Module:
    """Random weights that keep their signal: He-initialised convolutions. PyTorch's default init
    shrinks the activations through 20 layers until the output is 0.5 whatever the audio (measured:
    1e-7 apart for different mel windows); a trained network is far from that, and so is this."""
    torch.manual_seed(5)
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.zeros_(module.bias)
    return net


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights, saved as upstream's wav2lip.pth is: {"state_dict": {"module.<name>": tensor}}."""
    state = {f"module.{k}": v for k, v in lively(Wav2Lip()).state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "wav2lip.pth"
    torch.save({"state_dict": state, "global_step": 1}, path)
    return path


@pytest.fixture(scope="module")
def video_pack(face_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.faces.video_prepare import prepare_video_pack

    clip = write_clip(tmp_path_factory.mktemp("clips") / "astronaut.mp4", moving_astronaut(12))
    out = tmp_path_factory.mktemp("packs") / "video"
    prepare_video_pack(clip, out, size=SIZE, progress=lambda _line: None)
    return out


@pytest.fixture(scope="module")
def renderer(checkpoint: Path) -> Wav2LipRenderer:
    return Wav2LipRenderer("cpu", "wav2lip", checkpoint)


@pytest.fixture(scope="module")
def face(renderer: Wav2LipRenderer, video_pack: Path) -> NeuralFace:
    return renderer.prepare(video_pack, SIZE)


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    """int16 16 kHz 'speech': a few tones under noise, loud enough to be voiced everywhere."""
    t = np.arange(int(seconds * 16_000)) / 16_000
    rng = np.random.default_rng(seed)
    wave = 3000 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + rng.normal(0, 400, len(t))
    return wave.astype(np.int16)


def windows(audio: np.ndarray, frames: range) -> list[np.ndarray]:
    """Frame n's window: from FRAME_PAD samples before its time, FRAME_WINDOW long (zeros past the ends)."""
    padded = np.concatenate([np.zeros(FRAME_PAD, np.int16), audio, np.zeros(FRAME_WINDOW, np.int16)])
    return [padded[n * 16_000 // FPS : n * 16_000 // FPS + FRAME_WINDOW] for n in frames]


def test_a_batch_draws_what_frames_drawn_one_at_a_time_draw(renderer: Wav2LipRenderer, face: NeuralFace) -> None:
    audio = windows(speech(1.0), range(6))
    numbers = np.arange(6)
    batched = renderer.render_rgb([face] * 6, neutral(6), frames=numbers, audio=audio).astype(int)
    for i in range(6):
        alone = renderer.render_rgb([face], neutral(1), frames=numbers[i : i + 1], audio=audio[i : i + 1])
        assert np.abs(batched[i] - alone[0].astype(int)).max() <= 1, f"frame {i} differs batched"


def test_only_the_masked_lower_face_changes_and_silence_skips_the_network(
    renderer: Wav2LipRenderer, face: NeuralFace
) -> None:
    audio = windows(speech(0.5), range(3))
    talking = renderer.render_rgb([face] * 3, neutral(3), frames=np.arange(3), audio=audio)
    silent = renderer.render_rgb(
        [face] * 3, neutral(3), frames=np.arange(3), audio=[np.zeros(FRAME_WINDOW, np.int16)] * 3
    )
    for n in range(3):
        pack = face.frames[loop_index(n, len(face.frames))].permute(1, 2, 0).numpy().round().astype(np.uint8)
        np.testing.assert_array_equal(silent[n], pack, err_msg="a silent frame is the pack's own")
        x0, y0, x1, y1 = face.boxes[loop_index(n, len(face.frames))].int().tolist()
        changed = np.abs(talking[n].astype(int) - pack.astype(int)).max(axis=2) > 0
        outside = np.ones_like(changed)
        outside[y0 + int(0.45 * (y1 - y0)) : y1, x0:x1] = False  # the mask's reach: the lower face, in the box
        assert not changed[outside].any(), "a pixel outside the mask changed"
        assert changed[y0:y1, x0:x1].mean() > 0.1, "the network's mouth was pasted"
    assert feathered_mask(96)[:40].max() == 0, "nothing above the nose is ever pasted"


def test_each_frame_hears_its_own_window(renderer: Wav2LipRenderer, face: NeuralFace) -> None:
    quiet = speech(1.0, seed=1)
    click = quiet.copy()
    click[8000:8040] = 32000  # at 0.5 s
    frames = range(25)
    a = renderer.render_rgb([face] * 25, neutral(25), frames=np.arange(25), audio=windows(quiet, frames))
    b = renderer.render_rgb([face] * 25, neutral(25), frames=np.arange(25), audio=windows(click, frames))
    differs = [n for n in frames if np.any(a[n] != b[n])]
    # frame n's 16 mel steps are centred at n/25 + 0 .. 187.5 ms, each reaching 25 ms either side: it
    # hears [n/25 - 25 ms, n/25 + 212.5 ms). The click (0.5 .. 0.5025 s) falls in frames 8..13 only.
    reach = ((WINDOW_STEPS - 1) * HOP + FRAME_PAD) / 16_000
    hearing = [n for n in frames if n / FPS - FRAME_PAD / 16_000 < 0.5025 and n / FPS + reach > 0.5]
    assert hearing == [8, 9, 10, 11, 12, 13] and differs == hearing


def test_a_video_pack_loops_forwards_and_back() -> None:
    assert [loop_index(i, 4) for i in range(10)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]


async def test_the_gpu_service_draws_neural_frames_from_the_audio_in_the_ring(
    checkpoint: Path, video_pack: Path, tmp_path: Path
) -> None:
    socket = str(tmp_path / "gpu.sock")
    command = [sys.executable, "-m", "models.lipsync.server", "--socket", socket, "--device", "cpu",
               "--model", "wav2lip", "--checkpoint", str(checkpoint)]  # fmt: skip
    service = subprocess.Popen(command, stdout=subprocess.PIPE)  # noqa: ASYNC220  (started before the loop's work)
    local = LipSyncService("cpu", neural=NeuralModel("wav2lip", checkpoint))
    try:
        assert service.stdout is not None and service.stdout.readline().strip() == b"ready"
        remote = await RemoteLipSync.connect(socket, fallback=lambda: local)
        face = await remote.prepare(video_pack, SIZE, None)
        assert face.audio_window == FRAME_WINDOW
        ring = remote.frame_ring(face, 4, "test")
        assert isinstance(ring, FrameRing) and ring.extra_bytes == 2 * FRAME_WINDOW
        frames = ring.lease(3)
        assert frames is not None
        audio = windows(speech(0.5), range(3))
        slots = [ring.extra(f).view(np.int16) for f in frames]
        for slot, window in zip(slots, audio, strict=True):
            slot[:] = window  # as FaceSource writes them
        await remote.render(face, neutral(3), frames, frames=np.arange(3), audio=slots, key="ch")
        assert remote.stats["remote_jobs"] == 1
        here = local.prepare_blocking(video_pack, SIZE)
        expected = local.render_now([here] * 3, neutral(3), frames=np.arange(3), audio=audio)
        for got, want in zip(frames, expected, strict=True):
            # the same network on the same audio; float32 convolutions on another number of threads may
            # round a level apart (the sprite frames of test_gpu_service.py are bit-exact)
            gap = np.abs(got.astype(int) - want.astype(int))
            assert gap.max() <= 2 and gap.mean() < 0.05, (gap.max(), gap.mean())
        await remote.aclose()
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(10)


def test_render_puts_the_network_mouth_on_the_pack_and_loops_its_frames(
    checkpoint: Path, video_pack: Path, tmp_path: Path
) -> None:
    from agents.cli import main

    config = tmp_path / "neural.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "lipsync": {"device": "cpu", "model": "wav2lip", "checkpoint": str(checkpoint)},
                "llm": {"backend": "none"},
                "channels": [{"name": "real", "video": {"width": SIZE[0], "height": SIZE[1]}}],
            }
        )
    )
    out = tmp_path / "clip.mp4"
    say = "Hello there, welcome!"
    assert main(["render", "-c", str(config), "--avatar", str(video_pack), "--say", say, "-o", str(out)]) == 0
    with av.open(str(out)) as container:
        decoded = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
    pack = VideoPack.load(video_pack)
    x0, y0, x1, y1 = (int(v) for v in pack.boxes[0])
    mouth = (slice(y0 + int(0.6 * (y1 - y0)), y1), slice(x0 + 4, x1 - 4))
    upper = (slice(0, y0 + int(0.3 * (y1 - y0))), slice(0, SIZE[0]))
    changes = 0
    for n, frame in enumerate(decoded):
        own = pack.frames[loop_index(n, pack.frame_count)].astype(int)
        other = pack.frames[loop_index(n + 3, pack.frame_count)].astype(int)
        assert np.abs(frame[upper] - own[upper]).mean() < np.abs(frame[upper] - other[upper]).mean(), (
            f"frame {n} does not show pack frame {loop_index(n, pack.frame_count)}: the idle frames loop"
        )
        assert np.abs(frame[upper] - own[upper]).mean() < 4, "the upper face is the pack's"
        changes += np.abs(frame[mouth] - own[mouth]).mean() > 8
    assert changes >= len(decoded) // 3, f"the mouth changed in only {changes} of {len(decoded)} frames"


def test_a_wrong_checkpoint_stops_serve_with_what_it_looks_like(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agents.cli import main
    from models.lipsync.wav2lip_net import Wav2Lip256

    wrong = tmp_path / "wav2lip256.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in Wav2Lip256().state_dict().items()}}, wrong)
    config = tmp_path / "wrong.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"port": free_port()},
                "lipsync": {"device": "cpu", "model": "wav2lip", "checkpoint": str(wrong)},
                "llm": {"backend": "none"},
                "channels": [{"name": "real"}],
            }
        )
    )
    assert main(["serve", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert "lipsync.checkpoint" in err and "looks like wav2lip256" in err
