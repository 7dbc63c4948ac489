"""`avatarcast bench --report` on this machine: a report whose numbers are the module benches' (within
their noise), that says plainly that no GPU was found, with a Markdown table in the terminal.

Small sizes and short runs keep it near a minute: a 256x256 drawn channel, no LLM (llm.backend
none: the report must say it was not measured, not show a zero), one second per lip-sync batch.
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from models.defaults import PROJECT_ROOT

CONFIG = """\
server: {host: 127.0.0.1, port: 8099}
lipsync: {device: auto}
llm: {backend: none}
channels:
  - name: small
    video: {width: 256, height: 256, fps: 25}
"""
SIZE, BATCHES = 256, (1, 8)
NOISE = 2.0
"""Two runs of the same bench on this shared 2-core machine differ by up to this factor (other work runs)."""


@dataclass
class BenchRun:
    stdout: str
    stderr: str
    report: str
    numbers: dict[str, Any]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> BenchRun:
    folder = tmp_path_factory.mktemp("bench")
    config, report, numbers = folder / "small.yaml", folder / "report.html", folder / "numbers.json"
    config.write_text(CONFIG)
    command = [sys.executable, "-m", "agents.cli", "bench", "-c", str(config), "--report", str(report),
               "--json", str(numbers), "--seconds", "1", "--batches", *map(str, BATCHES), "--repeats", "2"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"report: {report}")
    return BenchRun(done.stdout, done.stderr, report.read_text(), json.loads(numbers.read_text()))


def _row(numbers: dict[str, Any], module: str, measure: str) -> dict[str, Any]:
    return next(r for r in numbers["rows"] if r["module"] == module and r["measure"] == measure)


def _close(ours: float, theirs: float) -> bool:
    return abs(math.log(ours / theirs)) <= math.log(NOISE)


def test_it_says_plainly_that_no_gpu_was_found(bench: BenchRun) -> None:
    assert "No GPU was found" in bench.stdout
    assert "No GPU was found" in bench.report
    assert bench.numbers["gpu_found"] is False
    for row in bench.numbers["rows"]:
        assert row["gpu"] is None and row["gpu_note"], row  # a reason, never a blank or a zero
        assert row["speedup"] is None


def test_progress_table_and_plots(bench: BenchRun) -> None:
    for step in range(1, 7):
        assert f"[{step}/6]" in bench.stderr, bench.stderr
    assert "| module | measure | CPU | GPU | speed-up |" in bench.stdout
    for module in ("ASR", "LLM", "TTS", "lip-sync", "encode"):
        assert f"| {module} |" in bench.stdout
    assert "LLM not measured: llm.backend is none" in bench.stdout
    images = bench.report.split('src="data:image/png;base64,')[1:]
    assert len(images) == 4  # modules, lip-sync by batch, voice to answer, channels
    for image in images:
        assert base64.b64decode(image.split('"', 1)[0])[:8] == b"\x89PNG\r\n\x1a\n"
    encode = _row(bench.numbers, "encode", "H.264 per frame")["cpu"]
    assert f"{encode:.3f}" in bench.report or f"{encode:.2f}" in bench.report  # the same numbers as the JSON


def test_rendering_and_encoding_match_bench_render(bench: BenchRun) -> None:
    """bench/render.py, run as a user runs it, measures the same within the machine's noise."""
    command = [sys.executable, "bench/render.py", "--json", "--size", str(SIZE), "--seconds", "1",
               "--batches", *map(str, BATCHES)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    module = json.loads(done.stdout.strip().splitlines()[-1])
    for batch in BATCHES:
        ours = _row(bench.numbers, "lip-sync", f"frames/s at batch {batch}")["cpu"]
        theirs = module["sprite"][f"fps_batch_{batch}"]
        assert _close(ours, theirs), (batch, ours, theirs)
    ours, theirs = _row(bench.numbers, "encode", "H.264 per frame")["cpu"], module["encode_ms_per_frame"]
    assert _close(ours, theirs) or abs(ours - theirs) < 0.3, (ours, theirs)


def test_speech_was_really_measured(bench: BenchRun) -> None:
    asr = bench.numbers["details"]["asr"]
    heard = asr["heard"].lower()
    assert "shoes" in heard and "rain" in heard, heard  # Whisper transcribed the spoken question
    assert asr["audio_s_per_s"] == _row(bench.numbers, "ASR", "audio transcribed")["cpu"] > 1.0
    assert 0 < _row(bench.numbers, "TTS", "real-time factor")["cpu"] < 1.0  # Piper is faster than real time here


def test_channel_estimate_matches_bench_channels(bench: BenchRun) -> None:
    """The estimate's sample is a level of bench/channels.py: run as a user runs it, the same two talking
    channels cost the same CPU per channel within the machine's noise."""
    command = [sys.executable, "bench/channels.py", "--json", "--modes", "talking", "--start", "2",
               "--max-channels", "2", "--seconds", "4", "--warmup", "2"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    level = next(lv for lv in json.loads(done.stdout)["levels"]["talking"] if lv["channels"] == 2)
    ours = bench.numbers["channels"]["cpu"]
    assert _close(ours["cpu_per_channel"], level["cpu_cores"] / 2), (ours["cpu_per_channel"], level)


def test_estimates_follow_from_the_measured_costs(bench: BenchRun) -> None:
    """The channel counts are the sample's costs (and admission's rule) scaled to the limits; the total is
    the stages added up."""
    held = bench.numbers["channels"]["cpu"]
    cores, util = held["cores"], held["max_utilisation"]
    assert held["channels"] == math.floor(
        min(util * cores / held["cpu_per_channel"], util / held["render_per_channel"])
    )
    assert held["cpu_per_channel"] == pytest.approx(held["level"]["cpu_cores"] / 2)
    assert held["channels_with_voice"] <= held["channels"]
    admission = held["admission"]
    render_s, encode_s, fps = admission["render_ms"] / 1000, admission["encode_ms"] / 1000, admission["fps"]
    by_renderer = util / (fps * render_s)
    by_cores = util * cores / (fps * (render_s + encode_s))
    assert admission["channels"] == math.floor(min(by_renderer, by_cores) + 1e-9)
    stages = {s["name"]: s["ms"] for s in bench.numbers["end_to_end"]["stages"]}
    wait = stages.pop("end of speech confirmed (conversation.end_of_speech_ms)")
    airing = [v for k, v in stages.items() if k.startswith(("waiting", "lip-sync", "H.264"))]
    making = [v for k, v in stages.items() if not k.startswith(("waiting", "lip-sync", "H.264")) and v is not None]
    assert bench.numbers["end_to_end"]["ms"] == pytest.approx(max(wait, sum(making)) + sum(airing))
