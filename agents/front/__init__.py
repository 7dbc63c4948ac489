"""The front: the studio's one public port (pages, admin API, /healthz and /metrics of every
worker), the OBS link and the processes it supervises (media workers, the GPU service, vLLM)."""

from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent / "web"
"""The viewer page's HTML, JS and CSS."""
