"""Corpus BLEU as a Beam CombineFn.

Corpus BLEU is not a mean of sentence scores, but its statistics (clipped
n-gram matches, n-gram counts, lengths) are plain sums. So each worker sums
`captioner.metrics.bleu.sentence_stats` over its bundle, Beam merges the partial sums
in any grouping and order, and the score is combined once at the end: the
result is exactly nltk's `corpus_bleu` over the whole PCollection.
"""
from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

import apache_beam as beam

from captioner.metrics import bleu

# Accumulator: the summed sentence statistics, then the number of sentences.
Accumulator = List[int]
_STATS_LEN = 2 * bleu.MAX_ORDER + 2


class CorpusBleuFn(beam.CombineFn):
    """(references, hypothesis) token lists -> {"bleu": [b1..b4], "sentences", lengths}."""

    def create_accumulator(self) -> Accumulator:
        return [0] * (_STATS_LEN + 1)

    def add_input(self, accumulator: Accumulator, element: Tuple[Sequence[Sequence[str]], Sequence[str]]) -> Accumulator:
        references, hypothesis = element
        stats = bleu.sentence_stats(references, hypothesis)
        for i, value in enumerate(stats):
            accumulator[i] += value
        accumulator[_STATS_LEN] += 1
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[Accumulator]) -> Accumulator:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for i, value in enumerate(accumulator):
                merged[i] += value
        return merged

    def extract_output(self, accumulator: Accumulator) -> dict:
        stats = accumulator[:_STATS_LEN]
        return {
            "bleu": bleu.corpus_bleu_from_stats(stats),
            "sentences": accumulator[_STATS_LEN],
            "hypothesis_length": stats[-2],
            "reference_length": stats[-1],
        }
