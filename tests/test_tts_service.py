"""The studio's one TTS service with the real embedded Piper voice: channels share one worker,
each hears its own sentences, the most urgent sentence goes first, and the RTF is measured."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from agents.conversation.speech import speech_deadline
from models.lipsync.params import N_MOUTH
from models.protocols import SpeechChunk, TTSError
from models.tts_service import TTSService
from stream.clock import AUDIO_RATE, VideoFormat
from stream.frames import SpeechSegment
from stream.program import Program
from tests.conftest import eventually


@pytest.fixture()
async def service():
    svc = TTSService(max_queue=8, max_queue_per_channel=2)
    yield svc
    await svc.aclose()


async def speak(tts, text: str) -> list[SpeechChunk]:  # type: ignore[no-untyped-def]
    return [chunk async for chunk in tts.synthesize(text)]


def phonemes(chunks: list[SpeechChunk]) -> str:
    return "".join(p.phoneme for c in chunks for p in c.phonemes)


async def test_two_channels_share_one_voice_and_each_hears_its_own_text(service: TTSService) -> None:
    voice = await service.voice(None)
    assert await service.voice(None) is voice, "a voice loads once for every channel that uses it"
    alice, bob = service.channel("alice", voice), service.channel("bob", voice)
    texts = {"alice": "The red fox jumps.", "bob": "Good morning, everyone!"}
    heard_a, heard_b = await asyncio.gather(speak(alice, texts["alice"]), speak(bob, texts["bob"]))
    direct = {name: await speak(voice, text) for name, text in texts.items()}  # the PiperTTS itself
    for name, heard in (("alice", heard_a), ("bob", heard_b)):
        assert heard and all(c.sample_rate == voice.sample_rate and c.audio.dtype.name == "int16" for c in heard)
        assert phonemes(heard) == phonemes(direct[name]), f"{name} heard another channel's sentence"
        assert sum(c.duration for c in heard) > 0.5
    metrics = service.metrics()
    assert metrics["batch_sizes"] == {1: 2}, "one worker, one sentence at a time"
    assert {k: v["completed"] for k, v in metrics["keys"].items()} == {"alice": 1, "bob": 1}
    speech = metrics["speech"]
    assert speech["alice"]["sentences"] == speech["bob"]["sentences"] == 1
    assert 0 < speech["alice"]["rtf"] < 5 and 0 < metrics["rtf"] < 5, "synthesis seconds per second of audio"


async def test_the_channel_that_runs_out_of_speech_first_is_synthesised_first(service: TTSService) -> None:
    voice = await service.voice(None)
    now = asyncio.get_running_loop().time()
    finished: list[str] = []

    async def channel(name: str, runs_out_in: float | None) -> None:
        tts = service.channel(name, voice)
        tts.deadline = lambda: None if runs_out_in is None else now + runs_out_in
        await speak(tts, f"This is channel {name}.")
        finished.append(name)

    await asyncio.gather(channel("later", 30.0), channel("idle", None), channel("soon", 1.0))
    assert finished == ["idle", "soon", "later"], "a silent channel first, then by when each runs out"


async def test_a_channel_that_queues_too_much_is_refused_and_others_go_on(service: TTSService) -> None:
    voice = await service.voice(None)
    chatty, quiet = service.channel("chatty", voice), service.channel("quiet", voice)
    results = await asyncio.gather(
        *(speak(chatty, f"Sentence number {n}.") for n in range(3)), speak(quiet, "Hello."), return_exceptions=True
    )
    refused = [r for r in results[:3] if isinstance(r, TTSError)]
    assert len(refused) == 1 and refused[0].recoverable and "queue full for chatty" in str(refused[0])
    assert isinstance(results[3], list) and results[3], "the other channel is still served"


class _FlatSource:
    """A FrameSource of flat grey frames (the face does not matter here)."""

    async def render(self, first: int, cues: np.ndarray) -> np.ndarray:
        return np.full((len(cues), 64, 64, 3), 128, np.uint8)

    def still(self) -> np.ndarray:
        return np.full((64, 64, 3), 128, np.uint8)


class _NullSink:
    def on_audio(self, pcm: np.ndarray, sample: int) -> None:
        pass

    def on_video(self, image: np.ndarray, frame: int) -> None:
        pass

    async def ready(self) -> None:
        pass


async def test_a_channels_speech_deadline_is_when_its_program_runs_out_of_speech() -> None:
    program = Program(VideoFormat(64, 64, 25), _FlatSource(), _NullSink(), cue_dims=N_MOUTH, name="ch")
    deadline = speech_deadline(program)
    assert deadline() is None, "nothing queued: the next sentence is wanted as soon as possible"
    program.enqueue(SpeechSegment(np.zeros(AUDIO_RATE, np.int16), np.zeros((25, N_MOUTH), np.float32), 25.0, "t"))
    running = asyncio.create_task(program.run())
    try:
        await eventually(lambda: program.position > 0.2, 5, "the program to air some of its speech")
        left = deadline() - asyncio.get_running_loop().time()  # type: ignore[operator]
        assert 0.3 < left < 0.85, f"~1 s of speech minus what aired; {left:.2f} s left"
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
