"""The GPU service process: frames drawn there land in a worker's shared ring, bit-exact, and the
worker's channels keep their picture while the service is gone. Here it renders on the CPU (this
machine has no GPU); the process, the socket, the memfd rings and the batcher are the real ones."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agents.worker.face_source import FaceSource
from models.avatars import resolve_pack
from models.lipsync.idle import IdleMotion
from models.lipsync.params import N_MOUTH
from models.lipsync.remote import RemoteLipSync
from models.lipsync.service import LipSyncService
from stream.clock import OfflineClock, VideoFormat
from stream.program import Program
from tests.conftest import ServerThread, eventually, studio_config
from tests.front_client import health, health_until, listen, post
from tests.viewer_client import AiortcViewer

SIZE = (256, 256)


class Service:
    """`python -m models.lipsync.server` on a socket in a temporary folder, started again on demand."""

    def __init__(self, folder: Path) -> None:
        self.socket = str(folder / "gpu.sock")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, extra: list[str] | None = None) -> None:
        command = [sys.executable, "-m", "models.lipsync.server", "--socket", self.socket, "--device", "cpu"]
        command += extra or []
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == b"ready"

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture()
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path)
    svc.start()
    yield svc
    svc.stop()


class Frames:
    """A Program sink keeping a copy of every frame the encoder would get."""

    def __init__(self) -> None:
        self.video: list[np.ndarray] = []

    def on_audio(self, pcm: np.ndarray, sample: int) -> None:
        pass

    def on_video(self, image: np.ndarray, frame: int) -> None:
        self.video.append(image.copy())

    async def ready(self) -> None:
        pass


async def test_frames_drawn_in_the_service_reach_the_encoder_bit_exact(service: Service) -> None:
    shm_before = set(os.listdir("/dev/shm"))
    remote = await RemoteLipSync.connect(service.socket, fallback=lambda: LipSyncService("cpu"))
    local = LipSyncService("cpu")
    try:
        face = await remote.prepare(resolve_pack("builtin:nova"), SIZE, (0, 177, 64))
        sink = Frames()
        idle = IdleMotion(7, 25)
        program = Program(
            VideoFormat(*SIZE, 25), FaceSource(face, remote, idle), sink, cue_dims=N_MOUTH, clock=OfflineClock()
        )
        await program.run(until=1.0)
        assert len(sink.video) == 25
        here = local.prepare_blocking(resolve_pack("builtin:nova"), SIZE)
        expected = local.render_now([local.with_background(here, (0, 177, 64))] * 25, IdleMotion(7, 25).params(0, 25))
        for i, frame in enumerate(sink.video):
            np.testing.assert_array_equal(frame, expected[i], err_msg=f"frame {i} differs from a local render")
        assert remote.stats["remote_jobs"] > 0 and remote.stats["fallback_jobs"] == 0
    finally:
        await remote.aclose()
        await local.aclose()
    service.stop()
    assert set(os.listdir("/dev/shm")) == shm_before, "no shared-memory segment left behind"


async def test_the_picture_goes_on_without_the_service_and_moves_back_when_it_returns(service: Service) -> None:
    remote = await RemoteLipSync.connect(service.socket, fallback=lambda: LipSyncService("cpu"))
    try:
        face = await remote.prepare(resolve_pack("builtin:nova"), SIZE, None)
        ring = remote.frame_ring(face, 8, "test")
        params = IdleMotion(1, 25).params(0, 2)

        async def render() -> None:
            frames = ring.lease(2)
            assert frames is not None
            await remote.render(face, params, frames, key="ch")

        await render()
        assert remote.stats["remote_jobs"] == 1
        service.kill()
        for _ in range(3):  # no service: drawn on this CPU, not refused
            await render()
        assert remote.stats["fallback_jobs"] == 3 and not remote.connected
        service.start()
        await eventually(lambda: remote.serves(face), 20, "the client back on the restarted service")
        await render()
        assert remote.stats["remote_jobs"] == 2, "rendering moved back to the service"
    finally:
        await remote.aclose()


async def test_the_service_transcribes_for_workers_and_this_cpu_takes_over_without_it(tmp_path: Path) -> None:
    from models.asr_remote import RemoteASR
    from models.asr_whisper import WhisperASR
    from stream.clock import AUDIO_RATE
    from tests.conftest import espeak

    service = Service(tmp_path)
    service.start(["--asr", "builtin:tiny.en", "--asr-device", "cpu"])
    question = espeak("How much are the running shoes?", rate=16_000).astype(np.float32) / 32768
    assert AUDIO_RATE == 48_000
    local = WhisperASR.load("builtin:tiny.en", device="cpu")
    try:
        asr = await RemoteASR.connect(service.socket, fallback=lambda: local)
        remote_text = await asyncio.wrap_future(asr.transcribe(question))
        here = await asyncio.wrap_future(local.transcribe(question))
        assert remote_text == here and "shoes" in remote_text.lower()
        service.kill()
        again = await asyncio.wrap_future(asr.transcribe(question))  # no service: this CPU, nothing lost
        assert again == here
        asr.close()
    finally:
        service.stop()


def test_a_voice_speaks_in_the_service_and_on_this_cpu_without_it(tmp_path: Path) -> None:
    import threading

    from models.tts_piper import PiperTTS
    from models.tts_remote import RemoteVoice

    service = Service(tmp_path)
    service.start(["--tts"])
    local = PiperTTS.load(None)
    key = {"backend": "piper", "model": None, "speaker": None, "length_scale": 1.0, "language": None}
    try:
        voice = RemoteVoice.open(service.socket, key, lambda: local)
        assert voice.sample_rate == local.sample_rate

        def say(speaker: object) -> list:  # type: ignore[type-arg]
            chunks: list = []  # type: ignore[type-arg]
            speaker.synthesize_blocking("Hello there, welcome to the stream.", chunks.append, threading.Event())  # type: ignore[attr-defined]
            return chunks

        there, here = say(voice), say(local)
        assert [p.phoneme for c in there for p in c.phonemes] == [p.phoneme for c in here for p in c.phonemes]
        assert abs(sum(c.duration for c in there) - sum(c.duration for c in here)) < 0.3, "the same sentence"
        assert max(abs(c.audio.astype(int)).max() for c in there) > 1000, "speech, not silence"
        service.kill()
        again = say(voice)  # no service: the same voice on this CPU, the sentence not lost
        assert [p.phoneme for c in again for p in c.phonemes] == [p.phoneme for c in here for p in c.phonemes]
        voice.close()
    finally:
        service.stop()


async def test_a_studio_keeps_its_pictures_and_its_lines_while_the_gpu_service_is_killed() -> None:
    """The fault as the issue puts it: a running studio (two workers, the GPU service drawing for both)
    with a viewer on each channel; the service is killed. Every channel keeps sending its frames (the
    workers draw on their own CPUs), a line said during the outage airs, the service comes back."""
    cfg = studio_config([{"name": n, "video": {"width": 256, "height": 256}} for n in "ab"], workers=2)
    cfg = cfg.model_copy(update={"lipsync": cfg.lipsync.model_copy(update={"process": "shared"})})
    server = ServerThread(cfg).start()
    viewers = [AiortcViewer(server.url, n) for n in "ab"]
    try:
        for viewer in viewers:
            await viewer.connect()
            await viewer.until(lambda g: len(g.video_pts) >= 25, 20, "a second of video")
        h = await health(server.url)
        gpu = h["services"]["gpu"]
        assert gpu["state"] == "up"
        before = {n: h["channels"][n]["program"] for n in "ab"}
        received = [len(v.got.video_times) for v in viewers]
        t0 = time.monotonic()
        os.kill(gpu["pid"], signal.SIGKILL)
        said = await listen(server.url, "a", lambda seen: any("without the" in e.get("text", "") for e in seen), 30)
        status, body = await post(server.url, "/c/a/chat", {"text": "Still here without the service.", "mode": "say"})
        assert status == 202, body
        await said
        await health_until(
            server.url,
            lambda h: h["services"]["gpu"]["state"] == "up" and h["services"]["gpu"]["pid"] != gpu["pid"],
            "the GPU service restarted",
            limit_s=60,
        )
        back_s = time.monotonic() - t0
        await asyncio.sleep(2.0)  # the window goes on 2 s with the service back: its frames count too
        h = await health(server.url)
        elapsed = time.monotonic() - t0
        figures = []
        for n, viewer, got in zip("ab", viewers, received, strict=True):
            frames = h["channels"][n]["program"]["video_frames"] - before[n]["video_frames"]
            late = h["channels"][n]["program"].get("late_frames", 0) - before[n].get("late_frames", 0)
            assert frames >= 0.95 * 25 * elapsed, f"{n} sent {frames} frames in {elapsed:.1f} s"
            assert late <= 25, f"{n} repeated {late} frames: its picture stood still for over a second"
            assert len(viewer.got.video_times) - got >= 0.9 * 25 * elapsed, f"{n}'s viewer lost frames"
            figures.append(f"{n}: {frames} frames, {late} repeated")
        print(f"GPU service back {back_s:.1f} s after it was killed; over {elapsed:.1f} s {', '.join(figures)}")
    finally:
        for viewer in viewers:
            await viewer.close()
        server.stop()
