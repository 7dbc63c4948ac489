"""The studio page: every channel live on one screen, with its controls, behind the admin token.

  GET    /studio                         the page (without a session: 303 to the login form)
  GET    /studio/login, POST /studio/login {"token"}   the form; a right token sets the session cookie
  POST   /studio/logout
  GET    /studio/api/state               the last sample: channels, outputs, chat queues, answers, the strip
  GET    /studio/api/history             the hour behind it, for the plots (agents/front/history.py)
  GET    /studio/api/events              server-sent events: every new sample (agents/front/studio_feed.py)
  GET    /studio/api/thumb/{channel}     the channel's latest picture, a small JPEG
  POST   /studio/api/channels            add a channel: the admin API's own handler, the same checks
  DELETE /studio/api/channels/{channel}  take it off air
  POST   /studio/api/channels/{channel}/pause | resume | skip | say {"text"}

Everything under /studio but the login form needs the session cookie (agents/front/sessions.py) or
`Authorization: Bearer <server.admin_token>`: the page is refused (303 to the login), the API too
(401), and the page's own files are not served as public static files. Without a configured token
the page does not exist (404), as the admin API. State changes pass the public port's guard (JSON
only, own origin only) like every other route.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

from aiohttp import web

from agents.conversation.control import ChannelBusy, ChannelPaused
from agents.front import WEB_DIR
from agents.front.admin import ADMIN_FRONT, add_channel, channel_name, remove_channel, resume_channel
from agents.front.front import Front
from agents.front.guard import RateLimit
from agents.front.links import WorkerGone
from agents.front.sessions import COOKIE, Sessions, token_matches
from agents.front.studio_feed import StudioFeed
from agents.worker.routes import error, json_body, refused

log = logging.getLogger(__name__)

FEED: web.AppKey[StudioFeed] = web.AppKey("studio-feed", StudioFeed)
SESSIONS: web.AppKey[Sessions] = web.AppKey("studio-sessions", Sessions)
LOGINS: web.AppKey[RateLimit] = web.AppKey("studio-logins", RateLimit)
LOGINS_PER_MINUTE = 20
PUBLIC = frozenset({"/studio/login"})
PAGE_FILES = {"/studio": ("studio.html", "text/html"), "/studio/studio.js": ("studio.js", "text/javascript"),
              "/studio/studio.css": ("studio.css", "text/css")}  # fmt: skip
HIDDEN_STATIC = "/static/studio"
"""The page's files sit in the web folder, whose files are public: these are served only through /studio."""


def _is_studio(path: str) -> bool:
    return path == "/studio" or path.startswith("/studio/") or path.startswith(HIDDEN_STATIC)


