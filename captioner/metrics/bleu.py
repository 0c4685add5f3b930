"""Corpus BLEU as nltk computes it, from statistics that can be summed.

nltk's `corpus_bleu` sums clipped n-gram matches, hypothesis n-gram counts and
lengths over the whole corpus before it combines them, so the same numbers can
be summed across Beam bundles and workers and combined once at the end. Each
sentence becomes a flat list of ints (`sentence_stats`); the element-wise sum of
those lists gives exactly nltk's corpus score (`corpus_bleu_from_stats`).

nltk's quirks are kept on purpose, so the two agree to the last bit:
- a sentence with no n-grams of order n still counts 1 in that order's
  denominator (`modified_precision` returns x/max(1, count));
- the closest reference length breaks ties towards the shorter reference;
- no unigram match in the whole corpus gives 0 for every order;
- an order with no matches (but some unigram matches) is not 0: nltk's
  unsmoothed method0 uses `sys.float_info.min` as its precision, so the
  score is a tiny positive number (e.g. ~1e-77 for BLEU-4);
- an empty corpus hypothesis (total length 0) has brevity penalty 0.

N-grams are counted as fingerprints (ngrams.py), once per sentence: the caption job clips the same counts for
nltk's statistics and pycocoevalcap's (coco_bleu.py) and weighs them for CIDEr-D.
"""
from __future__ import annotations

import math
import sys
from collections import Counter
from typing import List, Optional, Sequence

from captioner.metrics import ngrams

MAX_ORDER = 4

Tokens = Sequence[str]


def closest_ref_length(references: Sequence[Tokens], hyp_len: int) -> int:
    """The reference length nearest the hypothesis length; ties go to the shorter one (nltk)."""
    return closest_length([len(r) for r in references], hyp_len)


def closest_length(reference_lengths: Sequence[int], hyp_len: int) -> int:
    if not reference_lengths:
        raise ValueError("BLEU needs at least one reference per hypothesis")
    return min(reference_lengths, key=lambda ref_len: (abs(ref_len - hyp_len), ref_len))


def largest_counts(per_reference: Sequence[List[Counter]]) -> List[Counter]:
    """Per order: each n-gram's largest count in any one reference, from each reference's `ngrams.counts`."""
    largest = []
    for order in zip(*per_reference):
        merged: Counter = Counter()
        for counts in order:
            for gram, count in counts.items():
                merged[gram] = max(merged[gram], count)
        largest.append(merged)
    return largest


def reference_counts(references: Sequence[Tokens], max_order: int = MAX_ORDER) -> List[Counter]:
    """Per order n=1..N: each n-gram's largest count in any one reference (what hypothesis counts are clipped to);
    computed once for several hypotheses of one image (self-critical samples)."""
    return largest_counts([ngrams.counts(reference, max_order) for reference in references])


def clipped_of_counts(hypothesis: List[Counter], largest: List[Counter]) -> List[int]:
    """Per order: the hypothesis' n-gram counts (`ngrams.counts`), each clipped to `largest`'s."""
    return [sum(min(count, clip[gram]) for gram, count in counts.items() if gram in clip)
            for counts, clip in zip(hypothesis, largest)]


def clipped_matches(references: Sequence[Tokens], hypothesis: Tokens, max_order: int = MAX_ORDER,
                    counts: Optional[List[Counter]] = None) -> List[int]:
    """Per order n=1..N: the hypothesis n-grams found in a reference, each clipped to its most frequent count
    in any one reference (BLEU's modified precision numerator; pycocoevalcap's `correct`). `counts`: the
    references' `reference_counts`, when already computed."""
    counts = counts or reference_counts(references, max_order)
    return clipped_of_counts(ngrams.counts(hypothesis, max_order), counts)


def sentence_stats(references: Sequence[Tokens], hypothesis: Tokens, max_order: int = MAX_ORDER,
                   counts: Optional[List[Counter]] = None) -> List[int]:
    """Summable BLEU statistics of one sentence (`counts`: the references' `reference_counts`, if at hand).

    Layout: [clipped matches n=1..N, hypothesis n-gram counts n=1..N,
    hypothesis length, closest reference length]. The counts are nltk's
    denominators, at least 1 per sentence and order.
    """
    if not references:
        raise ValueError("BLEU needs at least one reference per hypothesis")
    return stats_of_matches(clipped_matches(references, hypothesis, max_order, counts), len(hypothesis),
                            [len(r) for r in references])


