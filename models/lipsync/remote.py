"""A worker's lip-sync when the GPU service renders (a LipSync over wire.py), with a CPU fallback.

Faces are prepared in the service; each channel's frame ring is shared memory (a memfd) the
service writes into, handed over once. A render request carries poses and slot numbers, and its
answer only says done: the frames are already in place. If the service goes away, every channel
keeps its picture: renders go to a LipSyncService on this process's CPU (faces prepared here on
first need) while the client reconnects in the background; once the service is back, faces and
rings are registered again and rendering moves back to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import msgspec
import numpy as np

from models.avatars import PackError
from models.batcher import Expired, Overloaded
from models.frame_ring import FrameRing
from models.lipsync.i420 import i420_rows
from models.lipsync.service import LipSyncService
from models.lipsync.wire import WireError, fds_path, pack, read_message, send_ring

log = logging.getLogger(__name__)

RECONNECT_S = 1.0
METRICS_EVERY_S = 2.0
CALL_TIMEOUT_S = 60.0


class ServiceGone(ConnectionError):
    """The GPU service is not connected; the caller falls back."""


@dataclass(eq=False)
class RemoteFace:
    """A face prepared in the GPU service (a PreparedFace), and how to prepare it again."""

    kind: str
    size: tuple[int, int]
    mouth_box: tuple[int, int, int, int]
    still: np.ndarray
    pack: Path
    background: tuple[int, int, int] | None
    cost: float
    audio_window: int = 0
    face_id: int = 0
    epoch: int = 0
    local: Any = None  # the same face prepared on this CPU, once the fallback needs it


@dataclass(eq=False)
class _Ring:
    ring: FrameRing
    ring_id: int
    registered: int = -1  # the connection epoch it was handed to
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class RemoteLipSync:
    def __init__(self, path: str, fallback: Callable[[], LipSyncService]) -> None:
        self.path = path
        self.device = "remote"
        self._fallback_factory = fallback
        self._fallback: LipSyncService | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._client = 0
        self._epoch = 0  # bumped per connection: faces and rings registered with an older one are stale
        self._ids = itertools.count(1)
        self._ring_ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[dict[str, Any]], Any]] = {}
        self._rings: list[_Ring] = []
        self._faces: list[RemoteFace] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._service_metrics: dict[str, Any] = {}
        self.stats: Counter[str] = Counter()

    @classmethod
    async def connect(cls, path: str, *, fallback: Callable[[], LipSyncService]) -> RemoteLipSync:
        client = cls(path, fallback)
        await client._connect()
        client._tasks.append(asyncio.create_task(client._keep_metrics(), name="gpu-service-metrics"))
        return client

    @property
    def connected(self) -> bool:
        return self._writer is not None

    def serves(self, face: RemoteFace) -> bool:
        """Whether `face` renders in the service now (connected, and prepared on this connection)."""
        return self._writer is not None and face.epoch == self._epoch

    # ------------------------------------------------------------------ connection
    async def _connect(self) -> None:
        reader, writer = await asyncio.open_unix_connection(self.path)
        writer.write(pack({"op": "hello", "pid": 0}))
        hello = await read_message(reader)
        self._client, self._epoch = int(hello["client"]), self._epoch + 1
        self.device = hello["device"]
        self._reader, self._writer = reader, writer
        self._tasks.append(asyncio.create_task(self._read(reader, self._epoch), name="gpu-service-reader"))
        log.info("GPU service connected (%s, rendering on %s)", self.path, self.device)

    async def _read(self, reader: asyncio.StreamReader, epoch: int) -> None:
        try:
            while True:
                message = await read_message(reader)
                waiter = self._pending.pop(message.get("id"), None)
                if waiter is not None and not waiter[0].done():
                    waiter[0].set_result(message)
        except (asyncio.IncompleteReadError, ConnectionError, WireError) as exc:
            if epoch == self._epoch:
                self._lost(f"{type(exc).__name__}")

    def _lost(self, why: str) -> None:
        """The service is gone: fail what waits, render on the CPU, reconnect in the background."""
        log.error("GPU service lost (%s): channels render on this CPU until it is back", why)
        self.stats["disconnects"] += 1
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(ServiceGone("the GPU service went away"))
        self._pending.clear()
        self._tasks.append(asyncio.create_task(self._reconnect(), name="gpu-service-reconnect"))

    async def _reconnect(self) -> None:
        while self._writer is None:
            await asyncio.sleep(RECONNECT_S)
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, WireError):
                await self._connect()
        for face in self._faces:  # prepared again there; until then renders stay here
            with contextlib.suppress(Exception):
                await self._prepare_remote(face)
        log.info("GPU service back: rendering moves back to it")

    async def _call(self, message: dict[str, Any], keep: Any = None) -> dict[str, Any]:
        """Send one request and wait for its answer; `keep` stays referenced until the service answers
        (the frames it writes into must not be leased again before it is done with them)."""
        if self._writer is None:
            raise ServiceGone("the GPU service is not connected")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message["id"]] = (future, keep)
        self._writer.write(pack(message))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:  # the answer still comes (and releases `keep`); ask to skip the work
            if not future.done() and self._writer is not None:
                self._writer.write(pack({"op": "cancel", "id": message["id"]}))
            raise

    # ------------------------------------------------------------------ LipSync
    async def prepare(
        self, pack_dir: Path, size: tuple[int, int], background: tuple[int, int, int] | None = None
    ) -> RemoteFace:
        face = RemoteFace("", size, (0, 0, 0, 0), np.zeros(0), Path(pack_dir), background, 0.0)
        await self._prepare_remote(face)
        self._faces.append(face)
        # the CPU fallback's copy, prepared now (in the background): a lost service then costs a frame or
        # two of the picture, not the half second preparing it would take at that moment
        self._tasks.append(asyncio.create_task(self._prepare_here(face), name="fallback-face"))
        return face

    async def _prepare_remote(self, face: RemoteFace) -> None:
        message = {
            "op": "prepare", "id": next(self._ids), "pack": str(face.pack), "size": list(face.size),
            "background": list(face.background) if face.background else None,
        }  # fmt: skip
        async with asyncio.timeout(CALL_TIMEOUT_S):
            reply = await self._call(message)
        if reply["op"] == "error":
            raise PackError(reply["error"])
        width, height = reply["size"]
        still = np.frombuffer(reply["still"], np.uint8).reshape(i420_rows(height), width)
        face.kind, face.size = reply["kind"], (width, height)
        face.mouth_box = tuple(reply["mouth_box"])  # type: ignore[assignment]
        face.still = cv2.cvtColor(still, cv2.COLOR_YUV2RGB_I420)
        face.cost, face.face_id, face.epoch = float(reply["cost"]), int(reply["face"]), self._epoch
        face.audio_window = int(reply.get("audio_window", 0))

    async def frame_cost(self, face: RemoteFace) -> float:
        return face.cost

    def frame_ring(self, face: RemoteFace, slots: int, name: str = "") -> FrameRing:
        width, height = face.size
        extra = 2 * face.audio_window  # an audio-driven face's int16 window per frame, read by the service
        ring = FrameRing((i420_rows(height), width), slots, memory="shared", name=name, extra_bytes=extra)
        self._rings.append(_Ring(ring, next(self._ring_ids)))
        return ring

    def _ring_of(self, frame: np.ndarray) -> _Ring:
        address = frame.__array_interface__["data"][0]
        for entry in self._rings:
            if entry.ring.address <= address < entry.ring.address + entry.ring.nbytes:
                return entry
        raise ValueError("render into frames leased from this service's frame_ring")

    async def _register(self, entry: _Ring) -> None:
        """Hand the ring's memfd to the service (once per connection), on its fd socket."""
        async with entry.lock:
            if entry.registered == self._epoch:
                return
            assert entry.ring.fd is not None
            header = msgspec.msgpack.encode(
                {"client": self._client, "ring": entry.ring_id, "shape": list(entry.ring.frame_shape),
                 "slots": entry.ring.slots, "extra": entry.ring.extra_bytes}
            )  # fmt: skip
            answer = await asyncio.to_thread(send_ring, fds_path(self.path), header, entry.ring.fd)
            if answer != b"ok":
                raise RuntimeError(f"the GPU service refused a frame ring: {answer.decode(errors='replace')}")
            entry.registered = self._epoch

    async def render(
        self,
        face: RemoteFace,
        params: np.ndarray,
        into: Sequence[np.ndarray],
        *,
        deadline: float | None = None,
        key: str = "",
        expires: float | None = None,
        frames: np.ndarray | None = None,
        audio: Sequence[np.ndarray] | None = None,
    ) -> None:
        """The audio windows already lie in the frames' ring slots: only the frame numbers travel."""
        timing = {"deadline": deadline, "key": key, "expires": expires}
        if self.serves(face):
            try:
                await self._render_remote(face, params, into, frames, **timing)
                return
            except ServiceGone:
                pass
        await self._render_here(face, params, into, frames=frames, audio=audio, **timing)

    async def _render_remote(
        self, face: RemoteFace, params: np.ndarray, into: Sequence[np.ndarray], frames: Any, **timing: Any
    ) -> None:
        entry = self._ring_of(into[0])
        await self._register(entry)
        message = {
            "op": "render", "id": next(self._ids), "face": face.face_id,
            "params": np.ascontiguousarray(params, np.float32).tobytes(), "ring": entry.ring_id,
            "slots": [entry.ring.slot_of(frame) for frame in into], **timing,
            "frames": None if frames is None else [int(n) for n in frames],
        }  # fmt: skip
        reply = await self._call(message, keep=list(into))
        self.stats["remote_jobs"] += 1
        if reply["op"] == "done":
            return
        kind = reply.get("kind")
        if kind == "expired":
            raise Expired(reply["error"])
        if kind == "overloaded":
            raise Overloaded(reply["error"])
        raise RuntimeError(f"the GPU service failed a render: {reply['error']}")

    async def _prepare_here(self, face: RemoteFace) -> Any:
        if self._fallback is None:
            self._fallback = self._fallback_factory()
        if face.local is None:
            face.local = await self._fallback.prepare(face.pack, face.size, face.background)
        return face.local

    async def _render_here(self, face: RemoteFace, params: np.ndarray, into: Sequence[np.ndarray], **kw: Any) -> None:
        """The CPU fallback: the same frames, drawn in this process."""
        local = await self._prepare_here(face)
        assert self._fallback is not None
        self.stats["fallback_jobs"] += 1
        await self._fallback.render(local, params, into, **kw)

    def forget(self, key: str) -> None:
        if self._writer is not None:
            self._writer.write(pack({"op": "forget", "key": key}))
        if self._fallback is not None:
            self._fallback.forget(key)

    async def _keep_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_EVERY_S)
            with contextlib.suppress(ServiceGone, TimeoutError):
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    reply = await self._call({"op": "metrics", "id": next(self._ids)})
                self._service_metrics = reply.get("data", {})

    def metrics(self) -> dict[str, Any]:
        """The service's numbers (all workers' channels, as of the last poll) and this client's."""
        base = self._service_metrics or (self._fallback.metrics() if self._fallback is not None else {})
        empty = {"calls": 0, "frames": 0, "errors": 0, "render_seconds": 0.0, "call_sizes": {}}
        return {
            "batch_sizes": {}, "queue_depth": 0, "in_flight": 0, "keys": {}, "tensor": empty,
            **base, "client": {**self.stats, "connected": self.connected},
        }  # fmt: skip

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._fallback is not None:
            await self._fallback.aclose()
        for entry in self._rings:
            entry.ring.close()
