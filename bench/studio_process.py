"""`avatarcast serve` as users run it, for the benches that watch a studio from outside.

A real process (its own CPU, RSS and descriptors to read from /proc) on a free 127.0.0.1 port, its
output kept in a log file, stopped with SIGTERM (then killed) when the bench ends. The benches'
viewers are aiortc peers in the bench's own process: aioice leaves loopback out of its host
candidates, so they offer 127.0.0.1 as the studio does.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import yaml

from models.defaults import PROJECT_ROOT
from stream.webrtc import restrict_host_candidates

START_LIMIT_S = 180.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServeProcess:
    """`with ServeProcess(config) as studio:` then `await studio.up(http)`; `studio.url`, `studio.pid`."""

    def __init__(self, config: dict[str, Any], port: int) -> None:
        self.config = {**config, "server": {**config.get("server", {}), "host": "127.0.0.1", "port": port}}
        self.url = f"http://127.0.0.1:{port}"
        self._tmp = tempfile.TemporaryDirectory()
        self.log_path = Path(self._tmp.name) / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServeProcess:
        restrict_host_candidates(["127.0.0.1"])
        config = Path(self._tmp.name) / "studio.yaml"
        config.write_text(yaml.safe_dump(self.config))
        with open(self.log_path, "w") as log:
            command = [sys.executable, "-m", "agents.cli", "serve", "-c", str(config)]
            self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._tmp.cleanup()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check(self) -> None:
        """Fail with the studio's last log lines if it has exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log_path.read_text()[-2000:]
            raise RuntimeError(f"avatarcast serve exited with {self.process.returncode}:\n{tail}")

    async def health(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.get(f"{self.url}/healthz") as res:
            return await res.json()

    async def up(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        """Wait until /healthz lists every channel of the config -> that health."""
        deadline = time.monotonic() + START_LIMIT_S
        want = len(self.config["channels"])
        while True:
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the studio was not up within {START_LIMIT_S:.0f} s (log: {self.log_path})")
            try:
                health = await self.health(http)
                if len(health["channels"]) == want:
                    return health
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)  # polling a process that is starting
