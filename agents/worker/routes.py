"""The HTTP routes of the channels a worker runs: everything under /c/{channel}/ but the page itself.

  GET  /c/{channel}/info       what the page needs (size, title; nothing secret)
  POST /c/{channel}/offer      {"sdp", "type": "offer"} -> {"sdp", "type": "answer", "viewer"}
  POST /c/{channel}/chat       {"text", "mode": "ask"|"say"} -> 202 {"turn"}: the avatar answers or says it
  POST /c/{channel}/interrupt  stop what the avatar is saying
  GET  /c/{channel}/events     server-sent events: captions and speaking state
  GET  /c/{channel}/stream.ts  the channel as MPEG-TS (H.264 + AAC from its one encoder), for OBS
  GET  /c/{channel}/overlay/{captions|ticker}  OBS overlay pages; the same URL streams their events
With one worker the front serves these itself; with several, the front forwards each request to
the worker that runs the channel, which serves them from its own process. Bad input gets a 4xx
with {"error": "..."} that says what to change; it never touches another channel.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from agents.chat.desk import ChatDesk
from agents.conversation.control import ChannelBusy, ChannelPaused
from agents.worker.channel import Channel
from agents.worker.peers import PeerLimits
from agents.worker.studio import Studio
from overlays import OVERLAY_EVENTS, PAGES_DIR
from stream.ts_stream import MpegTsServer
from stream.webrtc import OfferError

log = logging.getLogger(__name__)

STUDIO: web.AppKey[Studio] = web.AppKey("studio", Studio)
PEERS: web.AppKey[PeerLimits] = web.AppKey("peers", PeerLimits)
FORWARDED: web.AppKey[bool] = web.AppKey("forwarded", bool)
"""True where requests come from the front only (a worker's unix socket): X-Forwarded-For is then the client."""
TS_STREAMS: web.AppKey[MpegTsServer] = web.AppKey("ts_streams", MpegTsServer)
DESK_STATUS = {"queued": 202, "done": 200, "ignored": 200, "refused": 400, "denied": 403, "limited": 429}
TURN_REFUSALS: dict[type[Exception], int] = {ChannelPaused: 409, ChannelBusy: 429, ValueError: 400}
"""A turn a channel refused, as an HTTP status (and, read backwards, what the front raises again)."""


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def refused(exc: Exception) -> web.Response:
    """The answer to a turn the channel refused (TURN_REFUSALS)."""
    return error(next(code for kind, code in TURN_REFUSALS.items() if isinstance(exc, kind)), str(exc))


def unknown_channel(name: str, on_air: Iterable[str]) -> web.HTTPNotFound:
    """404 for a channel that is not on air, with the names that are (every route's answer)."""
    return web.HTTPNotFound(
        text=json.dumps({"error": f"unknown channel {name!r}", "channels": sorted(on_air)}),
        content_type="application/json",
    )


def find_channel(studio: Studio, name: str) -> Channel:
    """The channel on air by that name, or 404 with the names there are (every route's lookup)."""
    channel = studio.channels.get(name)
    if channel is None:
        raise unknown_channel(name, studio.channels)
    return channel


def _channel(request: web.Request) -> Channel:
    return find_channel(request.app[STUDIO], request.match_info["channel"])


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "the body must be a UTF-8 JSON object"}), content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "the body must be a JSON object"}), content_type="application/json"
        )
    return body


def clean_chat_text(text: object, max_chars: int) -> str:
    """Chat text as the avatar may say it; raises ValueError with the reason otherwise."""
    if not isinstance(text, str):
        raise ValueError("'text' must be a string")
    if "\x00" in text or sum(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in text) > 2:
        raise ValueError("the text holds binary or control characters")
    text = re.sub(r"\s+", " ", "".join(c for c in text if unicodedata.category(c) != "Cc" or c in "\t\n\r")).strip()
    if not text:
        raise ValueError("the text is empty")
    if len(text) > max_chars:
        raise ValueError(f"the text has {len(text)} characters; at most {max_chars} are allowed")
    return text


async def info(request: web.Request) -> web.Response:
    return web.json_response(_channel(request).info())


def client_address(request: web.Request) -> str:
    if request.app.get(FORWARDED):
        return request.headers.get("X-Forwarded-For", "")
    return request.remote or ""


async def offer(request: web.Request) -> web.Response:
    channel = _channel(request)
    body = await json_body(request)
    client, peers = client_address(request), request.app[PEERS]
    full = peers.refuse(client, request.app[STUDIO].channels)
    if full is not None:
        log.info("channel %s: offer refused: %s", channel.name, full)
        return error(429, full)
    try:
        sdp, viewer = await channel.media.webrtc.answer(body.get("sdp"), body.get("type"))
    except OfferError as exc:
        log.info("channel %s: offer refused: %s", channel.name, exc)
        return error(400, str(exc))
    peers.opened(client, channel.name, viewer)
    return web.json_response({"sdp": sdp, "type": "answer", "viewer": viewer})


