"""A voice that speaks in the GPU service (a Voice for the worker's TTSService), with a CPU fallback.

A voice that runs on the GPU (Coqui) is loaded once, in the GPU service, for every worker. The
worker's one TTS thread asks for a sentence over its own connection; the service synthesises it and
writes each chunk's int16 audio into a slot of this voice's audio ring (shared memory, handed to the
service once), sending only the chunk's length, rate and phoneme timings. If the service is away,
the same voice loaded here (on the CPU) says the sentence: slower, never lost.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import numpy as np

from models.frame_ring import FrameRing
from models.lipsync.visemes import PhonemeTiming
from models.lipsync.wire import fds_path, pack, read_message_blocking, send_ring
from models.protocols import SpeechChunk, TTSError
from models.tts_piper import Emit, relay_chunks

log = logging.getLogger(__name__)

MAX_CHUNK_S = 30
"""Longest chunk (a sentence) a slot holds, at 48 kHz (the highest rate a voice speaks at)."""
SLOTS = 4
CALL_TIMEOUT_S = 60.0
_rings = itertools.count(-1, -1)  # a process's TTS rings: -1, -2, ... (frame rings count from 1, ASR's is 0)


class RemoteVoice:
    """`key`: how the service loads the voice (backend, model, speaker, length_scale, language)."""

    def __init__(self, path: str, key: dict[str, Any], fallback: Callable[[], Any]) -> None:
        self.path = path
        self.key = key
        self._fallback_factory = fallback
        self._fallback: Any = None
        self._ring = FrameRing((MAX_CHUNK_S * 48_000 * 2,), SLOTS, memory="shared", name="tts")
        self._ring_id = next(_rings)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()  # one sentence at a time per voice (its TTS thread)
        self._ids = itertools.count(1)
        self._rate = 0

    @classmethod
    def open(cls, path: str, key: dict[str, Any], fallback: Callable[[], Any]) -> RemoteVoice:
        """Connect and have the service load the voice (blocking: run it in a thread)."""
        voice = cls(path, key, fallback)
        voice._connect()
        return voice

    @property
    def sample_rate(self) -> int:
        return self._rate

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CALL_TIMEOUT_S)
        sock.connect(self.path)
        sock.sendall(pack({"op": "hello", "pid": 0}))
        client = read_message_blocking(sock)["client"]
        header = {"client": client, "ring": self._ring_id, "shape": list(self._ring.frame_shape), "slots": SLOTS}
        assert self._ring.fd is not None
        answer = send_ring(fds_path(self.path), msgspec.msgpack.encode(header), self._ring.fd)
        if answer != b"ok":
            sock.close()
            raise ConnectionError(f"the GPU service refused the voice's audio ring: {answer!r}")
        sock.sendall(pack({"op": "voice", "id": 0, "key": self.key}))
        reply = read_message_blocking(sock)
        if reply["op"] != "voice":
            sock.close()
            raise TTSError(f"the GPU service cannot load the voice: {reply.get('error')}", recoverable=False)
        self._rate = int(reply["rate"])
        self._sock = sock

    def synthesize_blocking(self, text: str, emit: Emit, stop: threading.Event) -> None:
        """The sentence's chunks through `emit` (the worker's TTS thread), from the service or from here."""
        with self._lock:
            if self._sock is None:
                try:
                    self._connect()
                except (OSError, ConnectionError, TTSError):
                    self._here(text, emit, stop)
                    return
            try:
                self._there(text, emit, stop)
            except (OSError, ConnectionError, KeyError) as exc:
                log.error("GPU service lost (%s): this voice speaks on this CPU until it is back", exc)
                if self._sock is not None:
                    self._sock.close()
                self._sock = None
                self._here(text, emit, stop)

    def _there(self, text: str, emit: Emit, stop: threading.Event) -> None:
        assert self._sock is not None
        job = next(self._ids)
        self._sock.sendall(pack({"op": "synthesize", "id": job, "ring": self._ring_id, "text": text}))
        while True:
            message = read_message_blocking(self._sock)
            if message["op"] == "said":
                return
            if message["op"] == "error":
                raise TTSError(f"the GPU service failed a sentence: {message['error']}")
            audio = self._ring.view(int(message["slot"])).view(np.int16)[: int(message["samples"])].copy()
            self._sock.sendall(pack({"op": "heard", "id": job, "slot": message["slot"]}))  # the slot is free again
            if not stop.is_set():
                phonemes = [PhonemeTiming(p, float(s), float(d)) for p, s, d in message["phonemes"]]
                emit(SpeechChunk(audio, int(message["rate"]), phonemes))

    def _here(self, text: str, emit: Emit, stop: threading.Event) -> None:
        if self._fallback is None:
            self._fallback = self._fallback_factory()
            self._rate = self._fallback.sample_rate
        self._fallback.synthesize_blocking(text, emit, stop)

    async def synthesize(self, text: str) -> AsyncIterator[SpeechChunk]:
        loop = asyncio.get_running_loop()
        async for chunk in relay_chunks(
            text, lambda emit, stop: loop.run_in_executor(None, self.synthesize_blocking, text, emit, stop)
        ):
            yield chunk

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._ring.close()
