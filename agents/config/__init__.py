"""The YAML config: its schema (schema.py, with the chat and output sections beside it) and how a
file is read and checked (load.py). Everything else imports it from here."""

from agents.config.load import ConfigError, load_config, parse_channel, parse_config
from agents.config.schema import (
    AdmissionConfig,
    ASRConfig,
    AvatarConfig,
    ChannelConfig,
    ConversationConfig,
    IceServer,
    LipSyncConfig,
    LLMConfig,
    PersonaConfig,
    ServerConfig,
    StudioConfig,
    TTSConfig,
    VideoConfig,
    VoiceConfig,
)

__all__ = [
    "ASRConfig",
    "AdmissionConfig",
    "AvatarConfig",
    "ChannelConfig",
    "ConfigError",
    "ConversationConfig",
    "IceServer",
    "LLMConfig",
    "LipSyncConfig",
    "PersonaConfig",
    "ServerConfig",
    "StudioConfig",
    "TTSConfig",
    "VideoConfig",
    "VoiceConfig",
    "load_config",
    "parse_channel",
    "parse_config",
]
