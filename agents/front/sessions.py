"""Who may see the studio page: the admin token, typed once into a login form, then a session cookie.

The token itself never travels again after the login: the browser holds a random session id in
an HttpOnly, SameSite=Strict cookie scoped to /studio (scripts on a page cannot read it, and no
other site's page can make the browser send it), and this process maps the id to an expiry. Only
a hash of each id is kept, so the table holds nothing worth stealing. Scripts may skip the login
and send `Authorization: Bearer <server.admin_token>` on every request instead. Tokens are
compared in constant time; neither the token nor a session id is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from agents.config import ServerConfig

COOKIE = "avatarcast_studio"
COOKIE_PATH = "/studio"
SESSION_TTL_S = 12 * 3600.0
"""A login lasts a working day; after that the form asks again."""
MAX_SESSIONS = 256
"""Logins kept at once; beyond this the oldest is logged out (bounded memory whatever happens)."""


def token_matches(given: str, cfg: ServerConfig) -> bool:
    """`given` is the configured admin token (constant time; False when none is configured)."""
    secret = cfg.admin_token
    if secret is None:
        return False
    return hmac.compare_digest(given.strip().encode(), secret.reveal().encode())


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    """Logged-in studio pages: hashed session id -> when it expires."""

    def __init__(self, cfg: ServerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def open(self) -> str:
        """A new session id (the caller has checked the token)."""
        session_id = secrets.token_urlsafe(32)
        self._expiry[_digest(session_id)] = self.clock() + SESSION_TTL_S
        while len(self._expiry) > MAX_SESSIONS:
            self._expiry.popitem(last=False)
        return session_id

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._expiry.pop(_digest(session_id), None)

    def valid(self, session_id: str | None) -> bool:
        if not session_id:
            return False
        key = _digest(session_id)
        expires = self._expiry.get(key)
        if expires is None:
            return False
        if expires <= self.clock():
            del self._expiry[key]
            return False
        return True

    def allowed(self, request: web.Request) -> bool:
        """The request carries a live session cookie or the admin token as a bearer token."""
        bearer = bearer_token(request)
        if bearer is not None:
            return token_matches(bearer, self.cfg)
        return self.valid(request.cookies.get(COOKIE))

    def set_cookie(self, response: web.StreamResponse, request: web.Request, session_id: str) -> None:
        response.set_cookie(
            COOKIE, session_id, path=COOKIE_PATH, httponly=True, samesite="Strict", secure=request.secure,
            max_age=int(SESSION_TTL_S),
        )  # fmt: skip

    @staticmethod
    def clear_cookie(response: web.StreamResponse) -> None:
        response.del_cookie(COOKIE, path=COOKIE_PATH)
