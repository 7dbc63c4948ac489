"""What an LLM will cost in memory, from its config.json and the vLLM settings, before loading it.

A rough estimate, for preflight to say whether a model fits before minutes are spent loading it:

  weights   = parameters x bytes per parameter
              parameters (decoder-only transformer, from config.json):
                embeddings  vocab x hidden (twice unless tie_word_embeddings: the output head)
                per layer   attention  hidden x (heads + 2 x kv_heads) x head_dim  +  heads x head_dim x hidden
                            MLP        3 x hidden x intermediate (gated: gate, up, down; 2 x if not gated),
                                       x experts for a mixture of experts
              bytes per parameter: float32 4, bfloat16/float16 2, fp8 1, awq/gptq 4-bit ~0.53 (with the
              group scales); quantised checkpoints keep the embeddings in 16 bits
  KV cache  per token = 2 (K and V) x layers x kv_heads x head_dim x bytes of the cache dtype (2 for
              16-bit and quantised models, 4 for float32)
            a full sequence = per token x max_model_len; at full load max_num_seqs of them
            its budget: on a CPU kv_cache_gib; on a GPU gpu_memory_utilization x the card's memory,
              minus the weights (split over tensor_parallel_size cards) and ~1 GiB for activations
Real use differs by a few percent (norms, rotary tables, CUDA graphs, the allocator's blocks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 2**30
ACTIVATION_RESERVE_GIB = 1.0
"""What a GPU keeps outside weights and KV cache (activations, CUDA context): vLLM's profile run
measures it; ~1 GiB for the models this studio runs."""
DTYPE_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "half": 2.0, "float": 4.0}
QUANT_BYTES = {"fp8": 1.0, "awq": 0.53, "gptq": 0.53}


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    weight_bytes: float
    kv_bytes_per_token: float
    max_model_len: int
    max_num_seqs: int
    kv_budget_bytes: float | None
    """Bytes the KV cache gets (None: unknown, a GPU whose size is not known here)."""
    per_device_weight_bytes: float

    @property
    def full_sequence_bytes(self) -> float:
        return self.kv_bytes_per_token * self.max_model_len

    @property
    def kv_tokens(self) -> int | None:
        return int(self.kv_budget_bytes // self.kv_bytes_per_token) if self.kv_budget_bytes else None

    def describe(self) -> str:
        text = (
            f"~{self.parameters / 1e6:.0f}M parameters: weights {self.weight_bytes / GIB:.2f} GiB"
            f" ({self.per_device_weight_bytes / GIB:.2f} GiB per device);"
            f" KV cache {self.kv_bytes_per_token / 1024:.0f} KiB a token,"
            f" {self.full_sequence_bytes / GIB:.2f} GiB a full {self.max_model_len}-token sequence,"
            f" {self.max_num_seqs * self.full_sequence_bytes / GIB:.2f} GiB for {self.max_num_seqs} at once"
        )
        if self.kv_budget_bytes is not None and self.kv_budget_bytes > 0:
            text += f"; the cache holds {self.kv_tokens} tokens ({self.kv_budget_bytes / GIB:.2f} GiB)"
        elif self.kv_budget_bytes is not None:
            text += "; no room is left for the KV cache"
        return text

    def problem(self) -> str:
        """'' when it fits, else why not and the fix."""
        if self.kv_budget_bytes is None:
            return ""
        if self.kv_budget_bytes <= 0:
            return (
                f"the weights ({self.per_device_weight_bytes / GIB:.1f} GiB a device) leave no room for the KV cache; "
                "fix: raise gpu_memory_utilization, set quantization (awq, gptq, fp8) or add tensor_parallel_size"
            )
        if self.kv_budget_bytes < self.full_sequence_bytes:
            return (
                f"the KV cache ({self.kv_budget_bytes / GIB:.2f} GiB) cannot hold one {self.max_model_len}-token "
                "sequence; fix: lower max_model_len or give the cache more memory"
            )
        return ""


def estimate(
    config: dict[str, Any],
    *,
    dtype: str = "auto",
    quantization: str | None = None,
    max_model_len: int = 2048,
    max_num_seqs: int = 16,
    kv_cache_gib: float | None = None,
    gpu_memory_utilization: float = 0.5,
    tensor_parallel_size: int = 1,
    gpu_total_bytes: float | None = None,
) -> MemoryEstimate:
    """The estimate for a model whose config.json is `config` (see the module's formula).
    `kv_cache_gib`: a CPU engine's cache; else `gpu_total_bytes` (one card) sizes a GPU engine's."""
    cfg = config.get("text_config", config)  # multimodal configs nest the language model's
    hidden = int(cfg["hidden_size"])
    layers = int(cfg["num_hidden_layers"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    vocab = int(cfg["vocab_size"])
    intermediate = int(cfg.get("intermediate_size") or 4 * hidden)
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 1)
    gated = str(cfg.get("hidden_act", "silu")) in ("silu", "swiglu", "gelu_pytorch_tanh") or "llama" in str(
        cfg.get("model_type", "")
    )
    embeddings = vocab * hidden * (1 if cfg.get("tie_word_embeddings", False) else 2)
    attention = hidden * (heads + 2 * kv_heads) * head_dim + heads * head_dim * hidden
    mlp = (3 if gated else 2) * hidden * intermediate * experts
    body = layers * (attention + mlp)
    model_dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16") if dtype == "auto" else dtype
    dtype_bytes = DTYPE_BYTES.get(model_dtype, 2.0)
    if quantization in QUANT_BYTES:
        weight_bytes = body * QUANT_BYTES[quantization] + embeddings * 2.0
        cache_bytes = 2.0
    else:
        weight_bytes = (body + embeddings) * dtype_bytes
        cache_bytes = dtype_bytes
    kv_per_token = 2 * layers * kv_heads * head_dim * cache_bytes
    per_device = weight_bytes / tensor_parallel_size
    if kv_cache_gib is not None:
        budget: float | None = kv_cache_gib * GIB
    elif gpu_total_bytes is not None:
        usable = gpu_memory_utilization * gpu_total_bytes - per_device - ACTIVATION_RESERVE_GIB * GIB
        budget = usable * tensor_parallel_size  # each card holds its share of every token's KV
    else:
        budget = None
    return MemoryEstimate(
        body + embeddings, weight_bytes, kv_per_token, max_model_len, max_num_seqs, budget, per_device
    )


def estimate_for_folder(model_dir: Path, **settings: Any) -> MemoryEstimate:
    return estimate(json.loads((Path(model_dir) / "config.json").read_text()), **settings)
