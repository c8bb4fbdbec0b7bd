"""The config file: one YAML document, one validated model."""

from chanctl.config.load import SAMPLE_SECRET, load_config, load_config_text
from chanctl.config.model import AuthConfig, Config, EventConfig, ServerConfig, TopicConfig

__all__ = [
    "SAMPLE_SECRET",
    "AuthConfig",
    "Config",
    "EventConfig",
    "ServerConfig",
    "TopicConfig",
    "load_config",
    "load_config_text",
]
