"""Media transport: the per-channel Program timeline, encode-once fan-out, WebRTC, MP4.

Imports nothing from agents/ or models/ (design.md: dependencies point one way).
"""

from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent / "web"
"""The viewer page's HTML, JS and CSS, served by the studio's web server."""
