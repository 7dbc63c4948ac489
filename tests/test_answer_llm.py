"""Answers from a real vLLM engine (a tiny random Llama): streamed into speech, stopped mid-answer."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import ServerThread, eventually, studio_config
from tests.tiny_llama import make_tiny_llama

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    # wide and deep enough that its ~1600-token answer takes tens of seconds on a CPU: the stop
    # always lands while it is generating, however slow the first words are to reach the air
    model = make_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model", hidden=512, layers=8)
    channel = {
        "name": "nova",
        "video": {"width": 256, "height": 256},
        # a long answer (~1600 tokens): still generating when stopped
        "persona": {"max_answer_words": 1000, "grounding": "free"},  # the model's own answer, streamed
        "conversation": {"chat": "ask", "first_token_timeout_s": 10},
    }
    llm = {"backend": "vllm", "model": str(model), "max_model_len": 2048, "kv_cache_gib": 1}
    srv = ServerThread(studio_config([channel], llm=llm)).start()
    assert srv.call(srv.studio.wait_for_llm(), timeout=180) is not None, "the engine must start"
    yield srv
    srv.stop()


async def test_the_answer_streams_into_speech_and_a_stop_aborts_the_llm_request(server: ServerThread) -> None:
    channel = server.studio.channels["nova"]
    engine = server.studio.llm
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.url}/c/nova/chat", json={"text": "hello chat, tell me a long story"}) as res,
    ):
        turn_id = (await res.json())["turn"]
    turn = channel.conversation.turns[turn_id]
    await eventually(lambda: "on_air" in turn.stages, 20, "the first words of the answer on air")
    assert "llm_first_token" in turn.stages and "first_clause" in turn.stages
    assert not turn.degraded, turn.degraded
    running = engine.unfinished_requests()
    async with aiohttp.ClientSession() as http, http.post(f"{server.url}/c/nova/interrupt", json={}) as res:
        assert (await res.json())["stopped"] == [turn_id]
    await eventually(lambda: engine.unfinished_requests() == 0, 5, "the LLM request to be aborted")
    await eventually(lambda: turn.finished.is_set(), 5, "the turn to end")
    assert running == 1, "the answer was still being generated when it was stopped"
    assert turn.interrupted and len(turn.heard_text()) < len(" ".join(turn.spoken)) + 1
    await eventually(lambda: not channel.conversation.turns, 5, "the turn to close")
    roles = [m["role"] for m in channel.conversation.memory.messages()]
    assert roles[-2:] == ["user", "assistant"]
