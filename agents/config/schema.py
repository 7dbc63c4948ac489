"""The YAML config's schema: one studio, one or more channels (pydantic models, checked field by field).

Every field says what it is for and what to write; load.py reads a file into these models.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from agents.config.base import ConfigModel as _Model
from agents.config.chat import ChatConfig, IRCConfig, check_irc_channels
from agents.config.outputs import ObsConfig, OutputsConfig
from agents.config.secrets import SecretRef
from stream.clock import SUPPORTED_FPS


class IceServer(_Model):
    """A STUN/TURN server the server-side peer uses to gather candidates."""

    urls: list[str] = Field(min_length=1)
    username: str | None = None
    credential: SecretRef | None = None

    @field_validator("urls")
    @classmethod
    def _schemes(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not re.match(r"^(stun|stuns|turn|turns):", url):
                raise ValueError(f"{url!r} is not an ICE server URL; fix: start it with stun:, turn: or turns:")
        return urls


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    admin_token: SecretRef | None = None
    """Bearer token of the admin API (/admin/...): env:NAME or file:PATH; none: the admin API is off."""
    ice_servers: list[IceServer] = []
    candidate_addresses: Literal["auto"] | list[str] = "auto"
    """ICE host candidates the server offers. auto: 127.0.0.1 when `host` is loopback, else all."""
    trusted_origins: list[str] = []
    """Origins besides the studio's own that may change state (chat, interrupt, offer, admin), e.g. an
    OBS dock's page: ["http://localhost:8000"]. Any other web page's requests are refused (403)."""
    offers_per_minute: int = Field(30, ge=1, le=100000)
    """WebRTC offers one client address may make per minute (a burst of a fifth of it at once); 429 past it."""
    chats_per_minute: int = Field(30, ge=1, le=100000)
    """Chat messages and stop presses one client address may post per minute (the same burst); 429 past it."""
    max_peers_per_client: int = Field(8, ge=1, le=10000)
    """Open WebRTC viewers one client address may hold across the channels of a worker."""
    max_peers: int = Field(500, ge=1, le=100000)
    """Open WebRTC viewers a worker holds in all."""
    workers: Literal["auto"] | Annotated[int, Field(ge=1, le=64)] = 1
    """Media worker processes the channels are spread over. 1: one process (small machines, tests);
    auto: one per two cores from 4 cores up (each worker's event loop and encoders keep ~2 busy);
    or a number. The front keeps the one public port and routes each channel to its worker."""

    @field_validator("trusted_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin; fix: scheme and host, e.g. http://localhost:8000")
        return [o.lower() for o in origins]

    @field_validator("candidate_addresses")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        if isinstance(value, list):
            for a in value:
                try:
                    ipaddress.ip_address(a)
                except ValueError:
                    raise ValueError(f"{a!r} is not an IP address; fix: list IP addresses or write auto") from None
        return value

    def host_candidates(self) -> list[str] | None:
        if self.candidate_addresses != "auto":
            return list(self.candidate_addresses)
        loopback = self.host in ("localhost", "127.0.0.1", "::1")
        return ["127.0.0.1"] if loopback else None


class AvatarConfig(_Model):
    pack: str = "builtin:nova"
    """builtin:<name>, or the directory written by `avatarcast avatar prepare PHOTO -o DIR`."""
    background: Literal["pack", "green", "blue"] = "pack"
    """pack: the pack's own; green/blue: a flat chroma colour (drawn packs), keyed out in OBS."""


class VoiceConfig(_Model):
    backend: Literal["piper", "coqui"] = "piper"
    """piper: embedded and any Piper voice (CPU); coqui: a Coqui TTS model folder (GPU hosts)."""
    model: str = "builtin:joe"
    """piper: builtin:joe (the embedded en_US voice) or a .onnx path; coqui: a folder with config.json + .pth."""
    speaker: int | None = Field(None, ge=0)
    length_scale: float = Field(1.0, ge=0.5, le=2.0)
    """Speaking pace (piper): above 1 slower, below 1 faster."""
    language: str | None = Field(None, pattern=r"^[a-z]{2,3}(-[a-z]{2,4})?$")
    """coqui: the language of a multilingual model (XTTS), e.g. en."""

    @model_validator(mode="after")
    def _coqui_needs_a_folder(self) -> VoiceConfig:
        if self.backend == "coqui" and self.model == "builtin:joe":
            raise ValueError("backend coqui has no embedded voice; fix: model: the folder of a Coqui model")
        return self


class VideoConfig(_Model):
    width: int = Field(512, ge=128, le=1920, multiple_of=2)
    height: int = Field(512, ge=128, le=1920, multiple_of=2)
    fps: int = 25
    bitrate_kbps: int = Field(1000, ge=100, le=20000)
    keyframe_interval_s: float = Field(2.0, ge=0.5, le=10.0)

    @field_validator("fps")
    @classmethod
    def _fps(cls, fps: int) -> int:
        if fps not in SUPPORTED_FPS:
            raise ValueError(
                f"a frame must be a whole number of 48 kHz audio samples; fix: use one of "
                f"{', '.join(map(str, SUPPORTED_FPS))} (25 is the default)"
            )
        return fps


class PersonaConfig(_Model):
    name: str = "Nova"
    system_prompt: str = "You are {name}, a friendly host on a live stream. You talk to viewers."
    style: str = "Warm and upbeat. Short, plain spoken sentences, no lists or emoji."
    max_answer_words: int = Field(40, ge=5, le=1000)
    knowledge: str | None = None
    """A facts file (one fact per line, # comments): products, prices, schedule. Only the facts
    that match a question go into its prompt, and spoken numbers are checked against them."""
    answers: str | None = None
    """A YAML list of frequent questions and their answers ({q: ..., a: ...}): said without the LLM."""
    memory_tokens: int = Field(160, ge=0, le=8000)
    """Earlier exchanges kept in the prompt. Small on purpose: on a CPU every prompt token adds to the
    time before the first word (a 700-token prompt cost ~1.5 s of prefill here)."""
    grounding: Literal["strict", "guided", "free"] = "strict"
    """How answers stay true to the facts. strict: retrieval and the model pick the fact lines that answer,
    which are said in their own words (the embedded 135M model: it measured best, README "Answers and
    grounding"); guided: the model phrases the picked lines, and a sentence with a number, name or policy
    not in them is never aired (falls back to strict); free: the model answers from the retrieved facts,
    numbers checked (a big model)."""
    selection: Literal["retrieval", "model"] = "retrieval"
    """Who picks the fact lines that answer (strict and guided). retrieval: the best-ranked lines; model: the
    LLM picks among retrieval's best three or says none, constrained to that by vLLM's structured outputs
    (a bigger model; the embedded 135M one picked worse than retrieval, README "Answers and grounding")."""
    aliases: dict[str, list[str]] = {}
    """What viewers call the facts' products, games or dishes, e.g. {"Trail Pro": ["hiking boots", "hikers"]}:
    questions that use these names are matched to the facts about it."""

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, aliases: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, others in aliases.items():
            if not name.strip() or any(not a.strip() for a in others):
                raise ValueError("an alias is empty; fix: write {Name in the facts: [what viewers call it, ...]}")
        return aliases


class ConversationConfig(_Model):
    chat: Literal["ask", "say"] = "ask"
    """What the page's chat box does by default: ask (the avatar answers) or say (it speaks the text)."""
    end_of_speech_ms: int = Field(500, ge=200, le=3000)
    """Silence after a viewer's words that ends the question: shorter answers sooner, longer cuts
    fewer viewers off at a pause."""
    interrupt_after_ms: int = Field(300, ge=100, le=3000)
    """Viewer speech over the avatar for this long stops the answer (barge-in); shorter noise does not."""
    first_token_timeout_s: float = Field(3.0, ge=0.2, le=30)
    """No first LLM token by then: say the cached or canned answer instead."""
    canned_answer: str = "That's a great question! Give me a moment to think about it."
    unknown_answer: str = "Hmm, I don't know that one, sorry! Ask me something else."
    """Said when the facts do not answer a question, and to attempts to instruct the avatar: an honest
    "I don't know", in the persona's voice. Pre-rendered at start, so it airs at once."""
    filler_line: str = "Hmm, one moment please."
    didnt_hear_line: str = "Sorry, could you say that again?"


class ChannelConfig(_Model):
    name: str
    """Used in URLs (/c/<name>): lower-case letters, digits, - and _."""
    title: str = ""
    avatar: AvatarConfig = AvatarConfig()
    voice: VoiceConfig = VoiceConfig()
    video: VideoConfig = VideoConfig()
    persona: PersonaConfig = PersonaConfig()
    conversation: ConversationConfig = ConversationConfig()
    greeting: str | None = Field(None, max_length=500)
    """Said once when the channel goes on air."""
    outputs: OutputsConfig = OutputsConfig()
    chat: ChatConfig | None = None
    """Live chat (IRC/Twitch and the page's chat box): commands, moderation, pacing; none: plain chat box."""
    max_chat_chars: int = Field(300, ge=10, le=2000)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", name):
            raise ValueError("a channel name appears in URLs; fix: use 1-32 lower-case letters, digits, - or _")
        return name

    @property
    def display_title(self) -> str:
        return self.title or self.name


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", value):
        raise ValueError(f"{value!r} is not a device; fix: auto, cpu, cuda or cuda:N (N: the GPU's index)")
    return value


Device = Annotated[str, AfterValidator(_device)]
"""Where a service runs: auto (a GPU if torch sees one), cpu, cuda (the first GPU) or cuda:N."""


class LLMConfig(_Model):
    backend: Literal["vllm", "openai", "none"] = "vllm"
    """vllm: one engine shared by every channel (in the process, or vLLM's own server when there are
    several workers); openai: a remote vLLM (OpenAI API) server."""
    model: str = "builtin:smollm2"
    """vllm: builtin:smollm2 or a Hugging Face model folder; openai: the served model name."""
    base_url: str | None = None
    """openai: the server, e.g. http://10.0.0.5:8000"""
    api_key: SecretRef | None = None
    device: Device = "auto"
    """vllm: where the engine runs; cuda:N puts it on GPU N (e.g. the LLM on cuda:0, lip-sync on cuda:1)."""
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """float32: the portable CPU dtype, and here the fastest to a first token (bfloat16 measured
    slower: p50 3.0 s against 2.6 s end of speech to first audio); on a GPU, auto or bfloat16."""
    max_model_len: int = Field(2048, ge=256, le=131072)
    kv_cache_gib: float = Field(2.0, gt=0, le=512)
    """vllm on a CPU: memory for the KV cache (on a GPU, gpu_memory_utilization decides)."""
    max_num_seqs: int = Field(16, ge=1, le=1024)
    """Requests the engine batches at once: one per talking channel is plenty."""
    quantization: Literal["awq", "gptq", "fp8"] | None = None
    """GPU hosts: a quantised model (AWQ/GPTQ checkpoints, or FP8 on Hopper), e.g. a 7B model on a small card."""
    gpu_memory_utilization: float = Field(0.5, gt=0.05, le=0.98)
    """Share of the GPU's memory vLLM takes (weights + KV cache); the rest is lip-sync's and TTS's."""
    tensor_parallel_size: int = Field(1, ge=1, le=16)
    """GPUs one model is split over (vLLM's server only)."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of prompts' shared beginnings (system prompt, facts): a shorter first token."""

    @model_validator(mode="after")
    def _remote_needs_url(self) -> LLMConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend openai needs base_url; fix: base_url: http://HOST:PORT")
        return self

    def device_env(self) -> dict[str, str]:
        """The environment that puts vLLM's server on `device` (cuda:N -> CUDA_VISIBLE_DEVICES=N)."""
        if self.device.startswith("cuda:"):
            first = int(self.device.split(":")[1])
            return {"CUDA_VISIBLE_DEVICES": ",".join(str(first + i) for i in range(self.tensor_parallel_size))}
        return {"CUDA_VISIBLE_DEVICES": ""} if self.device == "cpu" else {}

    def server_args(self, on_gpu: bool) -> list[str]:
        """The settings above as vLLM server flags, for a GPU or for the CPU (where the KV cache is
        sized in bytes: vLLM's CPU backend reads gpu_memory_utilization as a share of all RAM)."""
        args = ["--max-num-seqs", str(self.max_num_seqs), "--enforce-eager"]
        args += ["--enable-prefix-caching"] if self.enable_prefix_caching else ["--no-enable-prefix-caching"]
        if self.quantization is not None:
            args += ["--quantization", self.quantization]
        if on_gpu:
            args += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
            args += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        else:
            args += ["--kv-cache-memory-bytes", str(int(self.kv_cache_gib * 2**30))]
        return args


class ASRConfig(_Model):
    model: str = "builtin:tiny.en"
    """builtin:tiny.en (English), builtin:base (multilingual) or a CTranslate2 Whisper folder."""
    device: Device = "auto"
    language: str | None = None
    """None: English for tiny.en, detected for multilingual models; or a code like "de"."""
    process: Literal["auto", "shared", "worker"] = "auto"
    """With several workers: shared runs one Whisper in the GPU service for every worker (urgent finals
    first); worker loads one in each; auto: shared when it runs on a GPU and the GPU service is up."""


class LipSyncConfig(_Model):
    device: Device = "auto"
    max_batch: int = Field(32, ge=1, le=256)
    kernel: Literal["auto", "torch", "opencv"] = "auto"
    """How drawn avatars render: auto is opencv on a CPU (uint8, frame by frame, ~6x cheaper there)
    and torch elsewhere (one batched tensor call for every channel's frames, the GPU kernel)."""
    cpu_threads: int | None = Field(None, ge=1, le=256)
    """Threads the CPU renderer uses; none: half the cores (the rest encode, listen and speak)."""
    model: Literal["none", "wav2lip", "wav2lip256"] = "none"
    """Neural lip-sync for photo and video packs (drawn packs keep their own): wav2lip (96x96 faces) or
    wav2lip256 (LiveTalking's 256x256 variant), from `checkpoint`; none: photos are warped."""
    checkpoint: str | None = None
    """The model's weights: wav2lip.pth / wav2lip_gan.pth (or the 256 variant's file); never downloaded."""
    process: Literal["auto", "shared", "worker"] = "auto"
    """Where frames are drawn when there are several workers. shared: one GPU service process draws
    every worker's channels in the same batches (the GPU's batching across the whole box); worker:
    each worker draws its own (CPU boxes: rendering grows with the cores); auto: shared on a GPU."""

    @model_validator(mode="after")
    def _model_needs_weights(self) -> LipSyncConfig:
        if self.model != "none" and not self.checkpoint:
            raise ValueError(f"model {self.model} needs its weights; fix: checkpoint: PATH of {self.model}.pth")
        return self

    @model_validator(mode="after")
    def _opencv_is_a_cpu_kernel(self) -> LipSyncConfig:
        if self.kernel == "opencv" and self.device.startswith("cuda"):
            raise ValueError("kernel opencv renders on the CPU; fix: kernel: torch (or auto) with device: cuda")
        return self


class TTSConfig(_Model):
    process: Literal["auto", "shared", "worker"] = "auto"
    """With a GPU service (several workers): shared speaks every channel's voice there, each voice
    loaded once for every worker; worker loads voices in each worker; auto: shared for the voices that
    run on a GPU (coqui), Piper (CPU) in each worker."""

    def in_service(self, backend: str) -> bool:
        """Whether a voice of `backend` speaks in the GPU service, when that speaks for the workers at all."""
        return self.process == "shared" or (self.process == "auto" and backend == "coqui")


class AdmissionConfig(_Model):
    """How full the box may get before a new channel is refused (each channel is measured when prepared)."""

    max_utilisation: float = Field(0.8, gt=0, le=1.0)
    """Share of the renderer thread, and of all cores, that channels may use; the rest absorbs bursts."""
    max_loop_lag_ms: float = Field(50.0, gt=0, le=5000)
    """The event loop running later than this (p95) means the box is full: no new channel."""


class StudioConfig(_Model):
    server: ServerConfig = ServerConfig()
    admission: AdmissionConfig = AdmissionConfig()
    lipsync: LipSyncConfig = LipSyncConfig()
    llm: LLMConfig = LLMConfig()
    asr: ASRConfig = ASRConfig()
    tts: TTSConfig = TTSConfig()
    obs: ObsConfig | None = None
    irc: IRCConfig | None = None
    """The studio's one IRC connection (Twitch chat); channels name their IRC channel in chat.irc_channel."""
    channels: list[ChannelConfig]

    @field_validator("channels")
    @classmethod
    def _channels(cls, channels: list[ChannelConfig]) -> list[ChannelConfig]:
        if not channels:
            raise ValueError("no channels; fix: add at least one (see configs/demo.yaml)")
        names = [ch.name for ch in channels]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"channel name {name!r} is used twice; fix: give every channel its own name")
        return channels

    @model_validator(mode="after")
    def _irc_channels(self) -> StudioConfig:
        check_irc_channels(self.channels, {"irc": self.irc})
        return self

    def channel(self, name: str) -> ChannelConfig:
        for ch in self.channels:
            if ch.name == name:
                return ch
        raise KeyError(f"no channel {name!r}; channels: {', '.join(c.name for c in self.channels)}")
