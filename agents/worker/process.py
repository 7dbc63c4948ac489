"""A media worker process: `python -m agents.worker.process` (the front starts and supervises it).

It runs a Studio for the channels the front places here, on its own event loop and cores, and
serves on a unix socket only the front can reach:
  /c/{channel}/...             the channels' own routes (agents/worker/routes.py), which the front
                               forwards from the public port
  /_worker/health, /metrics    Studio.health() and the metric families (agents/worker/metrics.py)
  /_worker/channels            POST a channel config to put it on air; DELETE .../{name}; pause, resume
  /_worker/chat/{name}         an IRC line (and its ref) for the channel's chat desk
  /_worker/chat-out            the desks' lines for IRC, streamed to the front, which posts them, and
                               the refs of the lines they are done with (agents/front/chat_ledger.py)
  /_worker/telemetry           the studio page's numbers (agents/worker/telemetry.py)
  /_worker/thumbnail/{name}    the channel's latest picture, a small JPEG (404 before its first frame)
  /_worker/channels/{name}/skip, /say   the studio page's skip and say buttons (agents/worker/control.py)
It prints one line, `ready`, once its channels are on air, and stops with the front (SIGTERM, or
the front's death: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from agents.chat.messages import IRCLine
from agents.config import ConfigError, parse_config
from agents.conversation.control import ChannelBusy, ChannelPaused
from agents.worker import control
from agents.worker.admission import AdmissionRefused
from agents.worker.metrics import StudioCollector, to_wire
from agents.worker.routes import STUDIO, add_channel_routes, error, find_channel, json_body, refused
from agents.worker.studio import Studio, local_lipsync
from agents.worker.telemetry import StudioTelemetry
from models.avatars import PackError

log = logging.getLogger("avatarcast.worker")

CHAT_OUT: web.AppKey[asyncio.Queue[dict[str, str] | None]] = web.AppKey("chat_out", asyncio.Queue)
COLLECTOR: web.AppKey[StudioCollector] = web.AppKey("collector", StudioCollector)
TELEMETRY: web.AppKey[StudioTelemetry] = web.AppKey("telemetry", StudioTelemetry)
CHAT_OUT_QUEUE = 256
"""Lines for IRC waiting for the front; beyond this the oldest is dropped (chat has moved on)."""
PR_SET_PDEATHSIG = 1
SHUTDOWN_TIMEOUT_S = 3.0
"""Requests still open when the worker stops get this long (its streams are ended at once)."""


def die_with_parent() -> None:
    """Get SIGTERM when the front dies, however it dies: a worker must never outlive its front."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def health(request: web.Request) -> web.Response:
    return web.json_response(request.app[STUDIO].health())


async def metrics(request: web.Request) -> web.Response:
    return web.json_response(to_wire(request.app[COLLECTOR].collect()))


async def add_channel(request: web.Request) -> web.Response:
    studio = request.app[STUDIO]
    body = await json_body(request)
    try:
        cfg = parse_config({**studio.cfg.model_dump(mode="json", exclude_none=True), "channels": [body]}, "channel")
        await studio.add_channel(cfg.channels[0])
    except AdmissionRefused as exc:
        return error(503, str(exc), refused=True)
    except (ConfigError, PackError, ValueError) as exc:
        return error(400, str(exc))
    return web.json_response(studio.summary(cfg.channels[0].name), status=201)


async def remove_channel(request: web.Request) -> web.Response:
    studio = request.app[STUDIO]
    name = find_channel(studio, request.match_info["channel"]).name
    await studio.remove_channel(name)
    return web.json_response({"removed": name})


async def pause(request: web.Request) -> web.Response:
    studio = request.app[STUDIO]
    channel = find_channel(studio, request.match_info["channel"])
    body = await json_body(request)
    channel.conversation.pause(str(body.get("reason", "paused")))
    return web.json_response(studio.summary(channel.name))


async def resume(request: web.Request) -> web.Response:
    studio = request.app[STUDIO]
    channel = find_channel(studio, request.match_info["channel"])
    channel.conversation.resume()
    return web.json_response(studio.summary(channel.name))


async def telemetry(request: web.Request) -> web.Response:
    return web.json_response(request.app[TELEMETRY].snapshot())


async def thumbnail(request: web.Request) -> web.Response:
    jpeg = await request.app[TELEMETRY].thumbnail(request.match_info["channel"])
    if jpeg is None:
        return error(404, "no picture of that channel here (yet)")
    return web.Response(body=jpeg, content_type="image/jpeg")


async def skip(request: web.Request) -> web.Response:
    channel = find_channel(request.app[STUDIO], request.match_info["channel"])
    return web.json_response({"stopped": control.skip(channel)})