async def chat(request: web.Request) -> web.Response:
    channel = _channel(request)
    body = await json_body(request)
    desk = request.app[STUDIO].desks.desk(channel.name)
    if desk is not None:  # the channel has chat rules: the page's box goes through them as IRC does
        return _desk_chat(desk, body, channel.cfg.conversation.chat, client_address(request))
    try:
        text = clean_chat_text(body.get("text"), channel.cfg.max_chat_chars)
    except ValueError as exc:
        log.info("channel %s: chat message refused: %s", channel.name, exc)
        return error(400, str(exc))
    mode = body.get("mode", channel.cfg.conversation.chat)
    if mode not in ("ask", "say"):
        return error(400, "'mode' must be 'ask' (the avatar answers) or 'say' (it speaks the text)")
    try:
        turn = channel.conversation.start_turn("answer" if mode == "ask" else "say", text)
    except (ChannelBusy, ChannelPaused) as exc:
        return refused(exc)
    return web.json_response({"turn": turn.turn_id, "mode": mode}, status=202)


def _desk_chat(desk: ChatDesk, body: dict[str, Any], default_mode: str, user: str) -> web.Response:
    text, mode = body.get("text"), body.get("mode", default_mode)
    if not isinstance(text, str):
        return error(400, "'text' must be a string")
    if mode not in ("ask", "say"):
        return error(400, "'mode' must be 'ask' (the avatar answers) or 'say' (it speaks the text)")
    result = desk.submit_page(text, mode, user=user)
    code = DESK_STATUS[result["status"]]
    if code >= 400:
        return error(code, result.get("reason", result["status"]), outcome=result["status"])
    return web.json_response(result, status=code)


async def interrupt(request: web.Request) -> web.Response:
    """The page's stop button: the avatar stops talking at once."""
    channel = _channel(request)
    return web.json_response({"stopped": channel.conversation.interrupt("stopped from the page")})


async def _event_stream(request: web.Request, channel: Channel, types: frozenset[str] | None) -> web.StreamResponse:
    """Server-sent events of `channel` (only `types`, when given) until the client or the server goes."""
    try:
        listener = channel.events.listen()
    except OverflowError as exc:
        return error(503, str(exc))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):  # the page went away: its stream simply ends
        await response.write(b": connected\n\n")
        async for event in listener:
            if types is None or event.get("type") in types:
                await response.write(f"data: {json.dumps(event)}\n\n".encode())
    return response


async def events(request: web.Request) -> web.StreamResponse:
    return await _event_stream(request, _channel(request), None)


async def overlay(request: web.Request) -> web.StreamResponse:
    """An OBS overlay page; the same URL is its event stream (an EventSource asks for text/event-stream)."""
    channel = _channel(request)
    name = request.match_info["overlay"]
    if name not in OVERLAY_EVENTS:
        return error(404, f"no overlay {name!r}; overlays: {', '.join(sorted(OVERLAY_EVENTS))}")
    if "text/event-stream" in request.headers.get("Accept", ""):
        return await _event_stream(request, channel, OVERLAY_EVENTS[name])
    return web.FileResponse(PAGES_DIR / f"{name}.html")


async def stream_ts(request: web.Request) -> web.StreamResponse:
    """The channel as MPEG-TS over HTTP: what OBS's Media Source plays (`avatarcast obs setup`)."""
    channel = _channel(request)
    return await request.app[TS_STREAMS].serve(request, channel.encoder, channel.name)


async def _end_streams(app: web.Application) -> None:
    """Server shutdown: end every SSE and MPEG-TS response, or the server would wait for them forever."""
    app[TS_STREAMS].close()
    for channel in app[STUDIO].channels.values():
        channel.events.close()


def add_channel_routes(app: web.Application, studio: Studio, *, forwarded: bool = False) -> None:
    """`forwarded`: the app serves the front only (a worker process), which names the client."""
    app[STUDIO] = studio
    app[FORWARDED] = forwarded
    server = studio.cfg.server
    app[PEERS] = PeerLimits(server.max_peers_per_client, server.max_peers)
    app[TS_STREAMS] = MpegTsServer()
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/c/{channel}/info", info)
    app.router.add_post("/c/{channel}/offer", offer)
    app.router.add_post("/c/{channel}/chat", chat)
    app.router.add_get("/c/{channel}/events", events)
    app.router.add_post("/c/{channel}/interrupt", interrupt)
    app.router.add_get("/c/{channel}/stream.ts", stream_ts)
    app.router.add_get("/c/{channel}/overlay/{overlay}", overlay)
