"""`avatarcast bench`'s two outputs: a Markdown table for the terminal and a self-contained HTML report.

The HTML holds the same numbers as the table and plots of them drawn with matplotlib (Agg, no
display), embedded as PNG data so the file opens anywhere, offline, with nothing fetched.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from agents.bench.estimate import HOW
from agents.bench.results import BenchResults, Row

CPU_COLOUR, GPU_COLOUR = "#4c72b0", "#55a868"


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    digits = 3 if abs(value) < 1 else 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:.{digits}f}{unit}"


def _cell(row: Row, side: str) -> str:
    value, note = (row.cpu, row.cpu_note) if side == "cpu" else (row.gpu, row.gpu_note)
    return _num(value) if value is not None else (note or "–")


def table_rows(results: BenchResults) -> list[list[str]]:
    rows = []
    for row in results.rows:
        speedup = f"{row.speedup:.1f}×" if row.speedup is not None else "–"
        better = "higher is better" if row.higher_is_better else "lower is better"
        measure = f"{row.measure} ({row.unit}; {better})"
        rows.append([row.module, measure, _cell(row, "cpu"), _cell(row, "gpu"), speedup])
    return rows


def channel_lines(results: BenchResults, bold: str = "") -> list[str]:
    """The channel counts in words: the estimate, what admission would admit, the measured count."""
    lines = []
    for device, held in results.channels.items():
        voices = held.get("channels_with_voice")
        w, h = held["size"]
        lines.append(
            f"Talking channels this box holds ({device}, estimate): {bold}{held['channels']}{bold}"
            + (f" ({bold}{voices}{bold} with their voices synthesised here)" if voices is not None else "")
            + f", limited by the {held['limited_by']}: {held['cpu_per_channel']:.3f} cores and "
            f"{held['render_per_channel']:.1%} of the render thread per talking channel ({w}x{h}, "
            f"{held['cores']} cores, admission at {held['max_utilisation']:.0%})"
        )
        adm = held.get("admission")
        if adm is not None:
            voiced = (
                f" ({adm['channels_with_voice']} with voices)" if adm.get("channels_with_voice") is not None else ""
            )
            lines.append(
                f"Admission's rule on the isolated frame costs ({_num(adm['render_ms'], ' ms')} render + "
                f"{_num(adm['encode_ms'], ' ms')} encode per {adm['size'][0]}x{adm['size'][1]} frame at "
                f"{adm['fps']} fps) would admit "
                f"{adm['channels']}{voiced}"
            )
        if held.get("measured") is not None:
            lines.append(
                f"Measured (bench/channels.py's search, {w}x{h}): {bold}{held['measured']}{bold} talking channels "
                "hold 25 fps with no late frame"
            )
    return lines


def markdown(results: BenchResults) -> str:
    """The terminal's summary: the module table, the end-to-end estimate and the channel count."""
    lines = [f"## avatarcast bench: {results.machine.get('cpu', 'this machine')}", ""]
    if not results.gpu_found:
        lines += [f"**No GPU was found** ({results.gpu_note}): every figure is on the CPU.", ""]
    lines += ["| module | measure | CPU | GPU | speed-up |", "| --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(results)]
    lines.append("")
    total = _num(results.end_to_end_ms, " ms") if results.end_to_end_ms is not None else "not estimated"
    lines.append(f"End of a viewer's voice -> answer on air (estimate): **{total}**")
    for stage in results.stages:
        note = f" ({stage.note})" if stage.note else ""
        lines.append(f"- {stage.name}: {_num(stage.ms, ' ms')}{note}")
    lines.append("")
    lines += [f"{line}" for line in channel_lines(results, bold="**")]
    if results.channels_how:
        lines.append(f"_{results.channels_how}_")
    for module, why in results.skipped.items():
        lines.append(f"- {module} not measured: {why}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- plots
def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _module_figure(results: BenchResults) -> Any:
    """One small bar chart per measured figure: CPU beside GPU (absent: labelled why)."""
    from matplotlib.figure import Figure

    rows = results.rows
    cols = 3
    height = (len(rows) + cols - 1) // cols
    figure = Figure(figsize=(4.2 * cols, 2.8 * height))
    for i, row in enumerate(rows):
        axes = figure.add_subplot(height, cols, i + 1)
        values = [row.cpu or 0.0, row.gpu or 0.0]
        bars = axes.bar(["CPU", "GPU"], values, color=[CPU_COLOUR, GPU_COLOUR])
        for bar, value, note in zip(bars, (row.cpu, row.gpu), (row.cpu_note, row.gpu_note), strict=True):
            label = _num(value) if value is not None else (note or "–")
            axes.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                          fontsize=8, xytext=(0, 2), textcoords="offset points")  # fmt: skip
        if row.cpu is None and row.gpu is None:
            axes.set_ylim(0, 1)
            axes.set_yticks([])
        axes.set_title(f"{row.module}: {row.measure}", fontsize=9)
        axes.set_ylabel(row.unit, fontsize=8)
        axes.margins(y=0.25)
        axes.tick_params(labelsize=8)
    figure.tight_layout()
    return figure


def _lipsync_figure(results: BenchResults) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.2))
    axes = figure.add_subplot()
    for device, by_batch in results.lipsync_by_batch.items():
        batches = sorted(by_batch)
        colour = CPU_COLOUR if device == "cpu" else GPU_COLOUR
        axes.plot(batches, [by_batch[b] for b in batches], marker="o", color=colour, label=device.upper())
    axes.set_xscale("log", base=2)
    axes.set_xlabel("batch (frames per render call)")
    axes.set_ylabel("frames/s")
    axes.set_title("lip-sync rendering by batch")
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def _latency_figure(results: BenchResults) -> Any:
    """The estimate as a timeline: the answer being made (overlapping the end-of-speech wait), then airing."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.0))
    axes = figure.add_subplot()
    wait = next((s for s in results.stages if s.name.startswith("end of speech")), None)
    making = [s for s in results.stages if s is not wait and not s.name.startswith(("waiting", "lip-sync", "H.264"))]
    airing = [s for s in results.stages if s.name.startswith(("waiting", "lip-sync", "H.264"))]
    left = 0.0
    for stage in making:
        if stage.ms:
            axes.barh(1, stage.ms, left=left, label=stage.name)
            left += stage.ms
    if wait is not None and wait.ms:
        axes.barh(0, wait.ms, color="#cccccc", label=wait.name)
    start = max(left, wait.ms if wait is not None and wait.ms else 0.0)
    for stage in airing:
        if stage.ms:
            axes.barh(2, stage.ms, left=start, label=stage.name)
            start += stage.ms
    axes.set_yticks([0, 1, 2], ["waiting", "making", "airing"])
    axes.set_xlabel("ms after the end of the viewer's voice")
    axes.set_title(f"voice to answer, estimate: {_num(results.end_to_end_ms, ' ms')}")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


def _channels_figure(results: BenchResults) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.2))
    axes = figure.add_subplot()
    labels, counts, colours = [], [], []
    for device, held in results.channels.items():
        colour = CPU_COLOUR if device == "cpu" else GPU_COLOUR
        adm = held.get("admission") or {}
        for label, count in (
            ("estimate", held["channels"]),
            ("with voices", held.get("channels_with_voice")),
            ("admission\nwould admit", adm.get("channels")),
            ("measured", held.get("measured")),
        ):
            if count is not None:
                labels.append(f"{device.upper()}\n{label}")
                counts.append(count)
                colours.append(colour if label != "admission\nwould admit" else "#bbbbbb")
    axes.bar(labels, counts, color=colours)
    for i, count in enumerate(counts):
        axes.annotate(str(count), (i, count), ha="center", va="bottom")
    axes.set_ylabel("talking channels")
    axes.set_title("talking channels this box holds")
    axes.margins(y=0.2)
    return figure


def html_report(results: BenchResults, terminal: str) -> str:
    """The report: the same numbers as the terminal's table, and the plots."""
    import matplotlib

    matplotlib.use("Agg")
    figures = [("modules", _module_figure(results))]
    if results.lipsync_by_batch:
        figures.append(("lip-sync by batch", _lipsync_figure(results)))
    if results.stages:
        figures.append(("voice to answer", _latency_figure(results)))
    if results.channels:
        figures.append(("channels", _channels_figure(results)))
    images = "\n".join(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{_png(fig)}"></figure>'
                       for name, fig in figures)  # fmt: skip
    head = ["module", "measure", "CPU", "GPU", "speed-up"]
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in table_rows(results)
    )
    stages = "".join(
        f"<tr><td>{html.escape(s.name)}</td><td>{_num(s.ms, ' ms')}</td><td>{html.escape(s.note)}</td></tr>"
        for s in results.stages
    )
    machine = ", ".join(f"{k}: {html.escape(str(v))}" for k, v in results.machine.items())
    gpu = (
        f'<p class="nogpu"><b>No GPU was found</b> ({html.escape(results.gpu_note)}): every figure is on the CPU, '
        "and the GPU column says so.</p>"
        if not results.gpu_found
        else f"<p>GPU: {html.escape(results.gpu_note)}</p>"
    )
    channels = "".join(f"<li>{html.escape(line).replace('**', '')}</li>" for line in channel_lines(results))
    skipped = "".join(f"<li>{html.escape(m)} not measured: {html.escape(w)}</li>" for m, w in results.skipped.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>avatarcast bench</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 24px auto; padding: 0 16px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
th {{ background: #f2f2f2; text-align: left; }} .nogpu {{ background: #fff3cd; padding: 8px 12px; border-radius: 6px; }}
figure {{ margin: 12px 0; }} img {{ max-width: 100%; }} pre {{ background: #f6f6f6; padding: 8px; overflow: auto; }}
</style></head><body>
<h1>avatarcast bench</h1>
<p>{machine}<br>config: {html.escape(results.config)}; {results.seconds:.0f} s of measuring</p>
{gpu}
<h2>Modules</h2>
<table><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>{body}</table>
<h2>End of a viewer's voice to the answer on air: {_num(results.end_to_end_ms, " ms")} (estimate)</h2>
<table><tr><th>stage</th><th>time</th><th>note</th></tr>{stages}</table>
<p>{html.escape(HOW)}.</p>
<h2>Talking channels</h2>
<ul>{channels}</ul>
<p>{html.escape(results.channels_how)}</p>
{f"<ul>{skipped}</ul>" if skipped else ""}
<h2>Plots</h2>
{images}
<h2>As printed in the terminal</h2>
<pre>{html.escape(terminal)}</pre>
</body></html>
"""
