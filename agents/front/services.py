"""Helper processes the front starts and keeps alive for every worker: the GPU service (lip-sync on
the device, models/lipsync/server.py) and vLLM's own OpenAI-compatible server (one engine with
continuous batching across the channels of every worker).

Each runs in its own process group (so its children go with it), is restarted with a growing
pause when it dies, and is stopped with SIGTERM, then SIGKILL, when the studio stops. While one is
away the workers degrade on their own: lip-sync renders on their CPUs, answers come from the
cache and canned lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from agents.config import LLMConfig, StudioConfig
from agents.supervisor import cancel_and_wait

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0
RESTART_BACKOFF_S = (0.5, 15.0)
GPU_READY_TIMEOUT_S = 120.0
LLM_READY_TIMEOUT_S = 600.0
LLM_KEY_ENV = "AVATARCAST_LLM_SERVER_KEY"
"""The supervised vLLM server's API key: made up at start, passed to the workers in their environment."""
SERVED_MODEL = "avatarcast"


class ServiceProcess:
    """One helper process: started, waited for, watched and restarted."""

    def __init__(
        self,
        name: str,
        command: list[str],
        ready: Callable[[asyncio.subprocess.Process], Awaitable[None]],
        *,
        env: dict[str, str] | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self._ready = ready
        self.env = env
        self.log_file = log_file
        self.process: asyncio.subprocess.Process | None = None
        self.state = "starting"
        self.restarts = 0
        self._watch: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    async def start(self, timeout_s: float) -> None:
        """Start it and wait until it is ready; raise RuntimeError if it is not within `timeout_s`."""
        output = self.log_file.open("ab") if self.log_file is not None else None
        # a process that says `ready` on stdout gets a pipe; one with a log writes everything there. (A pipe
        # its children inherit would keep asyncio's wait() from returning after the process itself died.)
        stdout = output if output is not None else asyncio.subprocess.PIPE
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command, stdout=stdout, stderr=output, env=self.env, start_new_session=True,
                preexec_fn=die_with_parent,
            )  # fmt: skip
        finally:
            if output is not None:
                output.close()
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready(self.process)
        except (TimeoutError, RuntimeError) as exc:
            await self._stop()
            raise RuntimeError(f"{self.name} did not come up: {exc or 'timed out'}") from None
        self.state = "up"
        log.info("%s up (pid %d)", self.name, self.process.pid)

    def keep_alive(self, timeout_s: float) -> None:
        """Restart it whenever it dies, from now until aclose."""
        if self._watch is None:
            self._watch = asyncio.create_task(self._keep(timeout_s), name=f"{self.name}-watch")

    async def _keep(self, timeout_s: float) -> None:
        delay = RESTART_BACKOFF_S[0]
        while True:
            if self.process is not None:
                code = await self.process.wait()
                if self._closing:
                    return
                with contextlib.suppress(ProcessLookupError):  # what it started (vLLM's engine core) goes too
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.restarts += 1
                log.error("%s (pid %d) died with %s; restarting it", self.name, self.process.pid, code)
            self.state = "restarting"
            started = time.monotonic()
            try:
                await self.start(timeout_s)
                delay = RESTART_BACKOFF_S[0]
                log.info("%s back in %.1f s", self.name, time.monotonic() - started)
            except RuntimeError as exc:
                log.error("%s: %s; trying again in %.1f s", self.name, exc, delay)
                self.process = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_BACKOFF_S[1])

    async def _stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await process.wait()
        except TimeoutError:
            log.error("%s did not stop within %.0f s; killing it", self.name, STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def aclose(self) -> None:
        self._closing = True
        self.state = "stopped"
        if self._watch is not None:
            await cancel_and_wait(self._watch)
        await self._stop()

    def info(self) -> dict[str, object]:
        return {"state": self.state, "pid": self.pid, "restarts": self.restarts}


_PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl  # resolved here: a forked child must not load libraries
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child, before it runs: SIGTERM when the front dies, however it dies (PR_SET_PDEATHSIG
    outlives exec), so no helper process is left behind by a killed front."""
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


async def _prints_ready(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    line = await process.stdout.readline()
    if line.strip() != b"ready":
        raise RuntimeError(f"exited with {await process.wait()}")


def gpu_service(cfg: StudioConfig, socket: str, *, with_asr: bool = False, with_voices: bool = False) -> ServiceProcess:
    """The GPU service for `cfg.lipsync` on its device (and Whisper, `with_asr`, and voices,
    `with_voices`, for every worker)."""
    command = [
        sys.executable, "-m", "models.lipsync.server", "--socket", socket, "--device", cfg.lipsync.device,
        "--max-batch", str(cfg.lipsync.max_batch), "--kernel", cfg.lipsync.kernel,
    ]  # fmt: skip
    if cfg.lipsync.model != "none" and cfg.lipsync.checkpoint:
        command += ["--model", cfg.lipsync.model, "--checkpoint", cfg.lipsync.checkpoint]
    command += ["--tts"] if with_voices else []
    if with_asr:
        command += ["--asr", cfg.asr.model, "--asr-device", cfg.asr.device]
        command += ["--asr-language", cfg.asr.language] if cfg.asr.language else []
    service = ServiceProcess("GPU service", command, _prints_ready)
    return service


def llm_server(cfg: LLMConfig, port: int, log_file: Path) -> tuple[ServiceProcess, LLMConfig]:
    """vLLM's OpenAI-compatible server for `cfg`, and the LLM config that workers use to reach it."""
    import torch

    from models.defaults import default_llm_dir

    model = str(default_llm_dir()) if cfg.model == "builtin:smollm2" else cfg.model
    on_gpu = cfg.device != "cpu" and torch.cuda.is_available()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
        "--port", str(port), "--dtype", cfg.dtype, "--max-model-len", str(cfg.max_model_len),
        "--served-model-name", SERVED_MODEL,
        *cfg.server_args(on_gpu=on_gpu),
    ]  # fmt: skip
    key = os.environ.setdefault(LLM_KEY_ENV, _new_key())  # the workers inherit it; never on a command line
    env = {**os.environ, **cfg.device_env(), "VLLM_API_KEY": key, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    url = f"http://127.0.0.1:{port}"

    async def healthy(process: asyncio.subprocess.Process) -> None:
        async with aiohttp.ClientSession() as session:
            while process.returncode is None:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=2)) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.5)
        raise RuntimeError(f"exited with {process.returncode} (its log: {log_file})")

    client = LLMConfig.model_validate(
        {"backend": "openai", "base_url": url, "model": SERVED_MODEL, "api_key": f"env:{LLM_KEY_ENV}"}
    )
    return ServiceProcess("vLLM server", command, healthy, env=env, log_file=log_file), client


def _new_key() -> str:
    return secrets.token_urlsafe(24)
