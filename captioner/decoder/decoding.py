"""How captions are decoded: one value made from the `caption` config section, passed whole.

The caption job's model handler, `captioner.bundle.Captioner`, the trainer's evaluation and its
self-critical selection all decode with a `Decoding`, so the captions a job scores on dev are decoded
exactly as the caption job decodes them. Nothing below has defaults of its own: a `Decoding` comes from a
config (`Decoding.from_config(config.caption)`), and a loaded bundle decodes, unless told otherwise, with the
`caption` section it was trained with (bundle.json's config).

`max_length` at caption time is `caption.max_length` (words, END not counted); `train.max_length` only
truncates the training captions.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class Decoding:
    """Beam width (1 = greedy), GNMT length penalty alpha (0 = none), longest caption in words."""
    beam_size: int
    length_penalty: float
    max_length: int

    def __post_init__(self):
        if int(self.beam_size) < 1 or int(self.max_length) < 1:
            raise ValueError(f"decoding needs beam_size >= 1 and max_length >= 1, got {self}")
        if not math.isfinite(float(self.length_penalty)) or float(self.length_penalty) < 0:
            raise ValueError(f"decoding needs a finite length_penalty >= 0, got {self.length_penalty}")
        object.__setattr__(self, "beam_size", int(self.beam_size))
        object.__setattr__(self, "length_penalty", float(self.length_penalty))
        object.__setattr__(self, "max_length", int(self.max_length))

    @classmethod
    def from_config(cls, caption_cfg) -> "Decoding":
        """From a `caption` config section (config.CaptionConfig, or its dict as bundle.json records it)."""
        get = caption_cfg.get if isinstance(caption_cfg, Mapping) else lambda key: getattr(caption_cfg, key)
        return cls(get("beam_size"), get("length_penalty"), get("max_length"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """'greedy' or 'beam 3, length penalty 0.7', with the longest caption, for logs and eval.json."""
        search = "greedy" if self.beam_size == 1 else f"beam {self.beam_size}, length penalty {self.length_penalty}"
        return f"{search}, at most {self.max_length} words"
