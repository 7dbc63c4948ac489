"""A/V offset and mouth/audio correlation of a rendered clip.

    python bench/av_sync.py CLIP.mp4 [--json]
    python bench/av_sync.py [--json]        renders the drawn and the photo avatar first, measures both

The offset is the lag of the mouth behind the voice (ms, negative: the mouth leads), found by
cross-correlating the speech envelope with the mouth region's motion (stream/avsync.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from stream.avsync import measure

TEXT = (
    "Hello everyone, and welcome back to the stream! Today we are trying out a brand new pair of running shoes. "
    "They are light, they are fast, and they cost forty nine dollars."
)


def render_clips(tmp: Path) -> dict[str, Path]:
    import contextlib
    import io

    import cv2
    import skimage.data

    from agents.cli import main as cli
    from models.faces import prepare_photo_pack

    photo = tmp / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    pack = prepare_photo_pack(photo, tmp / "astronaut", progress=lambda _: None).path
    clips = {"sprite": tmp / "sprite.mp4", "photo": tmp / "photo.mp4"}
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli(["render", "--say", TEXT, "-o", str(clips["sprite"])]) == 0
        assert cli(["render", "--say", TEXT, "-o", str(clips["photo"]), "--avatar", str(pack)]) == 0
    return clips


def report(name: str, clip: Path) -> dict:
    r = measure(clip)
    return {
        "clip": name,
        "offset_ms": round(r.offset_ms, 1),
        "correlation": round(r.correlation, 3),
        "video_s": round(r.video_s, 3),
        "audio_s": round(r.audio_s, 3),
        "mouth_box": list(r.mouth_box),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip", nargs="?", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.clip is not None:
        if not args.clip.is_file():
            sys.exit(f"error: {args.clip} not found")
        results = [report(str(args.clip), args.clip)]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results = [report(name, path) for name, path in render_clips(Path(tmp)).items()]
    if args.json:
        print(
            json.dumps(
                results[0]
                if len(results) == 1
                else {"clips": results, **{k: results[0][k] for k in ("offset_ms", "correlation")}}
            )
        )
        return
    for r in results:
        print(
            f"{r['clip']}: A/V offset {r['offset_ms']:+.1f} ms, mouth/audio correlation {r['correlation']:.3f} "
            f"({r['video_s']:.2f} s video, {r['audio_s']:.2f} s audio)"
        )


if __name__ == "__main__":
    main()
