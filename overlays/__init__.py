"""Captions and chat overlays: drawn into the frames (burn-in), or served as pages for OBS.

Imports only stream/ (frame and event types); the routes that serve the pages live in agents/worker/routes.py.
"""

from pathlib import Path

PAGES_DIR = Path(__file__).resolve().parent / "pages"
"""Overlay pages (captions, chat ticker): transparent HTML fed by server-sent events, for OBS Browser Sources."""

OVERLAY_EVENTS = {
    "captions": frozenset({"word", "caption", "caption_cut", "idle"}),
    "ticker": frozenset({"question", "idle"}),
}
"""Which of a channel's events each overlay page listens to."""
