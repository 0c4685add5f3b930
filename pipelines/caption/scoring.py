"""The caption job's scores: the field's metrics in two tokenizations, distributed.

    rows with references -> batches -> both tokenizations of caption and references (the project's
      cleaning; COCO-eval's PTB tokenizer, one Java process per batch, when Java is here)
    -> CIDEr-D's document frequencies (document_frequencies.py): the most needed n-grams' as a bounded side
       input, every other n-gram's joined back to the images that need it (CoGroupByKey by n-gram, then by image)
    -> batches of images: CIDEr-D and sentence BLEU into the row (METEOR's lines one Java round trip per batch);
       BLEU / ROUGE-L / CIDEr-D / METEOR statistics into a combine (captioner/metrics/report.Totals)
    -> metrics.json's corpus scores

Side inputs hold only bounded things: the number of images scored and FREQUENT_NGRAMS n-grams' df. Not yet
flat in memory on DirectRunner (bench/RESULTS.md): the rare n-grams' shuffles grow with the set there.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional

import apache_beam as beam
from apache_beam.utils.shared import Shared

from captioner import text
from captioner.metrics import java, meteor, ptb, report
from pipelines.caption import document_frequencies

log = logging.getLogger(__name__)
PTB_BATCH = 500  # captions per PTB tokenizer process (a Java start-up each)


def java_missing() -> Dict[str, str]:
    """What needs Java and cannot run here, with the reason (empty when everything can)."""
    reasons = {}
    for what, jar in (("COCO tokenization", ptb.JAR), ("METEOR", meteor.JAR)):
        reason = java.missing(*jar)
        if reason:
            reasons[what] = reason
    return reasons


class _Tokenize(beam.DoFn):
    """A batch of rows -> (image id, {tokenization: (caption, [references])}), texts as space-joined tokens."""

    def __init__(self, cleaning: str, coco: bool):
        self.cleaning, self.coco = cleaning, coco

    def process(self, rows: List[Dict]):
        project = {row["image_id"]: (row["caption"], [text.clean_caption(r, self.cleaning)
                                                     for r in row["raw_references"]]) for row in rows}
        coco = {}
        if self.coco:
            sentences = [s for row in rows for s in [row["caption"], *row["raw_references"]]]
            tokens = iter(ptb.tokenize(sentences))
            coco = {row["image_id"]: (next(tokens), [next(tokens) for _ in row["raw_references"]]) for row in rows}
        for row in rows:
            texts = {report.PROJECT: project[row["image_id"]]}
            if self.coco:
                texts[report.COCO] = coco[row["image_id"]]
            yield row["image_id"], texts


class _Score(beam.DoFn):
    """A batch of (image id, {row, texts, rare df per tokenization}) -> each row with its CIDEr-D; tagged "stats":
    per-image stats. A batch's METEOR lines go to Java in one round trip.

    METEOR's Java process is shared by the worker process's threads (`shared`; None: no METEOR) and started
    by the first caption that needs it.
    """

    def __init__(self, tokenizations, shared: Optional[Shared]):
        self.tokenizations, self.shared = tuple(tokenizations), shared
        self.meteor: Optional[meteor.Meteor] = None

    def teardown(self):
        self.meteor = None  # the shared process lives on while another DoFn holds it

    def process(self, batch: List, images: int, project_df: Dict, coco_df: Optional[Dict] = None):
        frequent = {report.PROJECT: project_df, report.COCO: coco_df}
        scored = []
        for _, groups in batch:
            (row,) = groups["row"]
            texts = next(iter(groups["texts"]), None)
            if texts is None:  # no references: nothing to score
                yield dict(row, cider_d=None)
            else:
                scored.append((row, texts, groups))
        if self.shared and self.meteor is None and scored:
            self.meteor = self.shared.acquire(meteor.Meteor)
        meteor_stats = {t: self.meteor.stats_of_many([texts[t] for _, texts, _ in scored]) if self.meteor
                        else [None] * len(scored) for t in self.tokenizations}
        for number, (row, texts, groups) in enumerate(scored):
            stats = {}
            for t in self.tokenizations:
                candidate, references = texts[t]
                df = document_frequencies.lookup(frequent[t], groups[f"df_{t}"])
                stats[t] = report.caption_scores(candidate, references, df, images, meteor_stats[t][number])
            yield dict(row, cider_d=stats[report.PROJECT]["cider_d"])
            yield beam.pvalue.TaggedOutput("stats", stats)


class _Totals(beam.CombineFn):
    """Per tokenization, the running `report.Totals` (as plain state, so any coder carries it)."""

    def __init__(self, tokenizations):
        self.tokenizations = tuple(tokenizations)

    def create_accumulator(self):
        return {t: report.Totals().state() for t in self.tokenizations}

    def add_input(self, accumulator, stats):
        return {t: report.Totals(accumulator[t]).add(stats[t]).state() for t in self.tokenizations}

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged = {t: report.Totals(merged[t]).merge(report.Totals(accumulator[t])).state()
                      for t in self.tokenizations}
        return merged

    def extract_output(self, accumulator):
        return accumulator


def _corpus(totals: Dict, tokenizations, shared: Optional[Shared], missing: Dict[str, str], cleaning: str) -> Dict:
    needs_meteor = shared and any(totals[t]["meteor"] for t in tokenizations)
    process = shared.acquire(meteor.Meteor) if needs_meteor else None
    scores = {t: report.Totals(totals[t]).corpus(process) for t in tokenizations}
    return metrics_summary(scores, missing, cleaning)


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


class ScoreCaptions(beam.PTransform):
    """Caption rows (with raw references) -> {"rows": rows with CIDEr-D, "metrics": metrics.json's content}."""

    def __init__(self, cleaning: str, with_meteor: bool = True, enabled: bool = True,
                 frequent_ngrams: int = document_frequencies.FREQUENT_NGRAMS):
        super().__init__()
        self.cleaning, self.enabled, self.frequent_ngrams = cleaning, enabled, frequent_ngrams
        self.missing = java_missing() if enabled else {
            "field scores": "not computed: caption.field_scores=false (bleu.json's BLEU and the rows' sentence BLEU "
                            "only; set it true for METEOR, ROUGE-L and CIDEr-D)"}
        if not with_meteor:
            self.missing["METEOR"] = "not computed: caption.meteor=false (set it true to score METEOR)"
        self.tokenizations = [report.PROJECT] + ([] if "COCO tokenization" in self.missing else [report.COCO])
        self.shared = None if "METEOR" in self.missing or not enabled else Shared()
        for what, reason in self.missing.items():
            log.warning("%s skipped: %s", what, reason)

    def expand(self, rows):
        if not self.enabled:
            return {"rows": rows | "NoCider" >> beam.Map(lambda row: dict(row, cider_d=None)),
                    "metrics": rows.pipeline | "NoScores" >> beam.Create(
                        [metrics_summary({}, self.missing, self.cleaning)])}
        scored = rows | "WithReferences" >> beam.Filter(lambda row: bool(row["raw_references"]))
        tokenized = (scored
                     | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=PTB_BATCH)
                     | "Tokenize" >> beam.ParDo(_Tokenize(self.cleaning, report.COCO in self.tokenizations)))
        images = beam.pvalue.AsSingleton(scored | "CountScored" >> beam.combiners.Count.Globally())
        groups = {"row": rows | "RowById" >> beam.Map(lambda row: (row["image_id"], row)), "texts": tokenized}
        frequent = {}
        for tokenization in self.tokenizations:
            df = tokenized | f"Df{tokenization}" >> document_frequencies.DocumentFrequencies(
                tokenization, self.frequent_ngrams)
            groups[f"df_{tokenization}"] = df["rare"]
            frequent[f"{tokenization}_df"] = beam.pvalue.AsSingleton(df["frequent"])
        finished = (groups
                    | "JoinByImage" >> beam.CoGroupByKey()
                    | "BatchForMeteor" >> beam.BatchElements(min_batch_size=1, max_batch_size=meteor.PIPE_LINES)
                    | "Score" >> beam.ParDo(_Score(self.tokenizations, self.shared), images=images, **frequent)
                    .with_outputs("stats", main="rows"))
        metrics = (finished.stats
                   | "Totals" >> beam.CombineGlobally(_Totals(self.tokenizations))
                   | "Corpus" >> beam.Map(_corpus, self.tokenizations, self.shared, self.missing, self.cleaning))
        return {"rows": finished.rows, "metrics": metrics}

