"""What self-critical fine-tuning rewards a sampled caption with (`train.self_critical_reward`).

    bleu4    the caption's first-order gain in the corpus BLEU-4 of the step's samples (`corpus_bleu_gains`)
    cider_d  the caption's CIDEr-D (captioner/metrics/cider.py, the caption job's implementation), with the
             document frequencies of the train split's references, as Rennie et al. (2017) reward it; the
             end token counts as a word of every reference and of each caption that ended (as in
             ruotianluo/self-critical.pytorch), so a caption cut off mid-phrase ("a dog runs in the") misses
             the n-grams that end the references
    mixed    the sum of the two: both are about 1 for a typical caption, and CIDEr-D alone can drift to
             captions that repeat rare n-grams, which BLEU's clipped precision holds back

Only differences between an image's samples matter (self_critical.advantages), so the rewards' scales need
not match exactly. Every reward also returns the samples' BLEU statistics, which the epoch reports.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from captioner.config.sections import SELF_CRITICAL_REWARDS
from captioner.decoder import search
from captioner.metrics import bleu, cider
from captioner.text import END, END_ID

STATS_SIZE = 2 * bleu.MAX_ORDER + 2  # captioner.metrics.bleu's sentence statistics: matches, counts, lengths


def caption_stats(ids: np.ndarray, references: Sequence[Sequence[Sequence[str]]], tokens: Sequence[str],
                  per_image: int = 1) -> np.ndarray:
    """BLEU statistics [N, STATS_SIZE] of token-id captions.

    Rows i*per_image .. are image i's, each scored against image i's references (counted once per image).
    """
    counts = [bleu.reference_counts(image_refs) for image_refs in references]
    return np.array([bleu.sentence_stats(references[row // per_image], search.ids_to_words(row_ids, tokens),
                                         counts=counts[row // per_image])
                     for row, row_ids in enumerate(ids)], np.float64)


def corpus_bleu_gains(stats: np.ndarray) -> np.ndarray:
    """d log(corpus BLEU-4) / d(sentence i's share), from sentence statistics [N, STATS_SIZE].

    log BLEU-4 = 1/4 sum_n (log M_n - log T_n) + min(0, 1 - R/H) over the corpus totals of clipped
    matches M_n, n-gram counts T_n, hypothesis length H and closest reference length R. Its change when
    sentence i's statistics are added, to first order and times N (so a sentence scores O(1)), is
        N * (1/4 sum_n (m_n/M_n - t_n/T_n) + [H < R] (R h / H^2 - r / H)).
    A sentence gains by matching n-grams at a higher rate than the corpus does, and, while the corpus is
    shorter than its references, by being relatively longer than the corpus.
    Smoothed sentence BLEU-4, the obvious reward, favours short captions (on Flickr8k it left them 20%
    shorter than their references); this gain rewards length exactly while the corpus is too short.
    """
    orders = (stats.shape[1] - 2) // 2
    totals = stats.sum(axis=0)
    total_matches, total_counts = np.maximum(totals[:orders], 1.0), np.maximum(totals[orders:2 * orders], 1.0)
    total_hyp, total_ref = max(float(totals[-2]), 1.0), float(totals[-1])
    gain = (stats[:, :orders] / total_matches - stats[:, orders:2 * orders] / total_counts).sum(axis=1) / orders
    if total_hyp < total_ref:
        gain += total_ref * stats[:, -2] / total_hyp ** 2 - stats[:, -1] / total_hyp
    return (len(stats) * gain).astype(np.float32)


def ended(words: Sequence[str], did_end: bool = True) -> str:
    """A caption as the CIDEr-D reward reads it: its words, then the end token when it ended."""
    return " ".join(list(words) + ([END] if did_end else []))


class Reward:
    """Scores a step's sampled captions; `document_frequencies` (of the train references) for cider_d/mixed."""

    def __init__(self, kind: str, document_frequencies: Optional[Dict] = None, images: int = 0):
        if kind not in SELF_CRITICAL_REWARDS:
            raise ValueError(f"unknown self-critical reward {kind!r}; choose one of {', '.join(SELF_CRITICAL_REWARDS)}")
        if kind != "bleu4" and not images:
            raise ValueError(f"the {kind} reward needs the document frequencies of the train references")
        self.kind, self.df, self.images = kind, document_frequencies, images

    @property
    def needs_document_frequencies(self) -> bool:
        return self.kind != "bleu4"

    def __call__(self, ids: np.ndarray, references: Sequence[Sequence[Sequence[str]]], tokens: Sequence[str],
                 samples: int) -> Tuple[np.ndarray, np.ndarray, float]:
        """(reward per row, BLEU statistics per row, summed CIDEr-D or 0) of `samples` captions per image."""
        stats = caption_stats(ids, references, tokens, per_image=samples)
        if self.kind == "bleu4":
            return corpus_bleu_gains(stats), stats, 0.0
        cider_d = np.zeros(len(ids), np.float32)
        for image, image_refs in enumerate(references):
            rows = slice(image * samples, (image + 1) * samples)
            candidates = [ended(search.ids_to_words(row_ids, tokens), END_ID in row_ids) for row_ids in ids[rows]]
            cider_d[rows] = cider.cider_d_of_samples(candidates, [ended(r) for r in image_refs], self.df,
                                                     self.images)
        rewards = cider_d if self.kind == "cider_d" else cider_d + corpus_bleu_gains(stats)
        return rewards, stats, float(cider_d.sum())
