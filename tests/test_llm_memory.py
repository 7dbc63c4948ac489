"""What preflight says an LLM will take in memory, from its config.json and the vLLM settings."""

from __future__ import annotations

import pytest

from models.defaults import default_llm_dir
from models.llm_memory import GIB, estimate, estimate_for_folder

LLAMA_7B = {  # Llama-2-7B's config.json (the shape that matters)
    "model_type": "llama",
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "intermediate_size": 11008,
    "vocab_size": 32000,
    "torch_dtype": "float16",
}


def test_a_7b_model_needs_quantisation_to_fit_half_of_a_24_gib_card() -> None:
    settings = {"gpu_total_bytes": 24 * GIB, "gpu_memory_utilization": 0.5, "max_model_len": 4096}
    plain = estimate(LLAMA_7B, **settings)
    assert 6.6e9 < plain.parameters < 6.8e9  # 6.74 B
    assert 12.4 < plain.weight_bytes / GIB < 12.7  # 2 bytes each
    assert plain.kv_bytes_per_token == 2 * 32 * 32 * 128 * 2  # K and V, every layer, 16-bit: 512 KiB
    assert "no room" in plain.problem() and "quantization" in plain.problem()
    awq = estimate(LLAMA_7B, quantization="awq", **settings)
    assert 3.4 < awq.weight_bytes / GIB < 4.0 and not awq.problem()
    assert awq.kv_tokens is not None and awq.kv_tokens > 4096
    split = estimate(LLAMA_7B, tensor_parallel_size=2, **settings)
    assert split.per_device_weight_bytes == pytest.approx(plain.weight_bytes / 2) and not split.problem()


def test_the_embedded_model_on_a_cpu_is_measured_from_its_folder() -> None:
    cpu = estimate_for_folder(default_llm_dir(), dtype="float32", kv_cache_gib=2, max_model_len=2048)
    assert 130e6 < cpu.parameters < 140e6  # SmolLM2-135M, tied embeddings
    assert 0.45 < cpu.weight_bytes / GIB < 0.55  # float32
    assert cpu.kv_tokens is not None and cpu.kv_tokens > 40_000 and not cpu.problem()
    assert "135M" in cpu.describe() or "134M" in cpu.describe()
    tiny_cache = estimate_for_folder(default_llm_dir(), dtype="float32", kv_cache_gib=0.01, max_model_len=2048)
    assert "max_model_len" in tiny_cache.problem()