@web.middleware
async def _gate(request: web.Request, handler: Any) -> web.StreamResponse:
    """The session (or the bearer token) in front of everything under /studio but the login form."""
    if not _is_studio(request.path):
        return await handler(request)
    if request.app[ADMIN_FRONT].cfg.server.admin_token is None:
        return error(404, "the studio page is off; fix: set server.admin_token to env:NAME in the config")
    if request.path.startswith(HIDDEN_STATIC):
        return error(404, "not found; the studio page is at /studio")
    if request.path in PUBLIC or request.app[SESSIONS].allowed(request):
        return await handler(request)
    if request.path.startswith("/studio/api/"):
        return web.json_response(
            {"error": "log in at /studio/login, or send Authorization: Bearer <server.admin_token>"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="avatarcast studio"'},
        )
    raise web.HTTPSeeOther("/studio/login")


# ---------------------------------------------------------------------- page and login
async def page_file(request: web.Request) -> web.FileResponse:
    name, content_type = PAGE_FILES[request.path]
    return web.FileResponse(WEB_DIR / name, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


async def login_form(request: web.Request) -> web.StreamResponse:
    if request.app[SESSIONS].allowed(request):
        raise web.HTTPSeeOther("/studio")
    return web.FileResponse(WEB_DIR / "studio_login.html", headers={"Cache-Control": "no-store"})


async def login(request: web.Request) -> web.Response:
    wait = request.app[LOGINS].take(request.remote or "")
    if wait > 0:
        retry = str(math.ceil(wait))
        return web.json_response(
            {"error": f"too many tries; wait {retry} s"}, status=429, headers={"Retry-After": retry}
        )
    body = await json_body(request)
    token = body.get("token")
    if not isinstance(token, str) or not token_matches(token, request.app[ADMIN_FRONT].cfg.server):
        log.warning("studio page: a login with a wrong token from %s", request.remote)
        return error(401, "that is not the studio's admin token")
    sessions = request.app[SESSIONS]
    response = web.json_response({"ok": True})
    sessions.set_cookie(response, request, sessions.open())
    log.info("studio page: logged in from %s", request.remote)
    return response


async def logout(request: web.Request) -> web.Response:
    request.app[SESSIONS].close(request.cookies.get(COOKIE))
    response = web.json_response({"ok": True})
    Sessions.clear_cookie(response)
    return response


# ---------------------------------------------------------------------- live data
async def state(request: web.Request) -> web.Response:
    feed = request.app[FEED]
    return web.json_response(feed.state if feed.state is not None else await feed.sample())


async def history(request: web.Request) -> web.Response:
    return web.json_response(request.app[FEED].history.to_json())


async def events(request: web.Request) -> web.StreamResponse:
    """Every new sample as an SSE message, until the page goes, its session ends or the server stops."""
    feed, sessions = request.app[FEED], request.app[SESSIONS]
    try:
        queue = feed.subscribe()
    except OverflowError as exc:
        return error(503, str(exc))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    try:
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):
            await response.write(b": connected\n\n")
            while (message := await queue.get()) is not None and sessions.allowed(request):
                await response.write(message)
    finally:
        feed.unsubscribe(queue)
    return response


async def thumbnail(request: web.Request) -> web.Response:
    front = request.app[ADMIN_FRONT]
    name = channel_name(front, request.match_info["channel"])
    try:
        jpeg = await front.where[name].thumbnail(name)
    except WorkerGone as exc:
        return error(503, str(exc))
    if jpeg is None:
        return error(404, f"no picture of {name} yet")
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------------- buttons
async def pause(request: web.Request) -> web.Response:
    front = request.app[ADMIN_FRONT]
    name = channel_name(front, request.match_info["channel"])
    return web.json_response(await front.pause(name, "paused from the studio page"))


async def skip(request: web.Request) -> web.Response:
    front = request.app[ADMIN_FRONT]
    name = channel_name(front, request.match_info["channel"])
    try:
        return web.json_response({"stopped": await front.where[name].skip(name)})
    except WorkerGone as exc:
        return error(503, str(exc))


async def say(request: web.Request) -> web.Response:
    front = request.app[ADMIN_FRONT]
    name = channel_name(front, request.match_info["channel"])
    body = await json_body(request)
    try:
        turn = await front.where[name].say(name, body.get("text"))  # type: ignore[arg-type]
    except WorkerGone as exc:
        return error(503, str(exc))
    except (ChannelPaused, ChannelBusy, ValueError) as exc:
        return refused(exc)
    return web.json_response({"turn": turn}, status=202)


# ---------------------------------------------------------------------- wiring
async def _start_feed(app: web.Application) -> None:
    app[FEED].start()


async def _stop_feed(app: web.Application) -> None:
    await app[FEED].aclose()


def add_studio_routes(app: web.Application, front: Front) -> None:
    """The page, its login and its API (after add_admin_routes: it reuses the admin API's handlers)."""
    app[SESSIONS] = Sessions(front.cfg.server)
    app[FEED] = StudioFeed(front)
    app[LOGINS] = RateLimit(LOGINS_PER_MINUTE)
    app.middlewares.append(_gate)
    if front.cfg.server.admin_token is not None:  # no token, no page: nothing to sample for
        app.on_startup.append(_start_feed)
        app.on_shutdown.append(_stop_feed)
    for path in PAGE_FILES:
        app.router.add_get(path, page_file)
    app.router.add_get("/studio/login", login_form)
    app.router.add_post("/studio/login", login)
    app.router.add_post("/studio/logout", logout)
    app.router.add_get("/studio/api/state", state)
    app.router.add_get("/studio/api/history", history)
    app.router.add_get("/studio/api/events", events)
    app.router.add_get("/studio/api/thumb/{channel}", thumbnail)
    app.router.add_post("/studio/api/channels", add_channel)
    app.router.add_delete("/studio/api/channels/{channel}", remove_channel)
    app.router.add_post("/studio/api/channels/{channel}/pause", pause)
    app.router.add_post("/studio/api/channels/{channel}/resume", resume_channel)
    app.router.add_post("/studio/api/channels/{channel}/skip", skip)
    app.router.add_post("/studio/api/channels/{channel}/say", say)
