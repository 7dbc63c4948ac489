"""The GPU service: one process that owns the device and renders lip-sync for every media worker.

    python -m models.lipsync.server --socket PATH --device cuda:0 [--max-batch 64] [--kernel auto]
        [--model wav2lip --checkpoint PATH] [--asr builtin:tiny.en --asr-device cuda:0] [--tts]

Workers connect over a unix socket (wire.py) and hand over their frame rings once; every render
request of every channel of every worker then goes into ONE deadline batcher (the same
LipSyncService a single process uses), so a batch holds the frames of all workers' channels that
are due next, and the device writes them straight into the workers' shared, page-locked rings. It
prints `ready` once it listens, and stops on SIGTERM or when its parent dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from models.avatars import PackError
from models.batcher import Expired, Overloaded
from models.frame_ring import MappedRing
from models.lipsync.params import N_PARAMS
from models.lipsync.service import LipSyncService, NeuralModel
from models.lipsync.voices import ServiceVoices
from models.lipsync.wire import WireError, fds_path, pack, read_message
from models.protocols import PreparedFace

log = logging.getLogger("avatarcast.gpu")
# the audio ring of a client's speech recognition is ring 0 (models/asr_remote.py); frame rings count from 1

MAX_RING_BYTES = 1 << 30
"""A worker's ring larger than this is refused (a bug or an attack, not a channel's frames)."""


class RenderServer:
    def __init__(self, service: LipSyncService, asr: Any = None, *, voices: bool = False) -> None:
        """`asr`: a WhisperASR on the device, for every worker's listening sessions (or None); `voices`:
        speak for the workers too (voices loaded here on demand, models/lipsync/voices.py)."""
        self.service = service
        self.asr = asr
        self.voices = ServiceVoices(lambda client, ring: self.rings[(client, ring)]) if voices else None
        self.faces: dict[int, PreparedFace] = {}
        self._face_ids: dict[int, int] = {}  # id(prepared face) -> face id: channels share prepared faces
        self.rings: dict[tuple[int, int], MappedRing] = {}
        self._clients = itertools.count(1)
        self._next_face = itertools.count(1)
        self._lock = threading.Lock()  # rings arrive on the fd thread

    # ------------------------------------------------------------------ control connections
    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = next(self._clients)
        jobs: dict[int, asyncio.Task[None]] = {}
        try:
            while True:
                message = await read_message(reader)
                op = message["op"]
                if op == "hello":
                    asr = {"multilingual": self.asr.multilingual} if self.asr is not None else None
                    writer.write(
                        pack({"op": "hello", "client": client, "device": str(self.service.device), "asr": asr})
                    )
                elif op == "transcribe":
                    jobs[message["id"]] = asyncio.create_task(self._transcribe(client, message, writer, jobs))
                elif op in ("voice", "synthesize", "heard") and self.voices is None:
                    writer.write(pack({"op": "error", "id": message.get("id"), "kind": "bad", "error": "no voices"}))
                elif op == "voice":
                    jobs[-(1 << 40) - message["id"]] = asyncio.create_task(self.voices.load(client, message, writer))
                elif op == "synthesize":
                    jobs[(1 << 40) + message["id"]] = asyncio.create_task(self.voices.say(client, message, writer))
                elif op == "heard":
                    self.voices.heard(client, message)
                elif op == "prepare":
                    jobs[-message["id"]] = asyncio.create_task(self._prepare(message, writer, jobs))
                elif op == "render":
                    jobs[message["id"]] = asyncio.create_task(self._render(client, message, writer, jobs))
                elif op == "cancel" and message["id"] in jobs:
                    jobs[message["id"]].cancel()
                elif op == "forget":
                    self.service.forget(str(message["key"]))
                elif op == "metrics":
                    writer.write(pack({"op": "metrics", "id": message["id"], "data": self.service.metrics()}))
        except (asyncio.IncompleteReadError, ConnectionError, WireError) as exc:
            if not isinstance(exc, asyncio.IncompleteReadError):
                log.warning("client %d: dropped (%s)", client, exc)
        except asyncio.CancelledError:  # the service is stopping: this connection ends with it
            pass
        finally:
            for task in jobs.values():
                task.cancel()
            await asyncio.gather(*jobs.values(), return_exceptions=True)
            if self.voices is not None:
                self.voices.forget(client)
            self._drop_rings(client)
            writer.close()

    async def _prepare(self, message: dict[str, Any], writer: asyncio.StreamWriter, jobs: dict[int, Any]) -> None:
        reply: dict[str, Any]
        try:
            size = (int(message["size"][0]), int(message["size"][1]))
            background = tuple(message["background"]) if message.get("background") else None
            face = await self.service.prepare(Path(message["pack"]), size, background)  # type: ignore[arg-type]
            face_id = self._face_ids.setdefault(id(face), next(self._next_face))
            self.faces[face_id] = face
            still = self.service.render_now([face], np.zeros((1, N_PARAMS), np.float32))[0]
            cost = await self.service.frame_cost(face)
            reply = {
                "op": "prepared", "id": message["id"], "face": face_id, "kind": face.kind,
                "size": list(face.size), "mouth_box": list(face.mouth_box), "still": still.tobytes(), "cost": cost,
                "audio_window": getattr(face, "audio_window", 0),
            }  # fmt: skip
        except (PackError, OSError, ValueError, KeyError, TypeError) as exc:
            reply = {"op": "error", "id": message.get("id"), "kind": "pack", "error": str(exc)}
        finally:
            jobs.pop(-message["id"], None)
        writer.write(pack(reply))

    async def _render(
        self, client: int, message: dict[str, Any], writer: asyncio.StreamWriter, jobs: dict[int, Any]
    ) -> None:
        job = message["id"]
        try:
            face = self.faces[int(message["face"])]
            ring = self.rings[(client, int(message["ring"]))]
            params = np.frombuffer(message["params"], np.float32).reshape(-1, N_PARAMS)
            slots = [int(slot) for slot in message["slots"]]
            into = [ring.view(slot) for slot in slots]
            extras: dict[str, Any] = {}
            if message.get("frames") is not None:  # an audio-driven face: its windows lie in the slots
                extras["frames"] = np.asarray(message["frames"], np.int64)
                extras["audio"] = [ring.extra(slot).view(np.int16) for slot in slots] if ring.extra_bytes else None
            await self.service.render(
                face, params, into, deadline=message.get("deadline"), key=str(message["key"]),
                expires=message.get("expires"), **extras,
            )  # fmt: skip
            reply: dict[str, Any] = {"op": "done", "id": job}
        except asyncio.CancelledError:
            reply = {"op": "error", "id": job, "kind": "failed", "error": "cancelled"}
        except Expired as exc:
            reply = {"op": "error", "id": job, "kind": "expired", "error": str(exc)}
        except Overloaded as exc:
            reply = {"op": "error", "id": job, "kind": "overloaded", "error": str(exc)}
        except (KeyError, ValueError) as exc:
            reply = {"op": "error", "id": job, "kind": "bad", "error": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:  # the renderer failed (out of memory, a device error): this job only
            reply = {"op": "error", "id": job, "kind": "failed", "error": f"{type(exc).__name__}: {exc}"}
        finally:
            jobs.pop(job, None)
        with contextlib.suppress(ConnectionError):
            writer.write(pack(reply))

    async def _transcribe(
        self, client: int, message: dict[str, Any], writer: asyncio.StreamWriter, jobs: dict[int, Any]
    ) -> None:
        job = message["id"]
        try:
            if self.asr is None:
                raise ValueError("this service runs no speech recognition")
            ring = self.rings[(client, 0)]
            audio = ring.view(int(message["slot"])).view(np.float32)[: int(message["samples"])].copy()
            work = self.asr.transcribe(audio, beam_size=int(message["beam"]), urgent=bool(message["urgent"]))
            reply: dict[str, Any] = {"op": "transcribed", "id": job, "text": await asyncio.wrap_future(work)}
        except asyncio.CancelledError:
            reply = {"op": "error", "id": job, "kind": "failed", "error": "cancelled"}
        except Exception as exc:
            reply = {"op": "error", "id": job, "kind": "failed", "error": f"{type(exc).__name__}: {exc}"}
        finally:
            jobs.pop(job, None)
        with contextlib.suppress(ConnectionError):
            writer.write(pack(reply))

    # ------------------------------------------------------------------ rings (their own socket)
    def take_rings(self, listener: socket.socket) -> None:
        """The fd thread: each connection hands over one ring's memfd (SCM_RIGHTS) and gets b"ok"."""
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener closed: shutting down
            with conn:
                try:
                    data, fds, _, _ = socket.recv_fds(conn, 4096, 1)
                    header = msgspec.msgpack.decode(data)
                    if len(fds) != 1:
                        raise ValueError("a ring comes with exactly one file descriptor")
                    shape, slots = tuple(int(d) for d in header["shape"]), int(header["slots"])
                    if slots * (int(np.prod(shape)) + int(header.get("extra", 0))) > MAX_RING_BYTES:
                        os.close(fds[0])
                        raise ValueError(f"a ring of {slots} x {shape} is too large")
                    extra = int(header.get("extra", 0))
                    ring = MappedRing(
                        fds[0], shape, slots, extra_bytes=extra, pin_memory=self.service.device.type == "cuda"
                    )
                    with self._lock:
                        self.rings[(int(header["client"]), int(header["ring"]))] = ring
                    conn.sendall(b"ok")
                except Exception as exc:
                    log.warning("a ring was refused: %s", exc)
                    with contextlib.suppress(OSError):
                        conn.sendall(f"refused: {exc}".encode())

    def _drop_rings(self, client: int) -> None:
        with self._lock:
            gone = [key for key in self.rings if key[0] == client]
            for key in gone:
                self.rings.pop(key).close()


