"""The field's corpus scores from per-caption statistics that add up: what metrics.json holds.

`caption_scores` scores one caption (its BLEU statistics, ROUGE-L, CIDEr-D given the document frequencies,
METEOR statistics when given); `Totals` adds any number of them up, in any grouping
(it is the caption job's combine accumulator), and `corpus` turns the sum into BLEU-1..4, METEOR, ROUGE-L
and CIDEr-D exactly as pycocoevalcap 1.2 would score the same captions (tests/test_metrics.py checks it).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

from captioner.metrics import bleu, cider, coco_bleu, meteor, ngrams, rouge

PROJECT, COCO = "project", "coco"  # the two tokenizations: the project's cleaning, COCO-eval's PTB tokenizer
TOKENIZATIONS = (PROJECT, COCO)
NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D")
IMPLEMENTATION = "pycocoevalcap 1.2 definitions (BLEU closest reference length, ROUGE-L beta 1.2, CIDEr-D sigma 6)"


def shown(scores: Mapping[str, Optional[float]]) -> List[str]:
    """Each of NAMES as papers print it (x 100, one decimal), "-" where it was not computed."""
    return ["-" if scores.get(name) is None else f"{100 * scores[name]:.1f}" for name in NAMES]


def caption_scores(candidate: str, references: Sequence[str], df: Mapping, images: int,
                   meteor_stats: Optional[List[float]] = None, shared_df: Mapping = cider.EMPTY) -> Dict:
    """One caption's summable scores; texts are tokens joined by single spaces; `meteor_stats` from
    meteor.Meteor.stats (None: no METEOR); `shared_df` as cider.cider_d_of_counts takes it. Its n-grams are counted once, for both BLEUs and CIDEr-D;
    "nltk_bleu" is bleu.sentence_stats (nltk's quirks: bleu.json's corpus BLEU and the smoothed sentence BLEU)."""
    tokens, reference_tokens = candidate.split(), [reference.split() for reference in references]
    counts, reference_counts = ngrams.counts(tokens), [ngrams.counts(reference) for reference in reference_tokens]
    matches = bleu.clipped_of_counts(counts, bleu.largest_counts(reference_counts))
    lengths = [len(reference) for reference in reference_tokens]
    return {"bleu": coco_bleu.stats_of_matches(matches, len(tokens), lengths),
            "nltk_bleu": bleu.stats_of_matches(matches, len(tokens), lengths),
            "rouge_l": rouge.rouge_l(candidate, references),
            "cider_d": cider.cider_d_of_counts([counts], reference_counts, df, images, shared_df)[0],
            "meteor": meteor_stats}


class Totals:
    """A running sum of `caption_scores`: `add` one, `merge` another Totals, `state` as plain JSON data."""

    def __init__(self, state: Optional[Mapping] = None):
        state = state or {}
        self.captions = int(state.get("captions", 0))
        self.bleu = list(state.get("bleu", [0] * coco_bleu.SIZE))
        self.rouge_l = float(state.get("rouge_l", 0.0))
        self.cider_d = float(state.get("cider_d", 0.0))
        self.meteor: Optional[List[float]] = state.get("meteor")
        self.meteor_missing = int(state.get("meteor_missing", 0))

    def add(self, scores: Mapping) -> "Totals":
        self.captions += 1
        self.bleu = [a + b for a, b in zip(self.bleu, scores["bleu"])]
        self.rouge_l += scores["rouge_l"]
        self.cider_d += scores["cider_d"]
        if scores["meteor"] is None:
            self.meteor_missing += 1
        else:
            self.meteor = meteor.summed([self.meteor, scores["meteor"]] if self.meteor else [scores["meteor"]])
        return self

    def merge(self, other: "Totals") -> "Totals":
        self.captions += other.captions
        self.bleu = [a + b for a, b in zip(self.bleu, other.bleu)]
        self.rouge_l += other.rouge_l
        self.cider_d += other.cider_d
        self.meteor = meteor.summed([m for m in (self.meteor, other.meteor) if m]) if (self.meteor or other.meteor) \
            else None
        self.meteor_missing += other.meteor_missing
        return self

    def state(self) -> Dict:
        return {"captions": self.captions, "bleu": self.bleu, "rouge_l": self.rouge_l, "cider_d": self.cider_d,
                "meteor": self.meteor, "meteor_missing": self.meteor_missing}

    def corpus(self, meteor_process: Optional[meteor.Meteor] = None) -> Dict[str, Optional[float]]:
        """BLEU-1..4, METEOR (None without METEOR statistics, or without a process to score them), ROUGE-L,
        CIDEr-D: each corpus score as pycocoevalcap computes it."""
        if not self.captions:
            return {name: None for name in NAMES}
        bleu = coco_bleu.corpus(self.bleu)
        has_meteor = self.meteor is not None and not self.meteor_missing and meteor_process is not None
        return {**{f"BLEU-{n}": score for n, score in enumerate(bleu, start=1)},
                "METEOR": meteor_process.score(self.meteor) if has_meteor else None,
                "ROUGE-L": self.rouge_l / self.captions, "CIDEr-D": self.cider_d / self.captions}
