"""The YAML config: one studio, one or more channels. Validated before anything starts.

A bad file fails with every problem at once, each as `key.path: bad value — what is wrong;
fix: what to write`. Unknown keys are rejected (a typo must not silently fall back to a
default). Secrets are `env:NAME` / `file:PATH` references (agents/secrets.py).
Relative paths in the file are relative to the file.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from agents.chat.config import ChatConfig, IRCConfig, check_irc_channels
from agents.config_base import ConfigModel as _Model
from agents.config_errors import format_errors
from agents.output_config import ObsConfig, OutputsConfig
from agents.secrets import SecretRef
from models.avatars import PackError, resolve_pack
from stream.clock import SUPPORTED_FPS


class ConfigError(ValueError):
    """The config cannot be used; str() is the full, human-readable report."""


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


class LLMConfig(_Model):
    backend: Literal["vllm", "openai", "none"] = "vllm"
    """vllm: one in-process engine shared by every channel; openai: a remote vLLM (OpenAI API) server."""
    model: str = "builtin:smollm2"
    """vllm: builtin:smollm2 or a Hugging Face model folder; openai: the served model name."""
    base_url: str | None = None
    """openai: the server, e.g. http://10.0.0.5:8000"""
    api_key: SecretRef | None = None
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """float32: the portable CPU dtype, and here the fastest to a first token (bfloat16 measured
    slower: p50 3.0 s against 2.6 s end of speech to first audio); on a GPU, auto or bfloat16."""
    max_model_len: int = Field(2048, ge=256, le=131072)
    kv_cache_gib: float = Field(2.0, gt=0, le=512)

    @model_validator(mode="after")
    def _remote_needs_url(self) -> LLMConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend openai needs base_url; fix: base_url: http://HOST:PORT")
        return self


class ASRConfig(_Model):
    model: str = "builtin:tiny.en"
    """builtin:tiny.en (English), builtin:base (multilingual) or a CTranslate2 Whisper folder."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    language: str | None = None
    """None: English for tiny.en, detected for multilingual models; or a code like "de"."""


class LipSyncConfig(_Model):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_batch: int = Field(32, ge=1, le=256)
    kernel: Literal["auto", "torch", "opencv"] = "auto"
    """How drawn avatars render: auto is opencv on a CPU (uint8, frame by frame, ~6x cheaper there)
    and torch elsewhere (one batched tensor call for every channel's frames, the GPU kernel)."""
    cpu_threads: int | None = Field(None, ge=1, le=256)
    """Threads the CPU renderer uses; none: half the cores (the rest encode, listen and speak)."""

    @model_validator(mode="after")
    def _opencv_is_a_cpu_kernel(self) -> LipSyncConfig:
        if self.kernel == "opencv" and self.device == "cuda":
            raise ValueError("kernel opencv renders on the CPU; fix: kernel: torch (or auto) with device: cuda")
        return self


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


# ---------------------------------------------------------------------- loading
def _voice_problems(i: int, backend: str, written: str, model: str) -> list[str]:
    """What is wrong with a channel's voice files (nothing for the embedded voice)."""
    where = f"  channels[{i}].voice.model: {written!r}"
    if backend == "coqui":
        if not (Path(model) / "config.json").is_file() or not any(Path(model).glob("*.pth")):
            return [f"{where} — not a Coqui model folder; fix: the folder holding its config.json and .pth"]
        return []
    if model == "builtin:joe":
        return []
    if not Path(model).is_file():
        return [f"{where} — no such file; fix: the path of a Piper .onnx voice, or builtin:joe"]
    if not Path(model + ".json").is_file():
        return [f"{where} — its {Path(model).name}.json is missing; fix: put the voice's .onnx.json beside it"]
    return []


def _unrevealed(secret: SecretRef | None, where: str) -> list[str]:
    """[] when `secret` is absent or can be read, else the problem line."""
    try:
        if secret is not None:
            secret.reveal()
    except LookupError as exc:
        return [f"  {where}: {secret} — {exc}"]
    return []


def _resolve_paths(cfg: StudioConfig, base: Path) -> StudioConfig:
    """Make file paths absolute (relative to the config file) and check they exist."""
    problems: list[str] = []
    channels = []

    def absolute(value: str) -> str:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    for i, ch in enumerate(cfg.channels):
        pack = ch.avatar.pack if ch.avatar.pack.startswith("builtin:") else absolute(ch.avatar.pack)
        try:
            resolve_pack(pack)
        except PackError as exc:
            problems.append(f"  channels[{i}].avatar.pack: {ch.avatar.pack!r} — {exc}")
        model = ch.voice.model if ch.voice.model == "builtin:joe" else absolute(ch.voice.model)
        problems += _voice_problems(i, ch.voice.backend, ch.voice.model, model)
        persona: dict[str, str] = {}
        for key in ("knowledge", "answers"):
            value = getattr(ch.persona, key)
            if value is not None:
                persona[key] = absolute(value)
                if not Path(persona[key]).is_file():
                    problems.append(f"  channels[{i}].persona.{key}: {value!r} — no such file; fix: the path of a file")
        for j, target in enumerate(ch.outputs.rtmp):
            problems += _unrevealed(target.key, f"channels[{i}].outputs.rtmp[{j}].key")
        record = absolute(ch.outputs.record) if ch.outputs.record else None
        channels.append(
            ch.model_copy(
                update={
                    "avatar": ch.avatar.model_copy(update={"pack": pack}),
                    "voice": ch.voice.model_copy(update={"model": model}),
                    "persona": ch.persona.model_copy(update=persona),
                    "outputs": ch.outputs.model_copy(update={"record": record}),
                }
            )
        )
    problems += _unrevealed(cfg.llm.api_key, "llm.api_key")
    problems += _unrevealed(cfg.obs.password if cfg.obs else None, "obs.password")
    problems += _unrevealed(cfg.server.admin_token, "server.admin_token")
    for i, ice in enumerate(cfg.server.ice_servers):
        problems += _unrevealed(ice.credential, f"server.ice_servers[{i}].credential")
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg.model_copy(update={"channels": channels})


def parse_config(data: object, source: str = "config", base: Path | None = None) -> StudioConfig:
    try:
        cfg = StudioConfig.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(format_errors(source, exc, StudioConfig)) from None
    try:
        return _resolve_paths(cfg, base or Path.cwd())
    except ConfigError as exc:
        raise ConfigError(f"{source} is not a valid avatarcast config:\n{exc}") from None


def load_config(path: Path) -> StudioConfig:
    """Read, validate and resolve a config file; raises ConfigError with the full report."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (server:, lipsync:, channels:)")
    return parse_config(data, str(path), Path(path).resolve().parent)


def parse_channel(data: object, studio: StudioConfig, base: Path) -> ChannelConfig:
    """One more channel for a running studio (the admin API), checked exactly as if it were in the file.

    It is validated next to the channels already there, so a name or IRC channel used twice is
    caught too; error lines name its keys as `channel.<key>`.
    """
    if not isinstance(data, dict):
        raise ConfigError("a channel is a JSON object like one entry of channels: in the config file")
    whole = studio.model_dump(mode="json", exclude_none=True)
    index = len(whole["channels"])
    whole["channels"] = [*whole["channels"], data]
    try:
        return parse_config(whole, "the new channel", base).channels[index]
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(f"channels[{index}]", "channel")) from None