async def serve(args: argparse.Namespace) -> None:
    neural = NeuralModel(args.model, Path(args.checkpoint)) if args.model else None
    service = LipSyncService(args.device, max_batch=args.max_batch, sprite_kernel=args.kernel, neural=neural)
    asr = None
    if args.asr:
        from models.asr_whisper import WhisperASR

        asr = await asyncio.to_thread(WhisperASR.load, args.asr, args.asr_device, language=args.asr_language)
    server = RenderServer(service, asr, voices=args.tts)
    for path in (args.socket, fds_path(args.socket)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(fds_path(args.socket))
    listener.listen(64)
    threading.Thread(target=server.take_rings, args=(listener,), name="rings", daemon=True).start()
    control = await asyncio.start_unix_server(server.serve_client, args.socket)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("GPU service on %s, rendering on %s", args.socket, service.device)
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        control.close()
        listener.close()
        await service.aclose()
        if asr is not None:
            asr.close()
        for path in (args.socket, fds_path(args.socket)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def main() -> None:
    parser = argparse.ArgumentParser(description="avatarcast's GPU service: lip-sync for every worker")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--kernel", default="auto")
    parser.add_argument("--model", default=None, help="wav2lip | wav2lip256: photo and video packs' network")
    parser.add_argument("--checkpoint", default=None, help="the network's checkpoint file")
    parser.add_argument("--asr", default=None, help="a Whisper model to serve every worker's speech recognition")
    parser.add_argument("--asr-device", default="auto")
    parser.add_argument("--asr-language", default=None)
    parser.add_argument("--tts", action="store_true", help="speak for every worker too (voices loaded on demand)")
    args = parser.parse_args()
    with contextlib.suppress(OSError, AttributeError):  # stop with the front, however it ends
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s gpu-service: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
