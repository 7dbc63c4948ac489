"""With several workers the studio runs vLLM's own OpenAI-compatible server for all of them, supervised:
one engine batching every worker's answers (here a tiny random Llama on the CPU)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ServerThread, studio_config
from tests.front_client import health
from tests.tiny_llama import make_tiny_llama

pytestmark = pytest.mark.slow

LLM_UP_LIMIT_S = 240


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Any:
    model = make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    llm = {"backend": "vllm", "model": str(model), "max_model_len": 512, "kv_cache_gib": 0.25}
    channel = {
        "name": "a", "conversation": {"chat": "ask"}, "video": {"width": 128, "height": 128},
        "persona": {"grounding": "free"},  # the model answers in its own words: every answer is a generation
    }  # fmt: skip
    cfg = studio_config([channel], llm=llm, workers=2)
    server = ServerThread(cfg).start()
    yield server
    server.stop()


async def answer(url: str, question: str) -> list[dict[str, Any]]:
    """Ask through the front; the events of the answer's turn until it is idle."""
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http, http.get(f"{url}/c/a/events") as stream:
        async with http.post(f"{url}/c/a/chat", json={"text": question, "mode": "ask"}) as response:
            turn = (await response.json())["turn"]
        async with asyncio.timeout(60):
            async for raw in stream.content:
                if raw.startswith(b"data: "):
                    event = json.loads(raw[6:])
                    if event.get("turn") == turn:
                        events.append(event)
                        if event["type"] == "idle":
                            return events
    return events


async def llm_up(url: str, restarts: int) -> dict[str, Any]:
    """The llm service entry of /healthz once it is up after `restarts` restarts."""
    deadline = asyncio.get_running_loop().time() + LLM_UP_LIMIT_S
    while True:
        state = (await health(url))["services"].get("llm", {})
        if state.get("state") == "up" and state.get("restarts") == restarts:
            return state
        assert asyncio.get_running_loop().time() < deadline, f"vLLM's server not up: {state}"
        await asyncio.sleep(0.5)


async def prompts_served(url: str) -> float:
    """vLLM's own count of prompt tokens it has served (its /metrics)."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
        text = await response.text()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("vllm:prompt_tokens_total"))


async def test_every_worker_answers_from_the_one_supervised_vllm_server(studio: ServerThread) -> None:
    await llm_up(studio.url, 0)
    from agents.front.services import LLM_KEY_ENV

    services = (await health(studio.url))["services"]
    assert services["llm"]["pid"] not in {w["pid"] for w in (await health(studio.url))["workers"]}
    key = os.environ[LLM_KEY_ENV]  # made up at start; the workers inherit it
    cmdline = await asyncio.to_thread(Path(f"/proc/{services['llm']['pid']}/cmdline").read_text)
    assert key not in cmdline, "the key is never on a command line"
    server = studio.front.worker_llm.base_url
    before = await prompts_served(server)
    events = await answer(studio.url, "How many moons does the planet Jupiter have in total?")
    assert any(e["type"] == "caption" for e in events), events
    assert await prompts_served(server) > before, "the worker's answer went through the one vLLM server"

    os.kill(services["llm"]["pid"], signal.SIGKILL)  # supervised: started again, its engine with it
    await llm_up(studio.url, 1)
    before = await prompts_served(server)
    events = await answer(studio.url, "How many rings does the planet Saturn have in total?")
    assert any(e["type"] == "caption" for e in events)
    assert await prompts_served(server) > before
