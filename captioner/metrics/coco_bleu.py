"""BLEU-1..4 as pycocoevalcap computes it, from statistics summed over the corpus.

pycocoevalcap's BleuScorer differs from nltk's corpus_bleu in its details: an
order's denominator is the hypothesis' n-gram count even when it is 0, tiny and
small constants (1e-15, 1e-9) keep empty orders finite, and the brevity penalty
uses the summed closest reference lengths. Per caption the statistics are
[correct n=1..4, guess n=1..4, hypothesis length, closest reference length].
"""
from __future__ import annotations

import math
from typing import List, Sequence

from captioner.metrics import bleu

ORDERS = 4
SIZE = 2 * ORDERS + 2
_TINY, _SMALL = 1e-15, 1e-9


def sentence_stats(references: Sequence[Sequence[str]], hypothesis: Sequence[str]) -> List[int]:
    return stats_of_matches(bleu.clipped_matches(references, hypothesis, ORDERS), len(hypothesis),
                            [len(r) for r in references])


def stats_of_matches(matches: List[int], hyp_len: int, reference_lengths: Sequence[int]) -> List[int]:
    """`sentence_stats` of clipped matches (bleu.clipped_of_counts), the hypothesis' length and the references'."""
    guess = [max(0, hyp_len - n + 1) for n in range(1, ORDERS + 1)]
    return list(matches) + guess + [hyp_len, bleu.closest_length(reference_lengths, hyp_len)]


def corpus(stats: Sequence[float]) -> List[float]:
    """BLEU-1..4 of summed statistics (pycocoevalcap's `compute_score(option='closest')`)."""
    correct, guess = stats[:ORDERS], stats[ORDERS:2 * ORDERS]
    test_len, ref_len = stats[-2], stats[-1]
    scores, product = [], 1.0
    for n in range(ORDERS):
        product *= (float(correct[n]) + _TINY) / (float(guess[n]) + _SMALL)
        scores.append(product ** (1.0 / (n + 1)))
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        scores = [score * math.exp(1 - 1 / ratio) for score in scores]
    return scores
