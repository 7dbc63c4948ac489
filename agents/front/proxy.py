"""Forwarding a channel's routes from the public port to the worker process that runs the channel.

Requests (offer, chat, interrupt: small bodies) go over the worker's unix socket as they came,
with the client's address in X-Forwarded-For; responses come back as they are produced, so the
event stream (SSE) and the MPEG-TS stream flow through without being held. While the worker is
restarting, the channel answers 503 with Retry-After: the viewer page retries by itself.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web

from agents.front.front import Front
from agents.front.links import WorkerGone
from agents.worker.routes import unknown_channel

log = logging.getLogger(__name__)

PROXY_FRONT: web.AppKey[Front] = web.AppKey("proxy-front", Front)
OPEN: web.AppKey[set[aiohttp.ClientResponse]] = web.AppKey("proxy-open", set)
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
     "transfer-encoding", "upgrade", "host", "content-length"}
)  # fmt: skip
RETRY_AFTER_S = 2


def _unavailable(name: str, why: str) -> web.Response:
    return web.json_response(
        {"error": f"channel {name} is coming back on air ({why}); try again in a moment"},
        status=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def forward(request: web.Request) -> web.StreamResponse:
    front = request.app[PROXY_FRONT]
    name = request.match_info["channel"]
    worker = front.where.get(name)
    if worker is None:
        raise unknown_channel(name, front.where)
    try:
        session = worker.session  # type: ignore[attr-defined]
    except WorkerGone as exc:
        return _unavailable(name, str(exc))
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    headers["X-Forwarded-For"] = request.remote or ""
    body = await request.read() if request.can_read_body else None
    url = f"http://worker{request.rel_url}"
    try:
        upstream = await session.request(request.method, url, headers=headers, data=body, allow_redirects=False)
    except aiohttp.ClientError as exc:
        log.info("channel %s: its worker did not take a request (%s)", name, type(exc).__name__)
        return _unavailable(name, "its worker restarted")
    open_streams = request.app[OPEN]
    open_streams.add(upstream)
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    try:
        for key, value in upstream.headers.items():
            if key.lower() not in HOP_BY_HOP:
                response.headers[key] = value
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
    except aiohttp.ClientError as exc:  # the worker went away mid-stream: the client's stream ends here
        log.info("channel %s: its worker went away during a response (%s)", name, type(exc).__name__)
    finally:
        open_streams.discard(upstream)
        upstream.release()
    return response


async def _end_streams(app: web.Application) -> None:
    """Server shutdown: end the event and MPEG-TS streams passing through, or it would wait for them."""
    for upstream in list(app[OPEN]):
        upstream.close()


def add_proxy_routes(app: web.Application, front: Front) -> None:
    app[PROXY_FRONT] = front
    app[OPEN] = set()
    app.on_shutdown.append(_end_streams)
    app.router.add_route("*", "/c/{channel}/{tail:.+}", forward)
