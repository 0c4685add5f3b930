"""`python -m captioner.config [--config NAME_OR_PATH] [--set K=V ...]`: every key, its value, default and doc."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import List, Optional

from captioner.config import files, sections
from captioner.config.settings import ConfigError, kind_description, rule_of


def describe(config: sections.Config) -> str:
    lines = []
    for name, cls in sections.SECTIONS.items():
        lines.append(f"{name}:")
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            rule, value = rule_of(field), getattr(getattr(config, name), field.name)
            changed = "" if value == field.default else f"   (default {field.default!r})"
            lines.append(f"  {field.name}: {value!r}{changed}")
            lines.append(f"      {rule.doc}; {rule.describe(kind_description(hints[field.name]))}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m captioner.config", description=__doc__)
    files.add_config_flags(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(describe(files.load(args.config, args.overrides)))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
