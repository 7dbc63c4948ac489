"""Media workers as processes: started, watched and restarted by the front.

Each worker is `python -m agents.worker.process` on its own unix socket in a private folder. The
front talks to it over that socket (HTTP: small control calls, and the channels' own routes it
forwards), and reads the lines its chat desks post. A worker that dies (a crash, kill -9) is
started again with the channels it ran, which come back on air; viewers' pages reconnect by
themselves, and the chat lines it had not finished with are handed to it again (chat_ledger.py).
The other workers never notice: nothing of theirs passes through the dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from agents.chat.messages import IRCLine
from agents.config import ChannelConfig
from agents.front.chat_ledger import ChatLedger
from agents.front.links import WorkerGone
from agents.front.services import die_with_parent
from agents.supervisor import cancel_and_wait
from agents.worker.admission import AdmissionRefused
from agents.worker.routes import TURN_REFUSALS

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 180.0
"""A worker loads its voices and avatars and puts its channels on air within this (else it is stopped)."""
STOP_TIMEOUT_S = 10.0
RESTART_BACKOFF_S = (0.5, 10.0)
CONTROL_TIMEOUT_S = 60.0


class WorkerHost(Protocol):
    """What a worker process needs from the front that runs it."""

    def worker_config(self) -> dict[str, Any]:
        """The studio config (JSON) worker processes run with."""
        ...

    def channels_on(self, worker: Any) -> list[ChannelConfig]:
        """The channels placed on `worker` (to put back on air after a restart)."""
        ...

    def post_chat(self, irc_channel: str, text: str) -> None: ...


class RemoteWorker:
    """A worker process and the front's connection to it (a WorkerLink)."""

    def __init__(
        self,
        front: WorkerHost,
        index: int,
        folder: Path,
        lipsync_socket: str | None,
        cores: int,
        asr_remote: bool = False,
        voices_remote: bool = False,
    ) -> None:
        self.front = front
        self.index = index
        self.cores = cores
        """Its share of the machine's cores: what its admission control budgets."""
        self.socket = str(folder / f"worker-{index}.sock")
        self._config = folder / f"worker-{index}.json"
        self._lipsync_socket = lipsync_socket
        self._asr_remote = asr_remote
        self._voices_remote = voices_remote
        self._process: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._state = "starting"
        self.restarts = 0
        self.last_exit: str | None = None
        self._watch: asyncio.Task[None] | None = None
        self._chat_reader: asyncio.Task[None] | None = None
        self.chat_ledger = ChatLedger(index)
        self._closing = False

    @property
    def pid(self) -> int:
        return self._process.pid if self._process is not None else 0

    @property
    def state(self) -> str:
        return self._state

    # ------------------------------------------------------------------ life
    async def start(self, channels: list[ChannelConfig]) -> None:
        """Start the process with `channels` and wait until it serves (or raise RuntimeError)."""
        config = {"studio": self.front.worker_config(), "channels": [c.name for c in channels], "cores": self.cores}
        self._config.write_text(json.dumps(config))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        args = [sys.executable, "-m", "agents.worker.process", "--index", str(self.index), "--socket", self.socket]
        args += ["--config", str(self._config)]
        if self._lipsync_socket:
            args += ["--lipsync-socket", self._lipsync_socket]
            args += ["--asr-remote"] if self._asr_remote else []
            args += ["--voices-remote"] if self._voices_remote else []
        self._process = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, preexec_fn=die_with_parent
        )
        assert self._process.stdout is not None
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                line = await self._process.stdout.readline()
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            await self._stop_process()
            raise RuntimeError(f"worker {self.index} did not start (see its log above)")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=self.socket),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )
        self._state = "up"
        self._chat_reader = asyncio.create_task(self._read_chat(), name=f"worker-{self.index}-chat")
        unsettled = self.chat_ledger.replay(c.name for c in channels)
        if unsettled:
            log.info("worker %d: handing it %d chat lines it had not finished with", self.index, len(unsettled))
        for ref, name, line in unsettled:
            self._send_chat(ref, name, line)
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_process(), name=f"worker-{self.index}-watch")
        log.info("worker %d up (pid %d) with %d channels", self.index, self.pid, len(channels))

    async def _watch_process(self) -> None:
        """Restart the process whenever it dies, with its channels, until the front closes."""
        delay = RESTART_BACKOFF_S[0]
        while True:
            assert self._process is not None
            code = await self._process.wait()
            if self._closing:
                return
            self._state = "restarting"
            self.restarts += 1
            self.last_exit = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
            log.error("worker %d (pid %d) died (%s); restarting it", self.index, self._process.pid, self.last_exit)
            await self._drop_connection()
            started = time.monotonic()
            channels = self.front.channels_on(self)
            try:
                await self.start(channels)
                delay = RESTART_BACKOFF_S[0]
            except Exception as exc:
                log.error("worker %d could not restart (%s); trying again in %.1f s", self.index, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_BACKOFF_S[1])
                continue
            log.info("worker %d back in %.1f s", self.index, time.monotonic() - started)

    async def _read_chat(self) -> None:
        """The worker's chat desks' lines for IRC -> the front's IRC connection."""
        with contextlib.suppress(aiohttp.ClientError, WorkerGone):
            async with self._client().get("http://worker/_worker/chat-out") as response:
                async for raw in response.content:
                    line = json.loads(raw)
                    if "settled" in line:
                        self.chat_ledger.settle(line["settled"])
                    else:
                        self.front.post_chat(line["irc_channel"], line["text"])

    async def _drop_connection(self) -> None:
        if self._chat_reader is not None:
            await cancel_and_wait(self._chat_reader)
            self._chat_reader = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _stop_process(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await process.wait()
        except TimeoutError:
            log.error("worker %d did not stop within %.0f s; killing it", self.index, STOP_TIMEOUT_S)
            process.kill()
            await process.wait()

    async def aclose(self) -> None:
        self._closing = True
        self._state = "stopped"
        if self._watch is not None:
            await cancel_and_wait(self._watch)
        await self._drop_connection()
        await self._stop_process()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)

    # ------------------------------------------------------------------ calls
    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._state != "up":
            raise WorkerGone(f"worker {self.index} is {self._state}")
        return self._session

    @property
    def session(self) -> aiohttp.ClientSession:
        """For forwarding the channels' routes (agents/front/proxy.py); raises WorkerGone while down."""
        return self._client()

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            async with (
                asyncio.timeout(CONTROL_TIMEOUT_S),
                self._client().request(method, f"http://worker{path}", json=body) as response,
            ):
                return response.status, await response.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise WorkerGone(f"worker {self.index} did not answer ({type(exc).__name__})") from exc

    async def add_channel(self, cfg: ChannelConfig) -> dict[str, Any]:
        status, body = await self._call("POST", "/_worker/channels", cfg.model_dump(mode="json", exclude_none=True))
        if status == 503 and body.get("refused"):
            raise AdmissionRefused(body["error"])
        if status >= 400:
            raise ValueError(body.get("error", f"worker {self.index} answered {status}"))
        return body

    async def remove_channel(self, name: str) -> None:
        with contextlib.suppress(WorkerGone):  # a worker that is down has nothing to remove
            await self._call("DELETE", f"/_worker/channels/{name}")

    async def pause(self, name: str, reason: str) -> dict[str, Any]:
        return (await self._call("POST", f"/_worker/channels/{name}/pause", {"reason": reason}))[1]

    async def resume(self, name: str) -> dict[str, Any]:
        return (await self._call("POST", f"/_worker/channels/{name}/resume"))[1]

    async def health(self) -> dict[str, Any]:
        return (await self._call("GET", "/_worker/health"))[1]

    async def metrics(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/_worker/metrics"))[1]

    async def telemetry(self) -> dict[str, Any]:
        return (await self._call("GET", "/_worker/telemetry"))[1]

    async def thumbnail(self, name: str) -> bytes | None:
        try:
            async with (
                asyncio.timeout(CONTROL_TIMEOUT_S),
                self._client().get(f"http://worker/_worker/thumbnail/{name}") as response,
            ):
                return await response.read() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise WorkerGone(f"worker {self.index} did not answer ({type(exc).__name__})") from exc

    async def skip(self, name: str) -> list[str]:
        return (await self._call("POST", f"/_worker/channels/{name}/skip"))[1]["stopped"]

    async def say(self, name: str, text: str) -> str:
        status, body = await self._call("POST", f"/_worker/channels/{name}/say", {"text": text})
        refusal = {code: kind for kind, code in TURN_REFUSALS.items()}.get(status, ValueError)
        if status >= 400:
            raise refusal(body.get("error", f"worker {self.index} answered {status}"))
        return str(body["turn"])

    def chat_line(self, name: str, line: IRCLine) -> None:
        """Hand the line to the worker; kept in the ledger until the worker settles it, so a worker
        that is down (or dies with it) gets it again when it is back."""
        ref = self.chat_ledger.record(name, line)
        if self._state == "up":
            self._send_chat(ref, name, line)

    def _send_chat(self, ref: str, name: str, line: IRCLine) -> None:
        body = {"command": line.command, "params": list(line.params), "tags": dict(line.tags), "prefix": line.prefix}
        task = asyncio.get_running_loop().create_task(self._call("POST", f"/_worker/chat/{name}", {**body, "ref": ref}))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # unsettled: sent again after a restart


async def start_workers(
    front: WorkerHost,
    count: int,
    folder: Path,
    channels: list[ChannelConfig],
    lipsync_socket: str | None,
    *,
    asr_remote: bool = False,
    voices_remote: bool = False,
) -> tuple[list[RemoteWorker], dict[RemoteWorker, list[str]], dict[str, str]]:
    """Start `count` workers with `channels` dealt out in turn (all are empty, so each has the same
    headroom) -> the workers, what went on air where, and what failed with why."""
    cores = max(1, len(os.sched_getaffinity(0)) // count)
    workers = [RemoteWorker(front, i, folder, lipsync_socket, cores, asr_remote, voices_remote) for i in range(count)]
    dealt: dict[RemoteWorker, list[ChannelConfig]] = {w: channels[i::count] for i, w in enumerate(workers)}
    results = await asyncio.gather(*(w.start(dealt[w]) for w in workers), return_exceptions=True)
    started = [w for w, r in zip(workers, results, strict=True) if not isinstance(r, BaseException)]
    if not started:
        raise RuntimeError(f"no media worker started: {results[0]}")
    on_air: dict[RemoteWorker, list[str]] = {}
    failed: dict[str, str] = {}
    for worker, result in zip(workers, results, strict=True):
        if isinstance(result, BaseException):
            failed.update({c.name: str(result) for c in dealt[worker]})
            continue
        health = await worker.health()
        on_air[worker] = list(health["channels"])
        failed.update(health["failed"])
    return started, on_air, failed
