"""The GPU service's voices: each loaded once for every worker, sentences written into the asking
voice's audio ring (models/tts_remote.py is the worker's side)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.lipsync.wire import pack
from models.protocols import SpeechChunk

log = logging.getLogger("avatarcast.gpu")

SLOTS = 4  # as models/tts_remote.py


class ServiceVoices:
    def __init__(self, ring: Callable[[int, int], Any]) -> None:
        """`ring(client, ring id)`: a client's mapped ring (the service's table of them)."""
        self._ring = ring
        self._voices: dict[tuple[Any, ...], asyncio.Task[Any]] = {}
        self._by_client: dict[int, Any] = {}
        self._free: dict[tuple[int, int], asyncio.Queue[int]] = {}  # (client, job) -> slots the client has read

    async def load(self, client: int, message: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        from models.tts_service import load_voice

        key = message["key"]
        ident = (key["backend"], key.get("model"), key.get("speaker"), key.get("length_scale"), key.get("language"))
        if ident not in self._voices:
            model = Path(key["model"]) if key.get("model") else None
            self._voices[ident] = asyncio.create_task(
                asyncio.to_thread(
                    load_voice,
                    key["backend"],
                    model,
                    speaker=key.get("speaker"),
                    length_scale=key.get("length_scale"),
                    language=key.get("language"),
                )
            )
        try:
            voice = await asyncio.shield(self._voices[ident])
        except Exception as exc:
            self._voices.pop(ident, None)
            writer.write(pack({"op": "error", "id": message["id"], "kind": "voice", "error": str(exc)}))
            return
        self._by_client[client] = voice
        writer.write(pack({"op": "voice", "id": message["id"], "rate": voice.sample_rate}))

    def heard(self, client: int, message: dict[str, Any]) -> None:
        queue = self._free.get((client, int(message["id"])))
        if queue is not None:
            queue.put_nowait(int(message["slot"]))

    async def say(self, client: int, message: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        """One sentence: chunks from the voice's thread, each into a free slot of the client's ring."""
        job, loop = int(message["id"]), asyncio.get_running_loop()
        chunks: asyncio.Queue[SpeechChunk | BaseException | None] = asyncio.Queue()
        free: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(SLOTS):
            free.put_nowait(slot)
        self._free[(client, job)] = free
        stop = threading.Event()

        def speak() -> None:
            try:
                self._by_client[client].synthesize_blocking(
                    message["text"], lambda chunk: loop.call_soon_threadsafe(chunks.put_nowait, chunk), stop
                )
                loop.call_soon_threadsafe(chunks.put_nowait, None)
            except Exception as exc:
                loop.call_soon_threadsafe(chunks.put_nowait, exc)

        worker = loop.run_in_executor(None, speak)
        try:
            ring = self._ring(client, int(message["ring"]))
            while (chunk := await chunks.get()) is not None:
                if isinstance(chunk, BaseException):
                    raise chunk
                slot = await free.get()
                samples = min(len(chunk.audio), ring.frame_bytes // 2)
                ring.view(slot).view(np.int16)[:samples] = chunk.audio[:samples]
                phonemes = [[p.phoneme, p.start, p.duration] for p in chunk.phonemes]
                writer.write(pack({"op": "chunk", "id": job, "slot": slot, "samples": samples,
                                   "rate": chunk.sample_rate, "phonemes": phonemes}))  # fmt: skip
            writer.write(pack({"op": "said", "id": job}))
        except Exception as exc:
            with contextlib.suppress(ConnectionError):
                writer.write(
                    pack({"op": "error", "id": job, "kind": "failed", "error": f"{type(exc).__name__}: {exc}"})
                )
        finally:
            stop.set()
            await asyncio.gather(worker, return_exceptions=True)
            self._free.pop((client, job), None)

    def forget(self, client: int) -> None:
        self._by_client.pop(client, None)