def stats_of_matches(matches: List[int], hyp_len: int, reference_lengths: Sequence[int]) -> List[int]:
    """`sentence_stats` of already clipped matches, the hypothesis' length and the references'."""
    totals = [max(1, hyp_len - n + 1) for n in range(1, len(matches) + 1)]
    return matches + totals + [hyp_len, closest_length(reference_lengths, hyp_len)]


def brevity_penalty(ref_len: int, hyp_len: int) -> float:
    if hyp_len > ref_len:
        return 1.0
    if hyp_len == 0:
        return 0.0
    return math.exp(1 - ref_len / hyp_len)


def corpus_bleu_from_stats(stats: Sequence[int]) -> List[float]:
    """Cumulative BLEU-1..N (N from the stats' length), unsmoothed, as nltk's `corpus_bleu`."""
    max_order, remainder = divmod(len(stats) - 2, 2)
    if remainder or max_order < 1:
        raise ValueError(f"BLEU statistics must have 2*N+2 entries, got {len(stats)}")
    matches, totals = stats[:max_order], stats[max_order:2 * max_order]
    hyp_len, ref_len = stats[-2], stats[-1]
    if matches[0] == 0:
        return [0.0] * max_order
    # nltk's method0: a zero-match order contributes log(float_info.min), not -inf.
    log_precisions = [math.log(m / t) if m else math.log(sys.float_info.min) for m, t in zip(matches, totals)]
    bp = brevity_penalty(ref_len, hyp_len)
    scores = []
    for order in range(1, max_order + 1):
        weight = 1 / order
        scores.append(bp * math.exp(math.fsum(weight * lp for lp in log_precisions[:order])))
    return scores


def sum_stats(all_stats, max_order: int = MAX_ORDER) -> List[int]:
    """Element-wise sum of sentence statistics (all zeros for no sentences)."""
    total = [0] * (2 * max_order + 2)
    for stats in all_stats:
        if len(stats) != len(total):
            raise ValueError(f"BLEU statistics of length {len(stats)}, expected {len(total)}")
        total = [a + b for a, b in zip(total, stats)]
    return total


def corpus_bleu(list_of_references: Sequence[Sequence[Tokens]], hypotheses: Sequence[Tokens]) -> List[float]:
    """Corpus BLEU-1..4, equal to nltk's `corpus_bleu` with the four cumulative weights."""
    if len(list_of_references) != len(hypotheses):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(list_of_references)} reference lists")
    return corpus_bleu_from_stats(sum_stats(sentence_stats(r, h) for r, h in zip(list_of_references, hypotheses)))


SMOOTHING_EPSILON = 0.1  # nltk's SmoothingFunction().method1


def smoothed_bleu_from_stats(stats: Sequence[int], epsilon: float = SMOOTHING_EPSILON) -> float:
    """Sentence BLEU-N of one sentence's statistics, smoothed as nltk's method1 (epsilon for a zero match count).

    Unsmoothed BLEU-4 of one short caption is almost always ~0, so a sentence
    score needs smoothing; a corpus score never gets it.
    """
    max_order = (len(stats) - 2) // 2
    matches, totals = stats[:max_order], stats[max_order:2 * max_order]
    if matches[0] == 0:
        return 0.0
    log_precision = math.fsum(math.log((m or epsilon) / t) for m, t in zip(matches, totals)) / max_order
    return brevity_penalty(stats[-1], stats[-2]) * math.exp(log_precision)


def sentence_bleu(references: Sequence[Tokens], hypothesis: Tokens) -> float:
    """Smoothed sentence BLEU-4 (nltk's `sentence_bleu` with method1) for showing one image or as a reward.

    Never use it to report a model: that is corpus BLEU, unsmoothed.
    """
    return smoothed_bleu_from_stats(sentence_stats(references, hypothesis))
