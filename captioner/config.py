"""Experiment configs: a YAML file per target in `configs/`, overridable from the command line.

`--config` takes a path (`configs/flickr8k.yaml`, local or gs://) or the name of a
shipped config (`flickr8k`); `--set section.key=value` overrides one value, parsed
as YAML (`--set train.epochs=3`, `--set extract.spatial=false`).
"""
from __future__ import annotations

import argparse
import copy
import importlib.resources
from typing import Iterable, Mapping

import yaml

from captioner import storage

DEFAULT_CONFIG = "local"


def shipped_configs() -> list:
    return sorted(p.name[:-5] for p in importlib.resources.files("configs").iterdir()
                  if p.name.endswith(".yaml"))


def load(name_or_path: str, overrides: Iterable[str] = ()) -> dict:
    """Reads a config file or a shipped config by name, then applies `section.key=value` overrides."""
    if name_or_path in shipped_configs():
        text = importlib.resources.files("configs").joinpath(name_or_path + ".yaml").read_text()
    elif storage.exists(name_or_path):
        text = storage.read_text(name_or_path)
    else:
        raise FileNotFoundError(
            f"config {name_or_path!r} is neither a file nor a shipped config ({', '.join(shipped_configs())})")
    config = yaml.safe_load(text) or {}
    return apply_overrides(config, overrides)


def apply_overrides(config: Mapping, overrides: Iterable[str]) -> dict:
    result = copy.deepcopy(dict(config))
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"override {override!r} is not of the form section.key=value")
        section, _, name = key.partition(".")
        if section not in result or name not in result[section]:
            known = ", ".join(f"{s}.{k}" for s in result for k in result[s])
            raise ValueError(f"override {override!r} names an unknown key; known keys: {known}")
        result[section][name] = yaml.safe_load(value)
    return result


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The two config flags every entry point shares."""
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"config file (local or gs://) or shipped name: {', '.join(shipped_configs())} "
                             f"(default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, parsed as YAML; repeatable (e.g. --set train.epochs=3)")
