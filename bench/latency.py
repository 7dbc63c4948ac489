"""Voice-to-voice latency: end of the viewer's speech -> first answer audio at a WebRTC viewer.

    python bench/latency.py [--json] [--turns 20] [-c CONFIG] [--llm vllm|none]

A real aiortc viewer sends espeak-ng questions as its microphone (paced in real time) to a
studio running CONFIG (default configs/demo.yaml: Whisper tiny.en, SmolLM2 on vLLM, Piper) and
waits for the answer's first loud audio frame. Questions not in the answer cache, so the LLM
path is timed. The end of speech is the question's last sample above 1 % of full scale (espeak-ng
adds ~0.43 s of silence after the voice, which is not the viewer's speech). Per turn the server's
stage times are read back (ms after the end of speech):
asr_final (the likely final: the answer starts on it, held), vad_end, end_confirmed (the final:
the held answer may air), llm_first_token, first_clause, tts_first_chunk, first_lipsync_frame,
first_packet_at_viewer. JSON: p50_ms, p95_ms, turns, stages_p50_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

from agents.config import load_config
from models.defaults import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT))  # the bench drives the studio with the tests' real-peer harness
from tests.conftest import ServerThread, espeak, eventually, free_port
from tests.viewer_client import AiortcViewer, ScriptedMic

QUESTIONS = [
    "What is your name?",
    "Can you tell me about yourself?",
    "What shoes would you recommend for running?",
    "Do you like running?",
    "What should I wear for a marathon?",
    "Which shoe is best for hiking?",
    "Are your shoes good for beginners?",
    "What is new in the shop today?",
    "How do I pick the right size?",
    "Can you say hello to my friend?",
    "What do you think of trail running?",
    "Is it fun to host a stream?",
    "What is the best way to train for a race?",
    "Do you have shoes for kids?",
    "Tell me something nice.",
    "What are the shoes made of?",
    "Why should I buy from you?",
    "How do I clean my shoes?",
    "What is your favourite shoe?",
    "Can I wear the hiking shoes in the city?",
]
STAGES = (
    "asr_final", "vad_end", "released", "llm_first_token", "first_clause", "tts_first_chunk", "first_segment", "on_air",
)  # fmt: skip
STAGE_NAMES = {"released": "end_confirmed", "first_segment": "first_lipsync_frame", "on_air": "program_on_air"}


def voice_end_s(pcm: np.ndarray) -> float:
    """Seconds from the clip's start to the end of its voice (its last sample above 1 % of full scale)."""
    return float(np.flatnonzero(np.abs(pcm.astype(np.int32)) > 327)[-1] + 1) / 48_000


async def run(args: argparse.Namespace) -> dict:
    cfg = load_config(Path(args.config))
    cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update={"port": free_port()})})
    if args.llm == "none":
        cfg = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"backend": "none"})})
    ch_cfg = cfg.channels[0].model_copy(update={"greeting": None})
    cfg = cfg.model_copy(update={"channels": [ch_cfg]})
    server = ServerThread(cfg).start()
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, lambda: server.call(server.studio.wait_for_llm(), timeout=300))
        channel = server.studio.channels[ch_cfg.name]
        mic = ScriptedMic()
        viewer = AiortcViewer(server.url, ch_cfg.name, mic=mic)
        await viewer.connect()
        speech = [espeak(q) for q in QUESTIONS[: args.turns]]
        turns = []
        for pcm in speech:
            await viewer.until(lambda g: len(g.audio_rms) > 0, 5, "audio")
            start_idx = len(viewer.got.audio_rms)
            mic.say(pcm)
            await viewer.until(lambda g: len(mic.said_at) > len(turns), 10, "the question to go out")
            spoken_end = mic.said_at[len(turns)] + voice_end_s(pcm)

            def answered(g, start_idx=start_idx, spoken_end=spoken_end) -> float | None:  # type: ignore[no-untyped-def]
                pairs = zip(g.audio_rms[start_idx:], g.audio_times[start_idx:], strict=False)
                return next((t for r, t in pairs if r > 1000 and t > spoken_end), None)

            await viewer.until(lambda g, answered=answered: answered(g) is not None, 30, "the answer at the viewer")
            first = answered(viewer.got)
            turn = max(channel.conversation.turns.values(), key=lambda t: t.stages.get("created", 0), default=None)
            stages = {
                STAGE_NAMES.get(s, s): round((turn.stages[s] - spoken_end) * 1000)
                for s in STAGES
                if turn is not None and s in turn.stages
            }
            stages["first_packet_at_viewer"] = round((first - spoken_end) * 1000)
            turns.append(stages)
            await eventually(lambda: not channel.conversation.turns, 60, "the answer to finish")
        await viewer.close()
    finally:
        server.stop()
    total = np.array([t["first_packet_at_viewer"] for t in turns])
    names = {k for t in turns for k in t}
    return {
        "p50_ms": float(np.percentile(total, 50)),
        "p95_ms": float(np.percentile(total, 95)),
        "turns": len(turns),
        "stages_p50_ms": {k: float(np.percentile([t[k] for t in turns if k in t], 50)) for k in sorted(names)},
        "llm": args.llm,
        "per_turn": turns,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--llm", choices=["vllm", "none"], default="vllm")
    ap.add_argument("-c", "--config", default=str(PROJECT_ROOT / "configs" / "demo.yaml"))
    args = ap.parse_args()
    t0 = time.monotonic()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"end of speech -> first answer audio at the viewer, {result['turns']} turns: "
        f"p50 {result['p50_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms  ({time.monotonic() - t0:.0f} s)"
    )
    for k, v in sorted(result["stages_p50_ms"].items(), key=lambda kv: kv[1]):
        print(f"  {k:24s} {v:7.0f} ms")


if __name__ == "__main__":
    main()
