"""The admin API: list, add, remove, pause and resume channels while the studio runs.

  GET    /admin/channels                 every channel: on air (with its stats) or failed (with why)
  POST   /admin/channels                 a channel config (JSON, same keys as one channels: entry) -> 201
  DELETE /admin/channels/{channel}       take it off air
  POST   /admin/channels/{channel}/pause   it goes quiet: idle picture, no answers
  POST   /admin/channels/{channel}/resume

Every request needs `Authorization: Bearer <server.admin_token>`; without a configured token the
API does not exist (404), so a studio is never left open by accident. Changing one channel never
touches the others: they keep their frames while one is prepared, measured and admitted.
"""

from __future__ import annotations

import hmac
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from agents.admission import AdmissionRefused
from agents.channel import Channel
from agents.config import ConfigError, parse_channel
from agents.studio import Studio
from models.avatars import PackError

log = logging.getLogger(__name__)

ADMIN_STUDIO: web.AppKey[Studio] = web.AppKey("admin-studio", Studio)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def _bearer(request: web.Request, handler: Any) -> web.StreamResponse:
    """Only /admin/ needs the token; it is compared in constant time and never logged."""
    if not request.path.startswith("/admin/"):
        return await handler(request)
    secret = request.app[ADMIN_STUDIO].cfg.server.admin_token
    if secret is None:
        return _error(404, "the admin API is off; fix: set server.admin_token to env:NAME in the config")
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), secret.reveal().encode()):
        log.warning("admin API: refused a request to %s %s without the right token", request.method, request.path)
        return web.json_response(
            {"error": "missing or wrong token; send Authorization: Bearer <server.admin_token>"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="avatarcast admin"'},
        )
    return await handler(request)


def find_channel(studio: Studio, name: str) -> Channel:
    """The channel on air by that name, or 404 with the names there are (every route's lookup)."""
    channel = studio.channels.get(name)
    if channel is None:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"unknown channel {name!r}", "channels": sorted(studio.channels)}),
            content_type="application/json",
        )
    return channel


def _channel(request: web.Request) -> Channel:
    return find_channel(request.app[ADMIN_STUDIO], request.match_info["channel"])


def _summary(channel: Channel) -> dict[str, Any]:
    return {"name": channel.name, "state": "paused" if channel.paused else "on_air", **channel.stats()}


async def list_channels(request: web.Request) -> web.Response:
    studio = request.app[ADMIN_STUDIO]
    on_air = [_summary(c) for c in studio.channels.values()]
    failed = [{"name": name, "state": "failed", "error": why} for name, why in studio.failed.items()]
    return web.json_response({"channels": on_air + failed, "capacity": studio.health()["capacity"]})


async def add_channel(request: web.Request) -> web.Response:
    studio = request.app[ADMIN_STUDIO]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "the body must be a UTF-8 JSON object: one channel, as in the config's channels: list")
    name = body.get("name") if isinstance(body, dict) else None
    if isinstance(name, str) and name in studio.channels:
        return _error(409, f"channel {name!r} is already on air; fix: another name, or DELETE it first")
    try:
        cfg = parse_channel(
            body, studio.cfg.model_copy(update={"channels": [c.cfg for c in studio.channels.values()]}), Path.cwd()
        )
    except ConfigError as exc:
        return _error(400, str(exc))
    try:
        channel = await studio.add_channel(cfg)
    except AdmissionRefused as exc:
        log.warning("admin API: channel %s refused: %s", cfg.name, exc)
        return _error(503, f"refused: {exc}", capacity=studio.health()["capacity"])
    except (PackError, ValueError) as exc:
        return _error(400, str(exc))
    log.info("admin API: channel %s added", cfg.name)
    return web.json_response(_summary(channel), status=201)


async def remove_channel(request: web.Request) -> web.Response:
    channel = _channel(request)
    await request.app[ADMIN_STUDIO].remove_channel(channel.name)
    return web.json_response({"removed": channel.name})


async def pause_channel(request: web.Request) -> web.Response:
    channel = _channel(request)
    channel.pause("paused from the admin API")
    return web.json_response(_summary(channel))


async def resume_channel(request: web.Request) -> web.Response:
    channel = _channel(request)
    channel.resume()
    return web.json_response(_summary(channel))


def add_admin_routes(app: web.Application, studio: Studio) -> None:
    app[ADMIN_STUDIO] = studio
    app.middlewares.append(_bearer)
    app.router.add_get("/admin/channels", list_channels)
    app.router.add_post("/admin/channels", add_channel)
    app.router.add_delete("/admin/channels/{channel}", remove_channel)
    app.router.add_post("/admin/channels/{channel}/pause", pause_channel)
    app.router.add_post("/admin/channels/{channel}/resume", resume_channel)
