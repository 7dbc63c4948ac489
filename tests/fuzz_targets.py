"""What the fuzzers throw at the studio, and what every answer must be: never a crash, never a 5xx;
a refusal is a 4xx with an error that names the problem, or exit code 2 with a message.

Shared by tests/test_fuzz.py (a bounded run in `make test`) and bench/fuzz.py (a long one).
"""

from __future__ import annotations

import io
import json
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import strategies as st

from agents.chat.messages import MalformedLine
from agents.chat.wire import decode_line
from agents.config import ConfigError, load_config

SDP_LINES = [
    "v=0", "o=- 0 0 IN IP4 127.0.0.1", "s=-", "t=0 0",
    "m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "a=rtpmap:96 H264/90000", "a=rtpmap:111 opus/48000/2", "a=mid:0", "a=recvonly", "a=sendrecv", "c=IN IP4 0.0.0.0",
    "a=setup:actpass", "a=ice-ufrag:abcd", "a=ice-pwd:0123456789abcdefghij0123", "a=fingerprint:sha-256 AB:CD",
    "a=rtcp-mux", "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1", "m=application 9 DTLS/SCTP 5000",
]  # fmt: skip
"""Pieces of real offers: shuffled, repeated and mixed with junk they reach deep into the SDP parser."""

junk = st.text(min_size=0, max_size=200)
sdp_offers = st.lists(st.one_of(st.sampled_from(SDP_LINES), junk), min_size=0, max_size=40).map("\r\n".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=400),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5),
    max_leaves=20,
)
chat_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"text": st.text(max_size=600)}, optional={"mode": st.sampled_from(["ask", "say", "shout", 3])}
    ),
)
CHANNEL_KEYS = ["name", "title", "avatar", "video", "voice", "persona", "conversation", "greeting", "outputs", "chat"]
channel_bodies = st.dictionaries(st.sampled_from(CHANNEL_KEYS) | st.text(max_size=10), json_values, max_size=6).map(
    lambda d: {"name": "fz", **d} if "name" not in d else d
)
irc_lines = st.one_of(
    st.binary(max_size=600),
    st.builds(
        lambda tags, prefix, command, params: f"{tags}{prefix}{command} {params}".encode(errors="surrogatepass"),
        st.sampled_from(["", "@badges=moderator/1;bits=100 ", "@id=x;display-name=\\s\\:;user-id= ", "@;;= "]),
        st.sampled_from(["", ":nick!u@h ", ":", ": "]),
        st.sampled_from(["PRIVMSG", "CLEARMSG", "CLEARCHAT", "PING", "001", "privmsg", "X"]),
        st.text(max_size=200),
    ),
)
config_texts = st.one_of(
    st.text(max_size=400),
    json_values.map(json.dumps),
    st.dictionaries(
        st.sampled_from(["server", "lipsync", "llm", "asr", "tts", "channels", "irc", "obs", "admission"]), json_values
    ).map(json.dumps),
)
media_files = st.one_of(
    st.binary(max_size=4000),
    st.sampled_from(
        [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"\x00\x00\x00\x18ftypmp42", b"RIFF\x00\x00WEBP"]
    ).flatmap(lambda head: st.binary(max_size=2000).map(lambda rest: head + rest)),
)


async def post_json(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=json.dumps(body), headers={"Content-Type": "application/json", **(headers or {})}) as res,
    ):
        return res.status, await res.text()


def refused_well(status: int, text: str, allowed: tuple[int, ...]) -> None:
    """A 2xx of `allowed`, or a 4xx whose JSON names the problem; never a 5xx (but admission control's
    503, "refused: ..." with the capacity: the box is full, a deliberate answer, not a failure)."""
    if status == 503 and json.loads(text).get("error", "").startswith("refused: "):
        return
    assert status < 500, f"a server error ({status}): {text[:300]}"
    assert status in allowed or 400 <= status < 500, f"unexpected {status}: {text[:300]}"
    if status >= 400:
        error = json.loads(text).get("error")
        assert isinstance(error, str) and error.strip(), f"a {status} without a message: {text[:300]}"


def irc_line_survives(raw: bytes, deliver: Any) -> None:
    """A raw IRC line: decoded (or refused as MalformedLine, which the reader drops), then handed to
    a channel's chat desk, which must not raise."""
    try:
        line = decode_line(raw)
    except MalformedLine:
        return
    deliver(line)


def config_is_refused_cleanly(text: str) -> None:
    """Any file as a config: it loads, or fails with ConfigError (the CLI's exit code 2), nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "studio.yaml"
        path.write_text(text, errors="surrogatepass")
        try:
            load_config(path)
        except ConfigError as exc:
            assert str(exc).strip()


def avatar_prepare_refuses_cleanly(data: bytes, suffix: str) -> None:
    """Any file as a photo or clip: `avatarcast avatar prepare` ends with exit code 2 and a message."""
    from agents.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"upload{suffix}"
        source.write_bytes(data)
        err = io.StringIO()
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            code = main(["avatar", "prepare", str(source), "-o", str(Path(tmp) / "pack")])
        assert code == 2 and err.getvalue().startswith("error: "), (code, err.getvalue()[-300:])
