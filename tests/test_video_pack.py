"""Video avatar packs: clips made here with PyAV from the astronaut photo, faces found by the real models."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from skimage import data

from models.avatars import PackError
from models.faces import FaceLandmarker, PhotoError
from models.faces.video_pack import VideoError, VideoPack, loop_index
from models.faces.video_prepare import prepare_video_pack

FPS = 10
STEP = (3.0, 1.0)  # the astronaut moves this many source pixels per frame (right, down)


def write_clip(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    """An H.264 MP4 of uint8 RGB frames."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


def moving_astronaut(count: int) -> list[np.ndarray]:
    photo = data.astronaut()
    frames = []
    for i in range(count):
        shift = np.float32([[1, 0, STEP[0] * i], [0, 1, STEP[1] * i]])
        frames.append(cv2.warpAffine(photo, shift, (512, 512), borderMode=cv2.BORDER_REPLICATE))
    return frames


def noise(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture(scope="module")
def landmarker(face_models: Path) -> FaceLandmarker:
    return FaceLandmarker(face_models)


@pytest.fixture(scope="module")
def make(landmarker: FaceLandmarker, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., VideoPack]:
    def run(clip: Path, **kwargs) -> VideoPack:
        out = tmp_path_factory.mktemp("pack")
        kwargs.setdefault("size", (256, 256))
        return prepare_video_pack(clip, out, landmarker=landmarker, progress=lambda _line: None, **kwargs)

    return run


@pytest.fixture(scope="module")
def astronaut_pack(make: Callable[..., VideoPack], tmp_path_factory: pytest.TempPathFactory) -> VideoPack:
    clip = write_clip(tmp_path_factory.mktemp("clips") / "astronaut.mp4", moving_astronaut(15))
    return make(clip)


def test_boxes_follow_the_face(astronaut_pack: VideoPack) -> None:
    pack = astronaut_pack
    assert pack.frame_count == 15 and pack.fps == FPS and pack.duration == pytest.approx(1.5)
    assert pack.frames.shape == (15, 256, 256, 3) and pack.frames.dtype == np.uint8
    assert pack.boxes.shape == (15, 4) and pack.landmarks is not None and pack.landmarks.shape == (15, 468, 3)
    scale = 256 / (pack.crop[2] - pack.crop[0])
    t = np.arange(15)
    centre = (pack.boxes[:, :2] + pack.boxes[:, 2:]) / 2
    for axis in (0, 1):
        slope, intercept = np.polyfit(t, centre[:, axis], 1)
        assert slope == pytest.approx(STEP[axis] * scale, abs=0.15 * scale)
        assert np.abs(centre[:, axis] - (slope * t + intercept)).max() < 1.5  # smooth: no jitter
    widths = pack.boxes[:, 2] - pack.boxes[:, 0]
    assert widths.std() < 1.0 and 50 < widths.mean() < 150  # crop is ~3 face widths across
    assert ((pack.boxes[:, :2] >= 0) & (pack.boxes[:, 2:] <= 256)).all()  # the face stays inside the crop
    mouth = pack.landmarks[:, 13, :2]  # the upper inner lip sits inside its frame's box
    assert ((mouth > pack.boxes[:, :2]) & (mouth < pack.boxes[:, 2:])).all()


def test_pack_reloads_and_loops(astronaut_pack: VideoPack) -> None:
    pack = VideoPack.load(astronaut_pack.path)
    assert np.array_equal(pack.frames, astronaut_pack.frames)
    np.testing.assert_allclose(pack.boxes, astronaut_pack.boxes, atol=0.01)
    manifest = json.loads((pack.path / "pack.json").read_text())
    assert manifest["kind"] == "video" and manifest["format"] == "avatarcast-pack" and manifest["frame_count"] == 15
    assert [loop_index(i, 4) for i in range(10)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert loop_index(7, 1) == 0
    with pytest.raises(ValueError):
        loop_index(0, 0)


def test_broken_packs_are_refused(astronaut_pack: VideoPack, tmp_path: Path) -> None:
    manifest = json.loads((astronaut_pack.path / "pack.json").read_text())
    (tmp_path / "frames").mkdir()
    (tmp_path / "pack.json").write_text(json.dumps(manifest))
    with pytest.raises(PackError, match=r"000000\.jpg is missing"):
        VideoPack.load(tmp_path)
    (tmp_path / "pack.json").write_text(json.dumps({**manifest, "kind": "photo"}))
    with pytest.raises(PackError, match="not a video pack"):
        VideoPack.load(tmp_path)
    (tmp_path / "pack.json").write_text(json.dumps({**manifest, "boxes": manifest["boxes"][:3]}))
    with pytest.raises(PackError, match="boxes must be 15"):
        VideoPack.load(tmp_path)


def test_noise_has_no_face(make: Callable[..., VideoPack], tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "noise.mp4", noise(12))
    with pytest.raises(VideoError, match=r"no face found in any of the 12 frames of noise\.mp4"):
        make(clip)


def test_too_many_frames_without_a_face_are_named(make: Callable[..., VideoPack], tmp_path: Path) -> None:
    frames = [cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA) for f in moving_astronaut(12)]
    frames[4:7] = noise(3, seed=1)
    clip = write_clip(tmp_path / "gap.mp4", frames)
    with pytest.raises(VideoError, match=r"no face found in 3 of 12 frames of gap\.mp4 \(at 0\.4-0\.6 s\)"):
        make(clip)


def test_short_small_and_unreadable_clips(make: Callable[..., VideoPack], tmp_path: Path) -> None:
    short = write_clip(tmp_path / "short.mp4", moving_astronaut(6))
    with pytest.raises(VideoError, match=r"short\.mp4 is too short: 6 frame\(s\), 0\.60 s"):
        make(short)
    whole = write_clip(tmp_path / "whole.mp4", moving_astronaut(10))
    with pytest.raises(VideoError, match=r"the face in whole\.mp4 is only \d+ px wide; it needs at least 1000 px"):
        make(whole, min_face_px=1000)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    with pytest.raises(VideoError, match=r"cannot read notes\.mp4: it is not a video"):
        make(text)
    with pytest.raises(PhotoError, match="no such file"):  # VideoError is a PhotoError
        make(tmp_path / "absent.mp4")
    audio = tmp_path / "voice.wav"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(VideoError, match=r"voice\.wav has no video track"):
        make(audio)
