"""A worker's speech recognition when the GPU service runs Whisper (an ASR over models/lipsync/wire.py).

The worker's listening sessions ask for transcripts as they would of a local WhisperASR: the
utterance goes into a slot of this client's audio ring (shared memory, handed to the service once)
and only its slot, length and urgency cross the socket; the service decodes it with the one Whisper
it keeps on the device for every worker (urgent finals first) and answers with the text. If the
service goes away, a Whisper loaded here on the CPU takes over (a transcript then takes longer; none
is lost) until the service is back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import numpy as np

from models.frame_ring import FrameRing
from models.lipsync.wire import WireError, fds_path, pack, read_message, send_ring
from models.protocols import ASR

log = logging.getLogger(__name__)

MAX_SECONDS = 30
"""Longest utterance a slot holds (Whisper reads 30 s windows; listen.py keeps no more)."""
SLOTS = 8
RATE = 16_000


@dataclass(eq=False, slots=True)
class _Job:
    future: concurrent.futures.Future[str]
    audio: np.ndarray
    beam: int
    urgent: bool
    slot: list[np.ndarray]  # held until the service answers: it reads the audio from there


class RemoteASR:
    def __init__(self, path: str, fallback: Callable[[], ASR]) -> None:
        self.path = path
        self._fallback_factory = fallback
        self._fallback: ASR | None = None
        self.multilingual = False
        self._loop = asyncio.get_running_loop()
        self._ring = FrameRing((MAX_SECONDS * RATE * 4,), SLOTS, memory="shared", name="asr")
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Job] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, path: str, *, fallback: Callable[[], ASR]) -> RemoteASR:
        client = cls(path, fallback)
        await client._connect()
        return client

    async def _connect(self) -> None:
        reader, writer = await asyncio.open_unix_connection(self.path)
        writer.write(pack({"op": "hello", "pid": 0}))
        hello = await read_message(reader)
        if not hello.get("asr"):
            writer.close()
            raise ConnectionError("the GPU service runs no speech recognition")
        self.multilingual = bool(hello["asr"]["multilingual"])
        header = msgspec.msgpack.encode(
            {"client": hello["client"], "ring": 0, "shape": list(self._ring.frame_shape), "slots": SLOTS}
        )
        assert self._ring.fd is not None
        answer = await asyncio.to_thread(send_ring, fds_path(self.path), header, self._ring.fd)
        if answer != b"ok":
            writer.close()
            raise ConnectionError(f"the GPU service refused the audio ring: {answer!r}")
        self._writer = writer
        self._reader = asyncio.create_task(self._read(reader), name="asr-remote-reader")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await read_message(reader)
                job = self._pending.pop(message.get("id"), None)
                if job is None or job.future.done():
                    continue
                if message["op"] == "transcribed":
                    job.future.set_result(str(message["text"]))
                else:
                    job.future.set_exception(RuntimeError(f"the GPU service failed a transcript: {message['error']}"))
        except (asyncio.IncompleteReadError, ConnectionError, WireError):
            log.error("GPU service lost: speech recognition runs on this CPU until it is back")
            self._writer = None
            pending, self._pending = self._pending, {}
            for job in pending.values():  # none is lost: this CPU does them
                self._local(job.future, job.audio, job.beam, job.urgent)
            self._loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        while self._writer is None:
            await asyncio.sleep(1.0)
            try:
                await self._connect()
            except (OSError, ConnectionError, asyncio.IncompleteReadError, WireError):
                continue
            log.info("GPU service back: speech recognition moves back to it")

    def transcribe(
        self, audio: np.ndarray, *, beam_size: int = 1, urgent: bool = True
    ) -> concurrent.futures.Future[str]:
        """Text of `audio` (float32 mono 16 kHz): on the service, or here while it is away."""
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        audio = np.asarray(audio, np.float32)[-MAX_SECONDS * RATE :]
        slot = self._ring.lease(1) if self._writer is not None else None
        if slot is None:  # no service (or every slot busy): this CPU
            self._local(future, audio, beam_size, urgent)
            return future
        slot[0].view(np.float32)[: len(audio)] = audio
        job = next(self._ids)
        self._pending[job] = _Job(future, audio, beam_size, urgent, slot)
        message = {
            "op": "transcribe", "id": job, "slot": self._ring.slot_of(slot[0]), "samples": len(audio),
            "beam": beam_size, "urgent": urgent,
        }  # fmt: skip
        assert self._writer is not None
        self._writer.write(pack(message))
        return future

    def _local(self, future: concurrent.futures.Future[str], audio: np.ndarray, beam: int, urgent: bool) -> None:
        if self._fallback is None:
            self._fallback = self._fallback_factory()
        local = self._fallback.transcribe(audio, beam_size=beam, urgent=urgent)
        local.add_done_callback(lambda done: _copy(done, future))

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._fallback is not None:
            self._fallback.close()
        self._ring.close()


def _copy(source: concurrent.futures.Future[str], target: concurrent.futures.Future[str]) -> None:
    if target.done():
        return
    if source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())
