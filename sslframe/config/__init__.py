"""Config composition (Hydra) and validation against the typed schemas."""

from sslframe.config.loader import CONFIG_DIR, compose_config, config_hash, save_config

__all__ = ["CONFIG_DIR", "compose_config", "config_hash", "save_config"]
