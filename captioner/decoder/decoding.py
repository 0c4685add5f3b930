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
import os
from typing import Mapping

from captioner.errors import UsageError

MEMORY_SHARE = 0.5  # a decoding batch may take at most this share of the machine's memory


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

    def memory_bytes(self, batch_size: int, vocabulary: int, units: int, blocks: int) -> int:
        """About what one decoding batch holds at its peak: every row (image x beam) carries log-probabilities,
        candidates and their ranking over the vocabulary, and (transformer) keys and values for every step."""
        rows = int(batch_size) * self.beam_size
        per_row = 3 * int(vocabulary) + 2 * max(1, int(blocks)) * (self.max_length + 2) * int(units) + 8 * int(units)
        return 4 * rows * per_row

    def check_fits(self, batch_size: int, vocabulary: int, units: int, blocks: int) -> None:
        """Refuses a beam and batch whose decoding would not fit in this machine's memory (it would swap or hang)."""
        needed = self.memory_bytes(batch_size, vocabulary, units, blocks)
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if needed > MEMORY_SHARE * available:
            raise UsageError(f"caption.beam_size={self.beam_size} with caption.batch_size={batch_size} would need "
                             f"about {needed / 2 ** 30:.1f} GiB per decoding batch (vocabulary {vocabulary}, "
                             f"{self.max_length} words), more than half of this machine's {available / 2 ** 30:.0f} "
                             "GiB; lower --beam_size or --batch_size")

    def describe(self) -> str:
        """'greedy' or 'beam 3, length penalty 0.7', with the longest caption, for logs and eval.json."""
        search = "greedy" if self.beam_size == 1 else f"beam {self.beam_size}, length penalty {self.length_penalty}"
        return f"{search}, at most {self.max_length} words"