async def say(request: web.Request) -> web.Response:
    channel = find_channel(request.app[STUDIO], request.match_info["channel"])
    body = await json_body(request)
    try:
        return web.json_response({"turn": control.say(channel, body.get("text"))}, status=202)
    except (ChannelPaused, ChannelBusy, ValueError) as exc:
        return refused(exc)


async def chat_line(request: web.Request) -> web.Response:
    body = await json_body(request)
    line = IRCLine(str(body["command"]), tuple(map(str, body["params"])), dict(body["tags"]), str(body["prefix"]))
    request.app[STUDIO].desks.line(request.match_info["channel"], line, str(body.get("ref", "")))
    return web.json_response({"ok": True})


async def chat_out(request: web.Request) -> web.StreamResponse:
    """The desks' lines for IRC, one JSON object a line, for as long as the front reads."""
    queue = request.app[CHAT_OUT]
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    while (line := await queue.get()) is not None:  # None: the worker is stopping
        await response.write(json.dumps(line).encode() + b"\n")
    return response


def queue_put(queue: asyncio.Queue[dict[str, str] | None], item: dict[str, str]) -> None:
    """Onto the stream to the front; when it is full the oldest goes (chat has moved on)."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


def make_worker_app(studio: Studio) -> web.Application:
    app = web.Application(client_max_size=256 * 1024)
    add_channel_routes(app, studio, forwarded=True)
    app[COLLECTOR] = StudioCollector(studio)
    app[TELEMETRY] = StudioTelemetry(studio)
    app[CHAT_OUT] = asyncio.Queue(CHAT_OUT_QUEUE)
    out = app[CHAT_OUT]
    studio.post_chat = lambda irc_channel, text: queue_put(out, {"irc_channel": irc_channel, "text": text})
    studio.desks.settled = lambda ref: queue_put(out, {"settled": ref})  # for the front's chat ledger
    app.router.add_get("/_worker/health", health)
    app.router.add_get("/_worker/metrics", metrics)
    app.router.add_post("/_worker/channels", add_channel)
    app.router.add_delete("/_worker/channels/{channel}", remove_channel)
    app.router.add_post("/_worker/channels/{channel}/pause", pause)
    app.router.add_post("/_worker/channels/{channel}/resume", resume)
    app.router.add_post("/_worker/chat/{channel}", chat_line)
    app.router.add_get("/_worker/chat-out", chat_out)
    app.router.add_get("/_worker/telemetry", telemetry)
    app.router.add_get("/_worker/thumbnail/{channel}", thumbnail)
    app.router.add_post("/_worker/channels/{channel}/skip", skip)
    app.router.add_post("/_worker/channels/{channel}/say", say)
    app.on_shutdown.append(_end_chat_out)
    return app


async def _end_chat_out(app: web.Application) -> None:
    queue = app[CHAT_OUT]
    while queue.full():
        queue.get_nowait()
    queue.put_nowait(None)


async def serve(args: argparse.Namespace) -> None:
    from models.lipsync.remote import RemoteLipSync
    from stream.webrtc import restrict_host_candidates

    data = json.loads(await asyncio.to_thread(Path(args.config).read_text))
    cfg = parse_config(data["studio"], "worker config")
    restrict_host_candidates(cfg.server.host_candidates())
    lipsync = None
    if args.lipsync_socket:  # the GPU service renders; this CPU only while it is away
        on_cpu = cfg.model_copy(update={"lipsync": cfg.lipsync.model_copy(update={"device": "cpu", "kernel": "auto"})})
        lipsync = await RemoteLipSync.connect(args.lipsync_socket, fallback=lambda: local_lipsync(on_cpu))
    asr_socket = args.lipsync_socket if args.asr_remote else None
    voice_socket = args.lipsync_socket if args.voices_remote else None
    studio = Studio(cfg, lipsync=lipsync, cores=data.get("cores"), asr_socket=asr_socket, voice_socket=voice_socket)
    runner: web.AppRunner | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await studio.start([c for c in cfg.channels if c.name in set(data["channels"])])
        runner = web.AppRunner(make_worker_app(studio), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        await web.UnixSite(runner, args.socket).start()
        print("ready", flush=True)
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await studio.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description="an avatarcast media worker (started by the front)")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--socket", required=True, help="the unix socket to serve on")
    parser.add_argument("--config", required=True, help="JSON: {studio: config, channels: [names to start]}")
    parser.add_argument("--lipsync-socket", default=None, help="the GPU service's socket, if it renders")
    parser.add_argument("--asr-remote", action="store_true", help="speech recognition runs in the GPU service too")
    parser.add_argument("--voices-remote", action="store_true", help="voices speak in the GPU service (tts.process)")
    args = parser.parse_args()
    die_with_parent()
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s worker {args.index} %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("aioice", "aiortc", "asyncio", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
