"""The LLM on another machine: a vLLM server's OpenAI-compatible chat API, streamed over SSE.

For a studio whose LLM runs on a GPU box (`python -m vllm.entrypoints.openai.api_server …`).
The server batches every channel's requests itself; this client only streams one reply per call.
Structured outputs (GenerationParams.choice / json_schema) travel as vLLM's request fields.
Cancelling is a disconnect: closing the response makes vLLM abort the request, so a viewer who
interrupts the avatar frees the server's slot at once. The API key only ever goes into the
Authorization header: it is in no message, log line or repr.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import aiohttp

from models.protocols import GenerationParams, LLMError

ERROR_BODY_CHARS = 300


class OpenAICompatibleLLM:
    """`models.protocols.LLM` against `base_url` (the server root; a trailing /v1 is accepted too).

    `timeout_s` bounds connecting and each wait for the next chunk, not the whole reply (a long
    answer streams for longer). Use it from one event loop; `aclose()` when done.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None, *, timeout_s: float = 30) -> None:
        self.url = base_url.rstrip("/").removesuffix("/v1") + "/v1/chat/completions"
        self.model = model
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"OpenAICompatibleLLM({self.url!r}, model={self.model!r})"

    def generate(
        self, messages: list[dict[str, str]], params: GenerationParams, request_id: str, priority: int = 0
    ) -> AsyncIterator[str]:
        """Text deltas of the reply (see `LLM.generate`). `request_id` is sent as X-Request-Id, so the
        server's logs name it; `priority` matters only to a server started with --scheduling-policy
        priority (lower is served first)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        body.update(structured_output_fields(params))
        if priority:
            body["priority"] = priority  # a vLLM extension: sent only when it says something
        headers = {"X-Request-Id": request_id}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return self._stream(body, headers, request_id)

    async def _stream(self, body: dict[str, Any], headers: dict[str, str], request_id: str) -> AsyncIterator[str]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self.url, json=body, headers=headers) as response:
                if response.status != 200:
                    raise _http_error(self.url, response.status, await response.text())
                # Cancelled or closed mid-reply, leaving `async with` releases a half-read response,
                # which aiohttp never pools: it closes the connection, the server sees the disconnect.
                async with aclosing(_content_deltas(response, request_id)) as deltas:
                    async for text in deltas:
                        yield text
        except aiohttp.ClientConnectorError as exc:
            raise LLMError(f"cannot reach the LLM server at {self.url}: {exc.os_error}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise LLMError(f"request {request_id} to {self.url} failed: {exc!r}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _content_deltas(response: aiohttp.ClientResponse, request_id: str) -> AsyncIterator[str]:
    """The `delta.content` of each SSE `data:` event, up to `data: [DONE]`. Reading on to the end of
    the body after [DONE] lets aiohttp reuse the connection for the next request."""
    done = False
    async for line in response.content:
        if done or not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            continue
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise LLMError(f"request {request_id}: the server sent a malformed event {data[:80]!r}") from exc
        if "error" in event:
            raise LLMError(f"request {request_id} failed on the server: {event['error']}")
        for choice in event.get("choices") or ():
            if text := (choice.get("delta") or {}).get("content"):
                yield text
    if not done:
        raise LLMError(f"request {request_id}: the server closed the stream before the end of the reply")


def structured_output_fields(params: GenerationParams) -> dict[str, Any]:
    """The request fields that constrain the reply. A choice goes in vLLM's own `structured_outputs`
    extension ({"choice": [...]}: the OpenAI API has no choice); a JSON schema in the standard
    `response_format` ({"type": "json_schema", ...}), which vLLM's server maps onto the same thing."""
    if params.choice is not None:
        return {"structured_outputs": {"choice": list(params.choice)}}
    if params.json_schema is not None:
        schema = {"name": "reply", "schema": dict(params.json_schema), "strict": True}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    return {}


def _http_error(url: str, status: int, body: str) -> LLMError:
    said = body.strip()[:ERROR_BODY_CHARS]
    if status in (401, 403):
        return LLMError(
            f"the LLM server at {url} refused the API key (HTTP {status}): check the key configured for it",
            recoverable=False,
        )
    if status == 404:
        return LLMError(f"{url} answered 404 (wrong URL or model name?): {said}", recoverable=False)
    # 400/422: this request only (e.g. too long); 429 and 5xx: the server may well manage the next one.
    return LLMError(f"the LLM server at {url} answered HTTP {status}: {said}")
