"""Structured outputs on both LLM backends, on the embedded SmolLM2-135M: a choice reply is exactly
one of its options and a JSON-schema reply parses and fits the schema, even sampled hot (unconstrained,
this model answers "which fact?" with a sentence). Strict grounding relies on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.defaults import default_llm_dir
from models.llm_openai import OpenAICompatibleLLM
from models.protocols import LLM, GenerationParams
from tests.conftest import free_port

pytestmark = pytest.mark.slow

START_LIMIT_S = 240
QUESTION = [
    {"role": "system", "content": "Which numbered fact answers the viewer? Reply with its number, or none."},
    {
        "role": "user",
        "content": 'Facts:\n1. Returns are free within 30 days.\n2. Sizes go from 36 to 47.\n\n"Can I send them back?"',
    },
]
CHOICE = GenerationParams(max_tokens=8, temperature=1.0, choice=("1", "2", "none"))
SCHEMA = {
    "type": "object",
    "properties": {"fact": {"type": "integer", "enum": [0, 1, 2]}},
    "required": ["fact"],
    "additionalProperties": False,
}
JSON = GenerationParams(max_tokens=24, temperature=1.0, json_schema=SCHEMA)


@pytest.fixture(scope="module")
def smollm2() -> Path:
    path = default_llm_dir()
    assert (path / "config.json").is_file(), f"the embedded model is not prepared in {path}: run `avatarcast setup`"
    return path


async def replies(llm: LLM, params: GenerationParams, n: int, tag: str) -> list[str]:
    out = []
    for i in range(n):
        out.append("".join([d async for d in llm.generate(QUESTION, params, f"{tag}-{i}-{time.monotonic_ns()}")]))
    return out


def check(choices: list[str], documents: list[str]) -> None:
    assert all(c in CHOICE.choice for c in choices), choices  # type: ignore[operator]
    for document in documents:
        data = json.loads(document)
        assert set(data) == {"fact"} and data["fact"] in (0, 1, 2), document


async def test_the_in_process_engine_keeps_to_a_choice_and_a_schema(smollm2: Path) -> None:
    from models.llm_vllm import VLLMEngine

    llm = await VLLMEngine.start(smollm2, max_model_len=1024, kv_cache_gib=0.5)
    try:
        free = await replies(llm, GenerationParams(max_tokens=8, temperature=1.0), 3, "free")
        check(await replies(llm, CHOICE, 6, "choice"), await replies(llm, JSON, 3, "json"))
    finally:
        await llm.aclose()
    assert any(f not in CHOICE.choice for f in free), "unconstrained, the model rambles (else this proves nothing)"  # type: ignore[operator]


@pytest.fixture(scope="module")
def server(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-structured") / "server.log"
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2), "--host", "127.0.0.1",
        "--port", str(port), "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager",
        "--served-model-name", "smollm2",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_LIMIT_S
        while True:
            assert proc.poll() is None, f"the vLLM server exited: {log.read_text(errors='replace')[-3000:]}"
            assert time.monotonic() < deadline, f"the vLLM server was not up in {START_LIMIT_S} s"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def test_the_server_client_sends_a_choice_and_a_schema(server: str) -> None:
    llm = OpenAICompatibleLLM(server, "smollm2", None)
    try:
        check(await replies(llm, CHOICE, 6, "choice"), await replies(llm, JSON, 3, "json"))
    finally:
        await llm.aclose()
