"""A real RTMP ingest for tests: nginx with libnginx-mod-rtmp on 127.0.0.1, and a PyAV player.

The player plays what the ingest relays (as Twitch's viewers would), decoding video and AAC in
its own thread with bounded reads: nginx-rtmp does not end a play when the publisher stops.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")

CONF = """
load_module {module};
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            record off;
            allow publish 127.0.0.1;
            deny publish all;
            allow play 127.0.0.1;
            deny play all;
        }}
    }}
}}
"""


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class NginxRtmp:
    def __init__(self, work: Path, port: int) -> None:
        if not RTMP_MODULE.exists():
            pytest.fail("nginx-rtmp is missing: apt-get install nginx-light libnginx-mod-rtmp (make system-deps)")
        self.work = work
        self.port = port
        self.conf = work / "nginx.conf"
        self.conf.write_text(CONF.format(module=RTMP_MODULE, work=work, port=port))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def app_url(self) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live"

    def start(self, limit_s: float = 10) -> None:
        log = (self.work / "nginx.out").open("ab")
        self.proc = subprocess.Popen([NGINX, "-p", str(self.work), "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + limit_s
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nginx did not come up: {(self.work / 'error.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """The ingest dies at once (SIGKILL: no goodbye to the publisher)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@dataclass
class Played:
    video: list[tuple[float, float]] = field(default_factory=list)  # (arrival, pts seconds)
    audio: list[tuple[float, float, float]] = field(default_factory=list)  # (arrival, pts seconds, rms)
    shapes: set[tuple[int, ...]] = field(default_factory=set)
    last_image: np.ndarray | None = None
    error: str | None = None


class RtmpPlayer:
    """Plays `url` in a thread until `stop()` or `limit_s`; results in `.got`."""

    def __init__(self, url: str, limit_s: float = 60) -> None:
        self.url = url
        self.limit_s = limit_s
        self.got = Played()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="rtmp-player", daemon=True)

    def start(self) -> RtmpPlayer:
        self._thread.start()
        return self

    def _play(self) -> None:
        deadline = time.monotonic() + self.limit_s
        try:
            with av.open(self.url, timeout=(15, 4)) as container:
                for frame in container.decode():
                    now = time.monotonic()
                    if isinstance(frame, av.VideoFrame):
                        self.got.video.append((now, float(frame.time)))
                        self.got.last_image = frame.to_ndarray(format="rgb24")
                        self.got.shapes.add(self.got.last_image.shape)
                    else:
                        pcm = frame.to_ndarray().astype(np.float32)
                        if frame.format.name.startswith("flt"):  # AAC decodes to float: int16 units like the rest
                            pcm *= 32768
                        self.got.audio.append((now, float(frame.time), float(np.sqrt(np.mean(pcm**2)))))
                    if self._stop.is_set() or now > deadline:
                        return
        except (av.error.FFmpegError, OSError) as exc:
            self.got.error = f"{type(exc).__name__}: {exc}"

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(RuntimeError):
            self._thread.join(10)
