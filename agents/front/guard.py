"""What the public port lets change state: JSON requests from the studio's own pages, at a human pace.

Any web page a streamer visits could otherwise make the avatar say anything on air: a cross-origin
POST with `Content-Type: text/plain` is a "simple request" a browser sends without asking first
(OWASP: state-changing requests must not be simple requests, and must come from the own origin).
So every state-changing route (chat, interrupt, offer, the admin API):
  * takes only `application/json` (415 otherwise): no simple request passes;
  * refuses a browser request from another origin (403): the `Origin` header, else `Sec-Fetch-Site`,
    must say same-origin (or name one of `server.trusted_origins`, e.g. an OBS dock's page);
    scripts (no Origin, no Sec-Fetch-Site) pass, the admin API still needs its token;
  * is rate-limited per client address (offers, and chat with stop presses; 429 with Retry-After).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from agents.config import ServerConfig

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODYLESS = frozenset({"DELETE"})
SAME_SITE = frozenset({"same-origin", "none"})
"""Sec-Fetch-Site values of the studio's own pages and of what a user typed or bookmarked."""
MAX_CLIENTS = 10_000
"""Clients whose buckets are kept; beyond this the oldest are forgotten (bounded memory)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


@dataclass(slots=True)
class RateLimit:
    """A token bucket per client: `per_minute` on average, a fifth of it at once."""

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    @property
    def burst(self) -> float:
        return max(1.0, self.per_minute / 5)

    def take(self, client: str) -> float:
        """0 when the client may go on, else the seconds until it may."""
        now, rate = self.clock(), self.per_minute / 60
        bucket = self._buckets.pop(client, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        self._buckets[client] = bucket  # re-inserted: the dict's order is least recently seen first
        while len(self._buckets) > MAX_CLIENTS:
            del self._buckets[next(iter(self._buckets))]
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / rate


def own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}".lower()


def foreign(request: web.Request, trusted: frozenset[str]) -> str | None:
    """Why a request comes from another site's page, or None (same origin, trusted, or not a browser)."""
    origin = request.headers.get("Origin")
    if origin is not None:
        origin = origin.lower()
        if origin == own_origin(request) or origin in trusted:
            return None
        return f"a request from {origin[:80]}"
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() not in SAME_SITE:
        return f"a {site[:20]} request"
    return None


def guard(cfg: ServerConfig) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The middleware for the public port."""
    trusted = frozenset(cfg.trusted_origins)
    offers, chats = RateLimit(cfg.offers_per_minute), RateLimit(cfg.chats_per_minute)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in STATE_CHANGING:
            return await handler(request)
        why = foreign(request, trusted)
        if why is not None:
            return _error(403, f"{why} may not change this studio; fix: add its origin to server.trusted_origins")
        if request.method not in BODYLESS and request.content_type != "application/json":
            return _error(415, "send the body as JSON with Content-Type: application/json")
        limit = offers if request.path.endswith("/offer") else chats if request.path.startswith("/c/") else None
        if limit is not None:
            wait = limit.take(request.remote or "")
            if wait > 0:
                return _error(
                    429,
                    f"too many requests from this address; try again in {math.ceil(wait)} s",
                    **{"Retry-After": str(math.ceil(wait))},
                )
        return await handler(request)

    return middleware
