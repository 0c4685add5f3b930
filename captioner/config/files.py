"""Config files and command-line overrides: a YAML file per target in `configs/`, `--set section.key=value`.

`--config` takes a path (`configs/flickr8k.yaml`, local or gs://) or the name of a
shipped config (`flickr8k`); `--set section.key=value` overrides one value, parsed
as YAML (`--set train.epochs=3`, `--set extract.spatial=false`). A file holds only
what differs from the defaults in `sections.py`.
"""
from __future__ import annotations

import argparse
import importlib.resources
import re
from typing import Iterable

import yaml

from captioner import storage
from captioner.config.sections import Config, from_mapping, key_suggestion, known_keys
from captioner.config.settings import ConfigError, suggestion

DEFAULT_CONFIG = "local"


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, reading `5e-05` and `1e3` as numbers (YAML 1.1 wants `5.0e-05`; users do not)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."))


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass: plain data only


def shipped_configs() -> list:
    return sorted(p.name[:-5] for p in importlib.resources.files("configs").iterdir()
                  if p.name.endswith(".yaml"))


def read_file(name_or_path: str) -> Config:
    """A shipped config by name, or a YAML file (local or gs://), checked key by key."""
    if name_or_path in shipped_configs():
        text = importlib.resources.files("configs").joinpath(name_or_path + ".yaml").read_text()
    elif storage.exists(name_or_path):
        text = storage.read_text(name_or_path)
    else:
        raise ConfigError(f"config {name_or_path!r} is neither a file nor a shipped config "
                          f"({', '.join(shipped_configs())}){suggestion(name_or_path, shipped_configs())}")
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config {name_or_path} is not valid YAML: {error}") from None
    return from_mapping(data, f"config {name_or_path}")


def apply_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """Applies `section.key=value` overrides in order; each value is parsed as YAML and checked."""
    keys = known_keys()
    for override in overrides:
        key, sep, value = override.partition("=")
        key = key.strip()
        if not sep or "." not in key:
            bare = [k for k in keys if k.endswith("." + key)]
            hint = f"; did you mean {bare[0]}={value}?" if bare else ""
            raise ConfigError(f"--set {override!r} is not of the form section.key=value{hint}")
        if key not in keys:
            raise ConfigError(f"--set {override!r} names an unknown key {key}{key_suggestion(key)}")
        section, _, name = key.partition(".")
        try:
            parsed = parse_yaml(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {override!r}: the value is not valid YAML: {error}") from None
        config = config.with_values(f"--set {override}", **{section: {name: parsed}})
    return config


def load(name_or_path: str = DEFAULT_CONFIG, overrides: Iterable[str] = ()) -> Config:
    """Reads a config file or a shipped config by name, then applies `section.key=value` overrides."""
    return apply_overrides(read_file(name_or_path), overrides)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The two config flags every entry point shares."""
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"config file (local or gs://) or shipped name: {', '.join(shipped_configs())} "
                             f"(default: %(default)s); `python -m captioner.config` lists every key")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, parsed as YAML; repeatable (e.g. --set train.epochs=3)")
