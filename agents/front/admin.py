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

from agents.config import ConfigError, parse_channel
from agents.front.front import Front
from agents.front.links import WorkerGone
from agents.worker.admission import AdmissionRefused
from agents.worker.routes import unknown_channel
from models.avatars import PackError

log = logging.getLogger(__name__)

ADMIN_FRONT: web.AppKey[Front] = web.AppKey("admin-front", Front)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def _bearer(request: web.Request, handler: Any) -> web.StreamResponse:
    """Only /admin/ needs the token; it is compared in constant time and never logged."""
    if not request.path.startswith("/admin/"):
        return await handler(request)
    secret = request.app[ADMIN_FRONT].cfg.server.admin_token
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


def channel_name(front: Front, name: str) -> str:
    """`name` if it is on air, else 404 with the names there are."""
    if name not in front.where:
        raise unknown_channel(name, front.where)
    return name


def _channel(request: web.Request) -> str:
    return channel_name(request.app[ADMIN_FRONT], request.match_info["channel"])


async def list_channels(request: web.Request) -> web.Response:
    front = request.app[ADMIN_FRONT]
    health = await front.health()
    on_air = [
        {"name": name, "state": "paused" if stats.get("paused") else "on_air", **stats}
        for name, stats in health["channels"].items()
    ]
    failed = [{"name": name, "state": "failed", "error": why} for name, why in health["failed"].items()]
    return web.json_response({"channels": on_air + failed, "capacity": health["capacity"]})


async def add_channel(request: web.Request) -> web.Response:
    front = request.app[ADMIN_FRONT]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "the body must be a UTF-8 JSON object: one channel, as in the config's channels: list")
    name = body.get("name") if isinstance(body, dict) else None
    if isinstance(name, str) and name in front.where:
        return _error(409, f"channel {name!r} is already on air; fix: another name, or DELETE it first")
    try:
        cfg = parse_channel(body, front.cfg.model_copy(update={"channels": list(front.configs.values())}), Path.cwd())
    except ConfigError as exc:
        return _error(400, str(exc))
    try:
        summary = await front.add_channel(cfg)
    except AdmissionRefused as exc:
        log.warning("admin API: channel %s refused: %s", cfg.name, exc)
        return _error(503, f"refused: {exc}", capacity=(await front.health())["capacity"])
    except WorkerGone as exc:
        return _error(503, f"refused: {exc}; try again in a few seconds")
    except (PackError, ValueError) as exc:
        return _error(400, str(exc))
    log.info("admin API: channel %s added", cfg.name)
    return web.json_response(summary, status=201)


async def remove_channel(request: web.Request) -> web.Response:
    name = _channel(request)
    await request.app[ADMIN_FRONT].remove_channel(name)
    return web.json_response({"removed": name})


async def pause_channel(request: web.Request) -> web.Response:
    name = _channel(request)
    return web.json_response(await request.app[ADMIN_FRONT].pause(name, "paused from the admin API"))


async def resume_channel(request: web.Request) -> web.Response:
    name = _channel(request)
    return web.json_response(await request.app[ADMIN_FRONT].resume(name))


def add_admin_routes(app: web.Application, front: Front) -> None:
    app[ADMIN_FRONT] = front
    app.middlewares.append(_bearer)
    app.router.add_get("/admin/channels", list_channels)
    app.router.add_post("/admin/channels", add_channel)
    app.router.add_delete("/admin/channels/{channel}", remove_channel)
    app.router.add_post("/admin/channels/{channel}/pause", pause_channel)
    app.router.add_post("/admin/channels/{channel}/resume", resume_channel)
