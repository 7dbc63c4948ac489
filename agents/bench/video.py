"""The picture half's speed on this machine: lip-sync rendering by batch and H.264 encoding.

Rendering and encoding are measured with bench/render.py's own functions (frames_per_second: the
service's renderer drawing a batch as I420 into leased ring frames, as the batcher calls it;
encode_ms: the channel encoder's x264 per frame), on the lip-sync service the studio builds from
the config (agents/worker/studio.py local_lipsync), so `avatarcast bench` and the module bench
cannot disagree by construction, only by noise.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from agents.config import StudioConfig
from models.avatars import resolve_pack
from models.defaults import PROJECT_ROOT
from stream.clock import VideoFormat

ENCODE_FRAMES = 60
"""Frames of talking face encoded for the ms/frame figure (bench/render.py uses 100)."""
MAX_CHANNELS = 4096

Say = Callable[[str], None]


def module_bench(name: str = "render") -> ModuleType:
    """bench/<name>.py, whose measuring code this command shares (it sits in the checkout)."""
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    try:
        return importlib.import_module(f"bench.{name}")
    except ImportError as exc:
        raise RuntimeError(f"bench/{name}.py not found under {PROJECT_ROOT}: run from a checkout ({exc})") from exc


def lipsync_on(cfg: StudioConfig, device: str) -> Any:
    """The lip-sync service the studio would build from `cfg`, on `device` (threads set as serve sets them)."""
    from agents.worker.studio import local_lipsync

    on = cfg.model_copy(update={"lipsync": cfg.lipsync.model_copy(update={"device": device})})
    return local_lipsync(on)


def video_format(cfg: StudioConfig) -> VideoFormat:
    video = cfg.channels[0].video if cfg.channels else None
    return VideoFormat(video.width, video.height, video.fps) if video else VideoFormat(512, 512, 25)


def pack_of(cfg: StudioConfig) -> str:
    return cfg.channels[0].avatar.pack if cfg.channels else "builtin:nova"


def lipsync_speed(cfg: StudioConfig, device: str, batches: list[int], seconds: float, say: Say) -> dict[str, Any]:
    """Frames/s at each batch, the admission price of a frame, and x264's ms/frame (encode runs on the CPU)."""
    render = module_bench()
    fmt = video_format(cfg)
    service = lipsync_on(cfg, device)
    face = service.prepare_blocking(resolve_pack(pack_of(cfg)), fmt.size)
    fps_by_batch: dict[int, float] = {}
    for batch in batches:
        fps_by_batch[batch] = render.frames_per_second(service, face, batch, seconds)
        say(f"      lip-sync on {device}, batch {batch}: {fps_by_batch[batch]:.1f} frames/s")
    frame_cost_s = service.frame_cost_blocking(face)
    frames = service.render_now([face] * ENCODE_FRAMES, render.talking_params(ENCODE_FRAMES))
    return {
        "device": str(service.device),
        "kind": face.kind,
        "size": list(fmt.size),
        "fps_by_batch": fps_by_batch,
        "frame_cost_ms": frame_cost_s * 1000,
        "frames": frames,
    }


def encode_speed(cfg: StudioConfig, frames: Any) -> float:
    """x264 ms per frame of the channel's picture (one encoder per channel, shared by every viewer)."""
    return float(module_bench().encode_ms(frames, video_format(cfg)))
