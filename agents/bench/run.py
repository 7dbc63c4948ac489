"""`avatarcast bench`: every module of the studio measured on this machine, on the CPU and on the GPU
where there is one, then added up into what matters before going live: how long a viewer waits
for an answer and how many talking channels the box holds.

Each step says what it does as it goes (stderr), a module that cannot run here (no model
prepared, a backend switched off) is reported as not measured with the reason and the others go
on. The Markdown table goes to stdout; --report writes the HTML report, --json the raw numbers.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from agents.bench import capacity, estimate, speech, video
from agents.bench.report import html_report, markdown
from agents.bench.results import BenchResults, Row
from agents.config import StudioConfig

STEPS = 6
"""Steps every run takes; --measure-channels adds one."""


class Progress:
    def __init__(self, steps: int = STEPS) -> None:
        self.t0 = time.monotonic()
        self.step = 0
        self.steps = steps

    def __call__(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def begin(self, what: str) -> None:
        self.step += 1
        self(f"[{self.step}/{self.steps}] {what} ({time.monotonic() - self.t0:.0f} s so far)")


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info["when"] = time.strftime("%Y-%m-%d %H:%M")
    return info


def gpu_state() -> tuple[bool, str]:
    """(found, what to say): a GPU torch can use, or plainly why there is none."""
    if torch.cuda.is_available():
        return True, f"{torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} GPU(s) seen by torch)"
    why = "torch sees no CUDA device"
    if shutil.which("nvidia-smi"):
        why += " (nvidia-smi is installed: this torch may be a CPU build)"
    return False, why


def _fail(results: BenchResults, module: str, exc: BaseException, say: Progress) -> None:
    results.skipped[module] = f"{type(exc).__name__}: {exc}"
    say(f"      {module} not measured: {results.skipped[module]}")


async def _speech(cfg: StudioConfig, args: Any, results: BenchResults, say: Progress) -> dict[str, Any]:
    gpu_note = "" if results.gpu_found else "no GPU found"
    measured: dict[str, Any] = {}
    say.begin(f"TTS: {cfg.channels[0].voice.backend if cfg.channels else 'piper'} voice, real-time factor")
    tts = Row("TTS", "real-time factor", "s per s of speech", False, gpu_note=gpu_note)
    voice = await asyncio.to_thread(speech.load_voice_of, cfg)
    try:
        measured["tts"] = await speech.tts_speed(voice, args.repeats, say)
        on_gpu = results.gpu_found and type(voice).__name__ == "CoquiTTS"
        if on_gpu:
            tts.gpu = measured["tts"]["rtf"]
            tts.cpu_note = "the voice runs on the GPU"
        else:
            tts.cpu = measured["tts"]["rtf"]
            tts.gpu_note = tts.gpu_note or "Piper runs on the CPU (ONNX)"
        question = await speech.question_audio(voice)
    finally:
        close = getattr(voice, "close", None)
        if close is not None:
            close()
    results.rows.append(tts)

    say.begin(f"ASR: Whisper {cfg.asr.model}, seconds of audio per second ({question.seconds:.1f} s question)")
    asr = Row("ASR", "audio transcribed", "s of audio per s", True, gpu_note=gpu_note)
    for device in ["cpu", "cuda"] if results.gpu_found else ["cpu"]:
        try:
            found = await asyncio.to_thread(speech.asr_speed, cfg, device, question, args.repeats, say)
        except Exception as exc:
            _fail(results, f"ASR on {device}", exc, say)
            continue
        measured[f"asr_{device}"] = found
        setattr(asr, "gpu" if device == "cuda" else "cpu", found["audio_s_per_s"])
    results.rows.append(asr)

    what = "backend none" if cfg.llm.backend == "none" else f"{cfg.llm.backend} {cfg.llm.model}"
    say.begin(f"LLM: {what}, first token and tokens/s at 1 and {args.concurrency} at once")
    rows = [
        Row("LLM", "time to first token", "ms", False),
        Row("LLM", "tokens/s, 1 request", "tokens/s", True),
        Row("LLM", f"tokens/s, {args.concurrency} at once", "tokens/s", True),
    ]
    results.rows += rows
    if cfg.llm.backend == "none":
        results.skipped["LLM"] = "llm.backend is none in this config (answers come from the cache and canned lines)"
        for row in rows:
            row.cpu_note = row.gpu_note = "llm.backend: none"
        say(f"      {results.skipped['LLM']}")
        return measured
    from agents.worker.studio import load_llm

    on_gpu = results.gpu_found and cfg.llm.backend == "vllm" and cfg.llm.device != "cpu"
    try:
        llm = await load_llm(cfg.llm)
        assert llm is not None
        try:
            found = await speech.llm_speed(llm, args.concurrency, args.max_tokens, args.repeats, say)
        finally:
            aclose = getattr(llm, "aclose", None)
            if aclose is not None:
                await aclose()
    except Exception as exc:
        _fail(results, "LLM", exc, say)
        for row in rows:
            row.cpu_note = row.gpu_note = "not measured"
        return measured
    measured["llm"] = found
    other = "one engine per run: set llm.device to measure the other" if results.gpu_found else "no GPU found"
    for row, key in zip(rows, ("ttft_ms", "tokens_per_s_1", "tokens_per_s_n"), strict=True):
        setattr(row, "gpu" if on_gpu else "cpu", found[key])
        setattr(row, "cpu_note" if on_gpu else "gpu_note", other)
    return measured


def _video(cfg: StudioConfig, args: Any, results: BenchResults, say: Progress) -> dict[str, Any]:
    fmt = video.video_format(cfg)
    batches = sorted({b for b in args.batches if b <= cfg.lipsync.max_batch} or {1})
    say.begin(f"lip-sync: {video.pack_of(cfg)} at {fmt.width}x{fmt.height}, frames/s at batch {batches}")
    gpu_note = "" if results.gpu_found else "no GPU found"
    rows = {b: Row("lip-sync", f"frames/s at batch {b}", "frames/s", True, gpu_note=gpu_note) for b in batches}
    measured: dict[str, Any] = {}
    for device in ["cpu", "cuda"] if results.gpu_found else ["cpu"]:
        side = "gpu" if device == "cuda" else "cpu"
        try:
            found = video.lipsync_speed(cfg, device, batches, args.seconds, say)
        except Exception as exc:
            _fail(results, f"lip-sync on {device}", exc, say)
            continue
        measured[side] = found
        results.lipsync_by_batch[side] = found["fps_by_batch"]
        for batch, row in rows.items():
            setattr(row, side, found["fps_by_batch"][batch])
    results.rows += rows.values()

    say.begin("H.264 encode: ms per frame (x264 on the CPU, one encoder per channel)")
    encode = Row("encode", "H.264 per frame", "ms", False, gpu_note="x264 runs on the CPU")
    frames = measured.get("cpu", measured.get("gpu", {})).get("frames")
    if frames is not None:
        encode.cpu = video.encode_speed(cfg, frames)
        say(f"      {encode.cpu:.2f} ms per frame")
    results.rows.append(encode)
    measured["encode_ms"] = encode.cpu
    return measured


def _totals(cfg: StudioConfig, spoken: dict[str, Any], drawn: dict[str, Any], results: BenchResults) -> None:
    say_best = "gpu" if "gpu" in drawn else "cpu"
    asr = spoken.get("asr_cuda") or spoken.get("asr_cpu")
    llm = spoken.get("llm")
    conversation = cfg.channels[0].conversation if cfg.channels else None
    total, stages = estimate.voice_to_answer(
        end_of_speech_ms=float(conversation.end_of_speech_ms if conversation else 500),
        fps=video.video_format(cfg).fps,
        asr_ms=asr["utterance_ms"] if asr else None,
        ttft_ms=llm["ttft_ms"] if llm else None,
        tokens_per_s=llm["tokens_per_s_1"] if llm else None,
        tts_first_ms=spoken["tts"]["first_clause_ms"] if "tts" in spoken else None,
        fps_by_batch=drawn[say_best]["fps_by_batch"] if say_best in drawn else {},
        encode_ms=drawn.get("encode_ms"),
    )
    results.end_to_end_ms, results.stages, results.end_to_end_how = total, stages, estimate.HOW


async def _channels(
    cfg: StudioConfig, args: Any, spoken: dict[str, Any], drawn: dict[str, Any], results: BenchResults, say: Progress
) -> None:
    """How many talking channels this box holds: the short estimate, admission's count and (asked) the real one."""
    side = "gpu" if results.gpu_found else "cpu"
    device = "cuda" if results.gpu_found else "cpu"
    rtf = spoken["tts"]["rtf"] if "tts" in spoken else None
    cores = results.machine["cores"]
    say.begin(f"talking channels: {capacity.SAMPLE_CHANNELS} real ones on {device} for {args.sample_seconds:g} s")
    try:
        held = await capacity.sampled(cfg, device, args.sample_seconds, cores, rtf)
    except Exception as exc:
        _fail(results, "talking channels", exc, say)
        return
    say(f"      {held['cpu_per_channel']:.3f} cores and {held['render_per_channel']:.1%} of the render thread each")
    if side in drawn and drawn.get("encode_ms") is not None:
        held["admission"] = capacity.by_admission(cfg, drawn[side]["frame_cost_ms"], drawn["encode_ms"], cores, rtf)
    results.channels[side] = held
    results.channels_how = held["how"]
    if args.measure_channels:
        say.begin(
            f"talking channels, measured: bench/channels.py's search on {device} ({args.seconds_per_level:g} s a level)"
        )
        try:
            found = await capacity.measured(cfg, device, args.seconds_per_level, args.max_channels, say)
        except Exception as exc:
            _fail(results, "measured channels", exc, say)
        else:
            held.update(measured=found["channels"], measured_levels=found["levels"])


