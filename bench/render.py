"""Lip-sync rendering speed by batch (drawn and photo avatars), host copy bandwidth, H.264 encode cost.

    python bench/render.py [--json] [--size 512] [--device auto|cpu|cuda] [--seconds 3] [--batches 1 8 32]
    python bench/render.py --lipsync wav2lip|wav2lip256 [--checkpoint PATH] [--batches 1 8 64 256] ...

With --lipsync the neural network draws talking frames of a photo pack (every frame voiced, so every
frame goes through the network); without a checkpoint it runs on random weights, which cost the
same: the JSON then has the network's fps_batch_<n> and copy_gbps_batch_<n> at the top level.

Frames are rendered as the studio renders them: the service's renderer draws a batch as I420
straight into frames leased from a frame ring (page-locked on CUDA). fps_batch_<n> is frames per
second at batch n; copy_gbps_batch_<n> is the device -> host copy of a batch of finished I420 frames
into ring memory (on a CPU: a plain memory copy). The JSON's top-level fps_batch_* and
copy_gbps_batch_* are the embedded default (the drawn avatar); "photo" holds the photo warp's
numbers; encode_ms_per_frame is the channel encoder's x264 time per frame.
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
from models.lipsync.i420 import copy_to_host
from models.lipsync.idle import IdleMotion
from models.lipsync.params import MOUTH
from models.lipsync.service import LipSyncService
from models.protocols import PreparedFace
from stream.clock import VideoFormat
from stream.encoder import ChannelEncoder

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def talking_params(n: int, seed: int = 0) -> np.ndarray:
    """n frames of plausible speech: idle motion plus a mouth that moves like talking."""
    params = IdleMotion(seed, 25).params(0, n)
    t = np.arange(n) / 25
    params[:, MOUTH] = np.stack(
        [0.45 + 0.4 * np.sin(2 * np.pi * 4.1 * t), 0.3 + 0.3 * np.sin(2 * np.pi * 1.3 * t), 0.2 + 0.2 * np.cos(t)], 1
    ).clip(0, 1)
    return params


def frames_per_second(service: LipSyncService, face: PreparedFace, batch: int, seconds: float) -> float:
    """The renderer's own batched call, into leased ring frames, as the batcher makes it."""
    params = talking_params(batch)
    ring = service.frame_ring(face, batch)
    renderer = service.renderer(face.kind)
    calibration = getattr(renderer, "calibration", None)
    extras = calibration(face, batch) if calibration is not None else {}  # an audio-driven face: voiced

    def once() -> None:
        frames = ring.lease(batch)
        assert frames is not None
        renderer.render_i420([face] * batch, params, frames, **extras)

    once()  # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or not done:
        once()
        done += batch
    return done / (time.perf_counter() - t0)


def copy_gbps(service: LipSyncService, face: PreparedFace, batch: int, seconds: float) -> float:
    """A batch of finished I420 frames on the device -> ring frames on the host (one sync per batch)."""
    ring = service.frame_ring(face, batch)
    frames = ring.lease(batch)
    assert frames is not None
    source = torch.randint(0, 255, (batch, *ring.frame_shape), dtype=torch.uint8, device=service.device)
    copy_to_host(source, frames)
    copies, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 4 or not copies:
        copy_to_host(source, frames)
        copies += 1
    return copies * batch * ring.frame_bytes / (time.perf_counter() - t0) / 1e9


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


def random_checkpoint(arch: str, folder: Path) -> Path:
    """Random weights in the upstream layout (the network costs the same whatever its weights)."""
    from models.lipsync.wav2lip_checkpoint import ARCHITECTURES

    path = folder / f"{arch}.pth"
    state = ARCHITECTURES[arch]().state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path


def neural(args: argparse.Namespace) -> dict:
    from models.lipsync.service import NeuralModel

    results: dict = {"lipsync": args.lipsync, "size": [args.size, args.size], "batches": args.batches}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(args.checkpoint) if args.checkpoint else random_checkpoint(args.lipsync, Path(tmp))
        results["weights"] = "checkpoint" if args.checkpoint else "random"
        service = LipSyncService(args.device, neural=NeuralModel(args.lipsync, checkpoint))
        results["device"], results["threads"] = str(service.device), torch.get_num_threads()
        face = service.prepare_blocking(photo_pack(Path(tmp)), (args.size, args.size))
        for b in args.batches:
            results[f"fps_batch_{b}"] = round(frames_per_second(service, face, b, args.seconds), 1)
            results[f"copy_gbps_batch_{b}"] = round(copy_gbps(service, face, b, args.seconds), 2)
            if not args.json:
                print(f"  {args.lipsync} batch {b:4d}: {results[f'fps_batch_{b}']:8.1f} frames/s", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--batches", type=int, nargs="+", default=None)
    ap.add_argument("--lipsync", choices=["wav2lip", "wav2lip256"], default=None, help="a neural network's speed")
    ap.add_argument("--checkpoint", default=None, help="its weights (default: random ones, same cost)")
    args = ap.parse_args()
    if args.lipsync is not None:
        args.batches = args.batches or [1, 2, 4, 8, 16, 32, 64, 128, 256]
        results = neural(args)
        print(json.dumps(results) if args.json else f"{args.lipsync} on {results['device']}: see above")
        return
    args.batches = args.batches or list(BATCHES)
    service = LipSyncService(args.device)
    size = (args.size, args.size)
    results: dict = {
        "device": str(service.device), "size": list(size), "threads": torch.get_num_threads(), "batches": args.batches,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        faces = {
            "sprite": service.prepare_blocking(resolve_pack("builtin:nova"), size),
            "photo": service.prepare_blocking(photo_pack(Path(tmp)), size),
        }
        for kind, face in faces.items():
            results[kind] = {}
            for b in args.batches:
                results[kind][f"fps_batch_{b}"] = round(frames_per_second(service, face, b, args.seconds), 1)
                results[kind][f"copy_gbps_batch_{b}"] = round(copy_gbps(service, face, b, args.seconds), 2)
                if not args.json:
                    print(f"  {kind:6s} batch {b:4d}: {results[kind][f'fps_batch_{b}']:8.1f} frames/s", flush=True)
        frames = service.render_now([faces["sprite"]] * 100, talking_params(100))
    results.update(results["sprite"])
    results["encode_ms_per_frame"] = round(encode_ms(frames, VideoFormat(*size, 25)), 2)
    if args.json:
        print(json.dumps(results))
        return
    print(
        f"lip-sync rendering on {results['device']} ({results['threads']} threads), {args.size}x{args.size}, as I420:"
    )
    for kind in ("sprite", "photo"):
        for b in args.batches:
            fps, gbps = results[kind][f"fps_batch_{b}"], results[kind][f"copy_gbps_batch_{b}"]
            print(f"  {kind:6s} batch {b:4d}: {fps:8.1f} frames/s   host copy {gbps:6.2f} GB/s")
    print(f"H.264 encode (one per channel, shared by every viewer): {results['encode_ms_per_frame']} ms/frame")


if __name__ == "__main__":
    main()
