"""How many workers a box gets, where frames are drawn, and which worker takes a new channel."""

from __future__ import annotations

from agents.front.front import headroom
from agents.front.placement import shared_renderer, worker_count
from tests.conftest import studio_config


def test_auto_gives_small_boxes_one_process_and_big_ones_a_worker_per_two_cores() -> None:
    assert worker_count("auto", cores=2) == 1 and worker_count("auto", cores=3) == 1
    assert worker_count("auto", cores=4) == 2 and worker_count("auto", cores=16) == 8
    assert worker_count(3, cores=2) == 3, "a number is taken as it is"


def test_the_gpu_service_draws_when_asked_or_on_a_gpu() -> None:
    assert not shared_renderer(studio_config([{"name": "a"}]))  # lipsync.device cpu, process auto
    cfg = studio_config([{"name": "a"}])
    shared = cfg.model_copy(update={"lipsync": cfg.lipsync.model_copy(update={"process": "shared"})})
    assert shared_renderer(shared)
    on_gpu = cfg.model_copy(update={"lipsync": cfg.lipsync.model_copy(update={"device": "cuda:1"})})
    assert shared_renderer(on_gpu), "auto: a GPU's batching across the whole box"


def test_a_new_channel_goes_where_the_tightest_budget_has_most_room() -> None:
    busy_cpu = {"cpu_used": 1.4, "cpu_limit": 1.6, "render_used": 0.1, "render_limit": 0.8}
    busy_render = {"cpu_used": 0.2, "cpu_limit": 1.6, "render_used": 0.75, "render_limit": 0.8}
    idle = {"cpu_used": 0.4, "cpu_limit": 1.6, "render_used": 0.2, "render_limit": 0.8}
    ranked = sorted({"a": busy_cpu, "b": busy_render, "c": idle}.items(), key=lambda kv: -headroom(kv[1]))
    assert [name for name, _ in ranked] == ["c", "a", "b"]
    assert headroom({**busy_render, "shared_renderer": True}) > headroom(busy_render), (
        "a renderer in the GPU service is not this worker's budget"
    )
