"""`avatarcast bench`: what this machine can do, module by module, on the CPU and on the GPU.

  avatarcast bench [-c CONFIG] [--report report.html] [--json numbers.json]

Only the command's arguments are defined here, so that `avatarcast --help` stays quick; the
measuring (torch, the models) is imported when the command runs (agents/bench/run.py).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from models.defaults import PROJECT_ROOT

DEFAULT_BATCHES = (1, 4, 16, 32)
DEMO_CONFIG = PROJECT_ROOT / "configs" / "demo.yaml"


def cmd_bench(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):  # vLLM's own log would bury the table (it logs to stdout)
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    from agents.bench.run import run
    from agents.config import load_config

    return run(load_config(Path(args.config)), args.config, args)


def register(sub: Any) -> None:
    """Add the `bench` subcommand to the CLI's subparsers."""
    bench = sub.add_parser("bench", help="measure every module on this machine (CPU and GPU) and write a report")
    bench.add_argument("-c", "--config", default=str(DEMO_CONFIG), help="the studio config whose models are measured")
    bench.add_argument("--report", default=None, help="write an HTML report with plots here")
    bench.add_argument("--json", default=None, help="write the raw numbers here")
    bench.add_argument("--seconds", type=float, default=2.0, help="seconds per lip-sync batch measured")
    bench.add_argument("--batches", type=int, nargs="+", default=list(DEFAULT_BATCHES),
                       help="lip-sync batch sizes (up to lipsync.max_batch)")  # fmt: skip
    bench.add_argument("--repeats", type=int, default=3, help="repeats of each ASR, TTS and LLM measurement")
    bench.add_argument("--concurrency", type=int, default=8, help="LLM requests at once for tokens/s at N")
    bench.add_argument("--max-tokens", type=int, default=64, help="tokens per LLM reply")
    bench.add_argument(
        "--measure-channels",
        action="store_true",
        help="also find the talking channels that really hold (bench/channels.py's search; minutes)",
    )
    bench.add_argument("--sample-seconds", type=float, default=4.0, help="seconds the sampled talking channels run")
    bench.add_argument("--seconds-per-level", type=float, default=5.0, help="with --measure-channels")
    bench.add_argument("--max-channels", type=int, default=64, help="with --measure-channels")
    bench.set_defaults(func=cmd_bench)
