"""The machinery of the typed config: one `setting(...)` per key, holding its default, its doc and its check.

A config section is a frozen dataclass whose fields are made with `setting`; its
`__post_init__` calls `check_section`, so a section can never hold a value of the
wrong type or out of range, however it was made (YAML file, `--set`, a test, a flag).
Errors name the key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any, Iterable, Optional, Sequence

from captioner.errors import UsageError

_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


class ConfigError(UsageError, ValueError):
    """A config file, a `--set` override or a value that the typed config refuses; the message says which."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """What one key accepts besides its type."""
    doc: str
    choices: Optional[Sequence[Any]] = None
    minimum: Optional[float] = None   # inclusive
    above: Optional[float] = None     # exclusive
    below: Optional[float] = None     # exclusive

    def describe(self, kind: str) -> str:
        limits = [f">= {self.minimum:g}" if self.minimum is not None else "",
                  f"> {self.above:g}" if self.above is not None else "",
                  f"< {self.below:g}" if self.below is not None else ""]
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        bounds = " and ".join(limit for limit in limits if limit)
        return f"{kind} {bounds}" if bounds else kind


def setting(default: Any, doc: str, **rule: Any) -> Any:
    """A config key: its default, a one-line doc, and its checks (choices, minimum, above, below)."""
    return dataclasses.field(default=default, metadata={"rule": Rule(doc, **rule)})


def rule_of(field: dataclasses.Field) -> Rule:
    return field.metadata["rule"]


def _kind(annotation) -> tuple:
    """(base type, whether None is allowed) of a field annotation such as `int` or `Optional[str]`."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return annotation, False


def kind_description(annotation) -> str:
    base, optional = _kind(annotation)
    return ("null or " if optional else "") + _KINDS[base]


def _checked(key: str, value: Any, annotation, rule: Rule) -> Any:
    """`value` as the field's type, or ConfigError naming the key, the value and what is allowed."""
    base, optional = _kind(annotation)
    allowed = rule.describe(kind_description(annotation))

    def refuse() -> ConfigError:
        return ConfigError(f"{key}={value!r} is not allowed: {key} must be {allowed} ({rule.doc})")

    if value is None:
        if optional:
            return None
        raise refuse()
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise refuse()
    if base is float and not math.isfinite(value):  # nan passes every comparison below, inf most of them
        raise ConfigError(f"{key}={value!r} is not allowed: {key} must be a finite number ({rule.doc})")
    if rule.choices is not None and value not in rule.choices:
        raise refuse()
    if ((rule.minimum is not None and value < rule.minimum) or (rule.above is not None and value <= rule.above)
            or (rule.below is not None and value >= rule.below)):
        raise refuse()
    return value


def check_section(section: Any, name: str) -> None:
    """Checks (and normalises, e.g. 1 -> 1.0 for a float key) every field of a frozen section dataclass."""
    hints = typing.get_type_hints(type(section))
    for field in dataclasses.fields(section):
        value = _checked(f"{name}.{field.name}", getattr(section, field.name), hints[field.name], rule_of(field))
        object.__setattr__(section, field.name, value)


def suggestion(word: str, known: Iterable[str]) -> str:
    """'; did you mean X?' for the closest known word, or '' when none is close."""
    match = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""
