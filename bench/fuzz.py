"""Fuzz the studio for as long as asked: the targets of tests/test_fuzz.py, many more cases each.

    python bench/fuzz.py [--minutes 10] [--json]     (inside `unshare -n`, as `make bench` runs it)

Targets: WebRTC offers, chat bodies, admin JSON (channels added and removed), raw IRC lines to a chat
desk, config files, photos and clips for `avatar prepare`. Every case must end in a 2xx or a 4xx that
names the problem (exit code 2 with a message for the command line): a 5xx, a crash or an unnamed
refusal is a failure, printed with its case. JSON: cases and failures per target.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the targets and the studio fixture are the tests' own
from tests import fuzz_targets as ft  # noqa: E402
from tests.conftest import ServerThread, studio_config  # noqa: E402

TOKEN = "bench-fuzz-token"


def run(name: str, seconds: float, body: Any) -> dict[str, Any]:
    """Run one target (a function of hypothesis-drawn arguments) until `seconds` pass; count cases."""
    counts = {"cases": 0, "failures": 0}
    failures: list[str] = []
    deadline = time.monotonic() + seconds

    def once(*args: Any, **kwargs: Any) -> None:
        if time.monotonic() > deadline:
            return
        counts["cases"] += 1
        try:
            body(*args, **kwargs)
        except AssertionError as exc:
            counts["failures"] += 1
            failures.append(f"{str(exc)[:300]} <- {str(args or kwargs)[:200]}")

    batch = 50
    while time.monotonic() < deadline:  # runs of `batch` cases, each with fresh random draws
        test = settings(max_examples=batch, deadline=None, suppress_health_check=list(HealthCheck), database=None)(
            given(**body.strategies)(once)
        )
        try:
            test()
        except Exception as exc:  # hypothesis stops a run that keeps raising; count it, go on
            failures.append(f"{type(exc).__name__}: {str(exc)[:300]}")
    print(f"  {name:10s} {counts['cases']:7d} cases  {counts['failures']} failures", file=sys.stderr, flush=True)
    return {**counts, "failures_seen": failures[:20]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="in all, shared out over the targets")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ["AVATARCAST_BENCH_FUZZ"] = TOKEN
    chat = {"per_user_s": 0, "answer_interval_s": 0}
    cfg = studio_config(
        [{"name": "a", "video": {"width": 128, "height": 128}, "chat": chat}],
        admin_token="env:AVATARCAST_BENCH_FUZZ",
        max_peers_per_client=8,  # as served: offers that parse reach the parser, peers do not pile up
    )
    server = ServerThread(cfg).start()
    share = args.minutes * 60 / 6
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def offers(sdp: str, kind: str | None) -> None:
        ft.refused_well(*server.call(ft.post_json(f"{server.url}/c/a/offer", {"sdp": sdp, "type": kind})), (200,))

    def chats(body: Any) -> None:
        ft.refused_well(*server.call(ft.post_json(f"{server.url}/c/a/chat", body)), (200, 202))

    def admin(body: Any) -> None:
        status, text = server.call(ft.post_json(f"{server.url}/admin/channels", body, auth))
        ft.refused_well(status, text, (201,))
        if status == 201:
            server.call(server.front.remove_channel(body["name"]))

    async def deliver(line: Any) -> None:
        server.studio.desks.line("a", line)

    def irc(raw: bytes) -> None:
        ft.irc_line_survives(raw, lambda line: server.call(deliver(line)))

    offers.strategies = {"sdp": ft.sdp_offers, "kind": st.sampled_from(["offer", "answer", None])}  # type: ignore[attr-defined]
    chats.strategies = {"body": ft.chat_bodies}  # type: ignore[attr-defined]
    admin.strategies = {"body": ft.channel_bodies}  # type: ignore[attr-defined]
    irc.strategies = {"raw": ft.irc_lines}  # type: ignore[attr-defined]
    ft.config_is_refused_cleanly.strategies = {"text": ft.config_texts}  # type: ignore[attr-defined]
    media = {"data": ft.media_files, "suffix": st.sampled_from([".png", ".jpg", ".mp4", ".webm", ".txt", ""])}
    ft.avatar_prepare_refuses_cleanly.strategies = media  # type: ignore[attr-defined]
    results: dict[str, Any] = {}
    try:
        targets = {"offer": offers, "chat": chats, "admin": admin, "irc": irc}
        targets |= {"config": ft.config_is_refused_cleanly, "prepare": ft.avatar_prepare_refuses_cleanly}
        for name, target in targets.items():
            results[name] = run(name, share, target)
    finally:
        server.stop()
    summary = {
        "minutes": args.minutes,
        "cases": {k: v["cases"] for k, v in results.items()},
        "failures": {k: v["failures"] for k, v in results.items()},
        "failures_seen": {k: v["failures_seen"] for k, v in results.items() if v["failures_seen"]},
    }
    print(json.dumps(summary) if args.json else json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
