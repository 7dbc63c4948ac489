"""Fuzzing, bounded (bench/fuzz.py runs the same targets for as long as asked): offers, chat bodies,
admin JSON, raw IRC lines, config files, photos and clips. 0 crashes, 0 5xx; every refusal a 4xx
that names the problem, or exit code 2 with a message."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ServerThread, studio_config
from tests.fuzz_targets import (
    avatar_prepare_refuses_cleanly,
    channel_bodies,
    chat_bodies,
    config_is_refused_cleanly,
    config_texts,
    irc_line_survives,
    irc_lines,
    media_files,
    post_json,
    refused_well,
    sdp_offers,
)

TOKEN = "fuzz-admin-token"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    os.environ["AVATARCAST_FUZZ_TOKEN"] = TOKEN
    chat = {"per_user_s": 0, "answer_interval_s": 0}  # its desk gets the fuzzed IRC lines
    cfg = studio_config(
        [{"name": "a", "video": {"width": 128, "height": 128}, "chat": chat}],
        admin_token="env:AVATARCAST_FUZZ_TOKEN",
    )
    srv = ServerThread(cfg).start()
    yield srv
    srv.stop()


def test_offers(server: ServerThread) -> None:
    @FAST
    @given(sdp=sdp_offers, kind=st.sampled_from(["offer", "answer", None]))
    def check(sdp: str, kind: str | None) -> None:
        status, text = server.call(post_json(f"{server.url}/c/a/offer", {"sdp": sdp, "type": kind}))
        refused_well(status, text, (200,))

    check()


def test_chat_bodies(server: ServerThread) -> None:
    @FAST
    @given(body=chat_bodies)
    def check(body: Any) -> None:
        status, text = server.call(post_json(f"{server.url}/c/a/chat", body))
        refused_well(status, text, (200, 202))

    check()


def test_admin_json(server: ServerThread) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}

    @SLOW
    @given(body=channel_bodies)
    def check(body: Any) -> None:
        status, text = server.call(post_json(f"{server.url}/admin/channels", body, auth))
        refused_well(status, text, (201,))
        if status == 201:  # one that was good enough goes again, so the next case finds the same studio
            server.call(server.front.remove_channel(body["name"]))

    check()


def test_raw_irc_lines(server: ServerThread) -> None:
    desks = server.studio.desks

    async def deliver(line: Any) -> None:
        desks.line("a", line)

    @FAST
    @given(raw=irc_lines)
    def check(raw: bytes) -> None:
        irc_line_survives(raw, lambda line: server.call(deliver(line)))

    check()


@FAST
@given(text=config_texts)
def test_config_files(text: str) -> None:
    config_is_refused_cleanly(text)


@SLOW
@given(data=media_files, suffix=st.sampled_from([".png", ".jpg", ".mp4", ".webm", ".txt", ""]))
def test_photos_and_clips(data: bytes, suffix: str, face_models: Any) -> None:
    avatar_prepare_refuses_cleanly(data, suffix)
