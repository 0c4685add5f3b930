"""The caption job's scores as one combine of per-caption statistics: bleu.json's corpus BLEU and metrics.json's.

Corpus scores are not means of sentence scores, but their statistics (clipped n-gram matches, n-gram counts,
lengths, METEOR's counts) are plain sums: each worker adds its batches' statistics, Beam merges the partial
sums in any grouping and order, and the scores are combined once at the end. The result is exactly nltk's
`corpus_bleu` (bleu.json) and pycocoevalcap's corpus scores (metrics.json) over the whole set.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import apache_beam as beam
from apache_beam.utils.shared import Shared

from captioner.metrics import bleu, java, meteor, ptb, report


class Totals:
    """Summed statistics: nltk's BLEU of every caption scored ("sentences"), and per tokenization the field's
    (report.Totals); `state` is plain data, so any coder carries it."""

    def __init__(self, tokenizations: Sequence[str], state: Optional[Mapping] = None):
        state = state or {}
        self.tokenizations = tuple(tokenizations)
        self.sentences = int(state.get("sentences", 0))
        self.nltk_bleu = list(state.get("nltk_bleu", [0] * (2 * bleu.MAX_ORDER + 2)))
        self.field = {t: report.Totals(state.get(t)) for t in self.tokenizations}

    def add_bleu(self, stats: Sequence[int]) -> None:
        self.sentences += 1
        self.nltk_bleu = [a + b for a, b in zip(self.nltk_bleu, stats)]

    def add(self, scores: Mapping[str, Mapping]) -> None:
        """One caption's report.caption_scores per tokenization (the project's carries nltk's statistics)."""
        self.add_bleu(scores[report.PROJECT]["nltk_bleu"])
        for t in self.tokenizations:
            self.field[t].add(scores[t])

    def merge(self, other: Totals) -> Totals:
        self.sentences += other.sentences
        self.nltk_bleu = [a + b for a, b in zip(self.nltk_bleu, other.nltk_bleu)]
        for t in self.tokenizations:
            self.field[t].merge(other.field[t])
        return self

    def state(self) -> Dict:
        return {"sentences": self.sentences, "nltk_bleu": self.nltk_bleu,
                **{t: totals.state() for t, totals in self.field.items()}}


class TotalsFn(beam.CombineFn):
    """Totals states -> their sum (a state)."""

    def __init__(self, tokenizations: Sequence[str]):
        self.tokenizations = tuple(tokenizations)

    def create_accumulator(self):
        return Totals(self.tokenizations).state()

    def add_input(self, accumulator, state):
        return self.merge_accumulators([accumulator, state])

    def merge_accumulators(self, accumulators):
        merged = Totals(self.tokenizations)
        for accumulator in accumulators:
            merged.merge(Totals(self.tokenizations, accumulator))
        return merged.state()

    def extract_output(self, accumulator):
        return accumulator


def corpus_bleu(state: Mapping) -> Dict:
    """bleu.json's scores: nltk's corpus BLEU-1..4 (None when nothing was scored), the sentences, the lengths."""
    stats = state["nltk_bleu"]
    return {"bleu": bleu.corpus_bleu_from_stats(stats) if state["sentences"] else None,
            "sentences": state["sentences"], "hypothesis_length": stats[-2], "reference_length": stats[-1]}


def metrics(state: Mapping, tokenizations, shared: Optional[Shared], missing: Dict[str, str], cleaning: str) -> Dict:
    """metrics.json's scores of the summed statistics (METEOR's by the worker's shared Java process)."""
    totals = Totals(tokenizations, state)
    needs_meteor = shared and any(totals.field[t].meteor for t in tokenizations)
    process = shared.acquire(meteor.Meteor) if needs_meteor else None
    return metrics_summary({t: totals.field[t].corpus(process) for t in tokenizations}, missing, cleaning)


def metrics_summary(scores: Dict, missing: Dict[str, str], cleaning: str) -> Dict:
    """metrics.json's content: both tokenizations named, what was skipped and why, the implementations."""
    described = {report.PROJECT: f"the project's own cleaning (text.cleaning={cleaning}, as the model's training "
                                 "captions): comparable with the classic tutorials and this project's earlier BLEU",
                 report.COCO: "the MS-COCO caption evaluation's: PTB tokenizer, punctuation removed, every word "
                              "kept: comparable with the captioning papers"}
    tokenizations = {}
    for name in report.TOKENIZATIONS:
        entry = {"description": described[name]}
        if name in scores:
            entry["scores"] = scores[name]
        else:
            entry["skipped"] = missing.get("field scores") or missing.get("COCO tokenization", "not computed")
        tokenizations[name] = entry
    skipped = dict(missing)
    skipped["SPICE"] = ("not computed by the job: SPICE needs the Stanford CoreNLP 3.6.0 models (pycocoevalcap "
                        "downloads them on first use) and an 8 GB Java heap; score coco_results-*.json with "
                        "pycocoevalcap's Spice where they are")
    return {"tokenizations": tokenizations, "skipped": skipped,
            "per_row": {"sentence_bleu": "smoothed BLEU-4 (nltk method 1), project tokenization",
                        "cider_d": "CIDEr-D, project tokenization, document frequencies of this run's references"},
            "implementations": {"metrics": report.IMPLEMENTATION, "bleu.json": "nltk corpus_bleu, project "
                                "tokenization", "tokenizer": ptb.VERSION, "meteor": meteor.VERSION,
                                "java": java.find_java() or "none"}}
