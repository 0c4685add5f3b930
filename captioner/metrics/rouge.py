"""ROUGE-L of one caption as pycocoevalcap computes it: the LCS-based F-measure (beta 1.2) with the best
precision and the best recall over the references; the corpus score is the mean over captions.

Captions are the space-joined tokens, split on " " as pycocoevalcap splits them.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

BETA = 1.2


def _lcs(a: List[str], b: List[str]) -> int:
    """The longest common subsequence's length, bit-parallel (Hyyro 2004): one pass over `b`, `a` as bits of
    an int, so a caption against five references costs tens of int operations, not hundreds of cell updates."""
    matches: Dict[str, int] = {}
    for position, token in enumerate(a):
        matches[token] = matches.get(token, 0) | (1 << position)
    full = (1 << len(a)) - 1
    row = full
    for token in b:
        hit = row & matches.get(token, 0)
        row = ((row + hit) | (row - hit)) & full
    return len(a) - row.bit_count()


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
