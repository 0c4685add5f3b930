"""The gallery's rows: a bounded, deterministic sample of a caption set of any size.

`GallerySample(n)` keeps exactly min(n, rows) rows: a third the best and a third
the worst by sentence BLEU (among rows with references), the rest a fixed random
sample of the others (the smallest hashes of the ids). Three Top combiners run
side by side over the rows (no side input, so the rows are never held back while
one is computed), and no worker ever holds more than ~n rows.
"""
from __future__ import annotations

import hashlib
from typing import List

import apache_beam as beam


def _score(row) -> tuple:
    return (row["sentence_bleu"], row["image_id"])


def _hash(row) -> str:
    return hashlib.sha1(row["image_id"].encode("utf-8")).hexdigest()


def _merge(_, best: List[dict], worst: List[dict], sample: List[dict], size: int) -> List[dict]:
    """best, then worst, then the sample's rows that are neither, up to `size` rows in all."""
    chosen = {row["image_id"]: dict(row, gallery="best") for row in best}
    for row in worst:
        chosen.setdefault(row["image_id"], dict(row, gallery="worst"))
    others = [dict(row, gallery="sample") for row in sample if row["image_id"] not in chosen]
    return sorted(list(chosen.values()) + others[:max(0, size - len(chosen))], key=lambda row: row["image_id"])


class GallerySample(beam.PTransform):
    """Caption rows -> one list of at most `size` rows for report.html (each tagged best / worst / sample)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def expand(self, rows):
        size, third = self.size, self.size // 3
        scored = rows | "Scored" >> beam.Filter(lambda row: row["sentence_bleu"] is not None)
        best = scored | "Best" >> beam.combiners.Top.Largest(third, key=_score)
        worst = scored | "Worst" >> beam.combiners.Top.Smallest(third, key=_score)
        # `size` of the smallest hashes: after leaving out the (at most 2/3 size) best and worst, enough remain
        sample = rows | "Sample" >> beam.combiners.Top.Smallest(size, key=_hash)
        return (rows.pipeline
                | "Trigger" >> beam.Create([None])
                | "Merge" >> beam.Map(_merge, best=beam.pvalue.AsSingleton(best),
                                      worst=beam.pvalue.AsSingleton(worst), sample=beam.pvalue.AsSingleton(sample),
                                      size=size))
