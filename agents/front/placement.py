"""Where every part of a studio runs: processes and devices, as `serve` will place them.

Preflight prints it, so a streamer sees before going live that the LLM sits on one GPU and
lip-sync on another (the seed's split), how many media workers the box gets, and which process
draws the frames. A device asked for but absent is a problem with its fix.
"""

from __future__ import annotations

import os

from agents.config import StudioConfig

CORES_PER_WORKER = 2
"""`workers: auto` gives a worker per this many cores: an event loop and its channels' encoders keep
about that busy (measured: notes/gpu-h200.md, x264 at 2-3 ms a frame, ~12 talking channels each)."""


def worker_count(setting: int | str, cores: int | None = None) -> int:
    """`server.workers` -> how many media workers: a number, or auto (1 below 4 cores, else one per
    CORES_PER_WORKER cores)."""
    if setting != "auto":
        return int(setting)
    cores = cores or len(os.sched_getaffinity(0))
    return 1 if cores < 4 else cores // CORES_PER_WORKER


def shared_renderer(cfg: StudioConfig) -> bool:
    """Whether one GPU service renders for every worker (lipsync.process; auto: on a GPU)."""
    if cfg.lipsync.process != "auto":
        return cfg.lipsync.process == "shared"
    if cfg.lipsync.device.startswith("cuda"):
        return True
    if cfg.lipsync.device == "auto":
        import torch

        return torch.cuda.is_available()
    return False


def shared_asr(cfg: StudioConfig) -> bool:
    """Whether the GPU service also runs Whisper for every worker (asr.process; auto: when it runs
    there anyway and Whisper is on a GPU)."""
    if not shared_renderer(cfg) or cfg.asr.process == "worker":
        return False
    if cfg.asr.process == "shared" or cfg.asr.device.startswith("cuda"):
        return True
    return cfg.asr.device == "auto" and _gpus() > 0


def voices_in_service(cfg: StudioConfig) -> bool:
    """Whether the GPU service speaks for the workers (tts.process; which voices: voice_in_service)."""
    return shared_renderer(cfg) and cfg.tts.process != "worker"


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _resolve(device: str, gpus: int) -> tuple[str, str]:
    """(where it runs, problem or '') for a configured device."""
    if device == "auto":
        return ("cuda:0" if gpus else "cpu"), ""
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= gpus:
            return device, f"{device} asked for, {gpus} GPU(s) seen; fix: device auto or cpu, or another index"
        return f"cuda:{index}", ""
    return device, ""


def describe(cfg: StudioConfig) -> tuple[list[str], list[str]]:
    """(lines saying what runs where, problems with their fixes)."""
    gpus = _gpus()
    cores = len(os.sched_getaffinity(0))
    workers = worker_count(cfg.server.workers)
    lines = [
        f"{cores} CPU cores, {gpus} GPU(s); {workers} media worker process(es) (server.workers: {cfg.server.workers})"
    ]
    problems: list[str] = []

    lipsync, problem = _resolve(cfg.lipsync.device, gpus)
    problems += [f"lipsync.device: {problem}"] if problem else []
    if workers > 1 and shared_renderer(cfg):
        drawn = f"one GPU service process for every worker, on {lipsync}"
    elif workers > 1:
        drawn = f"each worker, on {lipsync}"
    else:
        drawn = f"the studio's process, on {lipsync}"
    lines.append(f"lip-sync: drawn by {drawn}")

    llm = cfg.llm
    if llm.backend == "none":
        lines.append("LLM: none (cached and canned answers)")
    elif llm.backend == "openai":
        lines.append(f"LLM: the OpenAI-compatible server at {llm.base_url} ({llm.model})")
    else:
        device, problem = _resolve(llm.device, gpus)
        problems += [f"llm.device: {problem}"] if problem else []
        where = "vLLM's own server process, supervised" if workers > 1 else "a vLLM engine in the studio's process"
        lines.append(f"LLM: {where}, on {device} ({llm.model}, {llm.dtype})")

    asr, problem = _resolve(cfg.asr.device, gpus)
    problems += [f"asr.device: {problem}"] if problem else []
    where = "the GPU service, for every worker" if workers > 1 and shared_asr(cfg) else "each worker"
    lines.append(f"speech recognition: {cfg.asr.model} in {where}, on {asr}")
    backends = sorted({ch.voice.backend for ch in cfg.channels})
    served = workers > 1 and voices_in_service(cfg)

    def where(backend: str) -> str:
        device = "CPU" if backend == "piper" else "a GPU when torch sees one"
        place = "the GPU service" if served and cfg.tts.in_service(backend) else "each worker"
        return f"{backend} in {place} ({device})"

    lines.append(f"voices: {', '.join(where(b) for b in backends) or 'none'}")
    return lines, problems
