"""Lip-sync rendering speed (frames/s at batch 1, 8, 32; drawn and photo avatars) and H.264 encode cost.

    python bench/render.py [--json] [--size 512] [--device auto|cpu|cuda] [--seconds 3]

The JSON's top-level fps_batch_* are the embedded default (the drawn avatar); "photo" holds the
photo warp's numbers; encode_ms_per_frame is the channel encoder's x264 time per 512x512 frame.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models.avatars import resolve_pack
from models.lipsync.idle import IdleMotion
from models.lipsync.params import MOUTH
from models.lipsync.service import LipSyncService
from stream.clock import VideoFormat
from stream.encoder import ChannelEncoder

BATCHES = (1, 8, 32)


def talking_params(n: int, seed: int = 0) -> np.ndarray:
    """n frames of plausible speech: idle motion plus a mouth that moves like talking."""
    params = IdleMotion(seed, 25).params(0, n)
    t = np.arange(n) / 25
    params[:, MOUTH] = np.stack(
        [0.45 + 0.4 * np.sin(2 * np.pi * 4.1 * t), 0.3 + 0.3 * np.sin(2 * np.pi * 1.3 * t), 0.2 + 0.2 * np.cos(t)], 1
    ).clip(0, 1)
    return params


def frames_per_second(service: LipSyncService, face, batch: int, seconds: float) -> float:  # type: ignore[no-untyped-def]
    params = talking_params(batch)
    service.render_now([face] * batch, params)  # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        service.render_now([face] * batch, params)
        done += batch
    return done / (time.perf_counter() - t0)


def encode_ms(frames: np.ndarray, fmt: VideoFormat) -> float:
    encoder = ChannelEncoder(fmt)
    encoder._encode_video(frames[0], 0, True)
    t0 = time.perf_counter()
    for i, image in enumerate(frames[1:], 1):
        encoder._encode_video(image, i, False)
    return (time.perf_counter() - t0) * 1000 / (len(frames) - 1)


def photo_pack(tmp: Path) -> Path:
    import cv2
    import skimage.data

    from models.faces import prepare_photo_pack

    photo = tmp / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    return prepare_photo_pack(photo, tmp / "astronaut", progress=lambda _: None).path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    service = LipSyncService(args.device)
    size = (args.size, args.size)
    results: dict = {"device": str(service.device), "size": list(size), "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        faces = {
            "sprite": service.prepare(resolve_pack("builtin:nova"), size),
            "photo": service.prepare(photo_pack(Path(tmp)), size),
        }
        for kind, face in faces.items():
            results[kind] = {
                f"fps_batch_{b}": round(frames_per_second(service, face, b, args.seconds), 1) for b in BATCHES
            }
        frames = service.render_now([faces["sprite"]] * 100, talking_params(100))
    results.update(results["sprite"])
    results["encode_ms_per_frame"] = round(encode_ms(frames, VideoFormat(*size, 25)), 2)
    if args.json:
        print(json.dumps(results))
        return
    print(f"lip-sync rendering on {results['device']} ({results['threads']} threads), {args.size}x{args.size}:")
    for kind in ("sprite", "photo"):
        row = "  ".join(f"batch {b}: {results[kind][f'fps_batch_{b}']:7.1f} fps" for b in BATCHES)
        print(f"  {kind:6s}  {row}")
    print(f"H.264 encode (one per channel, shared by every viewer): {results['encode_ms_per_frame']} ms/frame")


if __name__ == "__main__":
    main()