async def measure(cfg: StudioConfig, config_path: str, args: Any) -> BenchResults:
    say = Progress(STEPS + (1 if args.measure_channels else 0))
    found, note = gpu_state()
    say(f"avatarcast bench: {config_path}; {'GPU: ' + note if found else 'no GPU found (' + note + ')'}")
    results = BenchResults(machine=machine_info(), config=config_path, gpu_found=found, gpu_note=note)
    spoken = await _speech(cfg, args, results, say)
    drawn = await asyncio.to_thread(_video, cfg, args, results, say)
    results.details = {
        "asr": spoken.get("asr_cuda") or spoken.get("asr_cpu"),
        "tts": spoken.get("tts"),
        "llm": spoken.get("llm"),
        "lipsync": {
            side: {k: v for k, v in drawn[side].items() if k != "frames"} for side in ("cpu", "gpu") if side in drawn
        },
    }
    _totals(cfg, spoken, drawn, results)
    await _channels(cfg, args, spoken, drawn, results, say)
    results.seconds = time.monotonic() - say.t0
    say(f"done in {results.seconds:.0f} s")
    return results


def run(cfg: StudioConfig, config_path: str, args: Any) -> int:
    results = asyncio.run(measure(cfg, config_path, args))
    terminal = markdown(results)
    print(terminal, flush=True)
    if args.report:
        Path(args.report).write_text(html_report(results, terminal))
        print(f"report written to {args.report}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results.to_json(), indent=1, default=float))
        print(f"numbers written to {args.json}", flush=True)
    return 0
