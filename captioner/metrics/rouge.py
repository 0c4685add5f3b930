"""ROUGE-L of one caption as pycocoevalcap computes it: the LCS-based F-measure (beta 1.2) with the best
precision and the best recall over the references; the corpus score is the mean over captions.

Captions are the space-joined tokens, split on " " as pycocoevalcap splits them.
"""
from __future__ import annotations

from typing import List, Sequence

BETA = 1.2


def _lcs(a: List[str], b: List[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, references: Sequence[str]) -> float:
    tokens = candidate.split(" ")
    precisions, recalls = [], []
    for reference in references:
        ref_tokens = reference.split(" ")
        common = _lcs(ref_tokens, tokens)
        precisions.append(common / float(len(tokens)))
        recalls.append(common / float(len(ref_tokens)))
    precision, recall = max(precisions), max(recalls)
    if precision == 0 or recall == 0:
        return 0.0
    return ((1 + BETA ** 2) * precision * recall) / float(recall + BETA ** 2 * precision)
