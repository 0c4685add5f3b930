"""The typed config: one frozen dataclass per stage's section, loaded from YAML and `--set` overrides.

    sections.py   every key: default, one-line doc, check (the one place)
    settings.py   the machinery that checks a section and words its errors
    files.py      YAML files, shipped configs, `--set`, the shared --config/--set flags
"""
from captioner.config.files import DEFAULT_CONFIG, add_config_flags, apply_overrides, load, shipped_configs
from captioner.config.sections import (CaptionConfig, Config, ExtractConfig, TextConfig, TrainConfig, from_mapping,
                                       known_keys)
from captioner.config.settings import ConfigError

__all__ = ["CaptionConfig", "Config", "ConfigError", "DEFAULT_CONFIG", "ExtractConfig", "TextConfig", "TrainConfig",
           "add_config_flags", "apply_overrides", "from_mapping", "known_keys", "load", "shipped_configs"]
