"""The studio's one public port: pages, health, metrics and the admin API; channel routes go to the
worker that runs the channel.

Routes
  GET  /                     the channels on air
  GET  /c/{channel}          the viewer page (video + audio, chat box, mic button, captions)
  /c/{channel}/...           the channel's own routes (agents/worker/routes.py): info, offer, chat,
                             interrupt, events, stream.ts, overlays; served here with one worker,
                             forwarded to the channel's worker process with several
  GET  /healthz, /metrics    every worker's channels (JSON, each naming its worker) and Prometheus metrics
  /admin/...                 the admin API (agents/front/admin.py), with a bearer token
  /studio, /studio/...       the studio page and its API (agents/front/studio_page.py), behind the same token
"""

from __future__ import annotations

import html

from aiohttp import web

from agents.front import WEB_DIR
from agents.front.admin import add_admin_routes
from agents.front.front import Front
from agents.front.guard import guard
from agents.front.metrics import CONTENT_TYPE, render
from agents.front.studio_page import add_studio_routes
from agents.worker.routes import unknown_channel

MAX_BODY = 256 * 1024
FRONT: web.AppKey[Front] = web.AppKey("front", Front)


async def index(request: web.Request) -> web.Response:
    front = request.app[FRONT]
    channels = (await front.health())["channels"]
    items = "\n".join(
        f'<li><a href="/c/{html.escape(name)}">{html.escape(cfg.display_title)}</a>'
        f" <small>{channels.get(name, {}).get('viewers', 0)} watching</small></li>"
        for name, cfg in front.configs.items()
    )
    page = (WEB_DIR / "index.html").read_text().replace("{{channels}}", items)
    return web.Response(text=page, content_type="text/html")


async def viewer_page(request: web.Request) -> web.FileResponse:
    front = request.app[FRONT]
    name = request.match_info["channel"]
    if name not in front.where:
        raise unknown_channel(name, front.where)
    return web.FileResponse(WEB_DIR / "viewer.html")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response(await request.app[FRONT].health())


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=await render(request.app[FRONT]), headers={"Content-Type": CONTENT_TYPE})


def make_app(front: Front) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[guard(front.cfg.server)])
    app[FRONT] = front
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_admin_routes(app, front)
    add_studio_routes(app, front)
    app.router.add_static("/static/", WEB_DIR, show_index=False)
    app.router.add_get("/c/{channel}", viewer_page)
    if front.studio is not None:  # one worker, in this process: its routes are ours
        from agents.worker.routes import add_channel_routes

        add_channel_routes(app, front.studio)
    else:
        from agents.front.proxy import add_proxy_routes

        add_proxy_routes(app, front)
    return app
