"""The caption job's one scoring path: each row's references cleaned once, every score from one pass of
statistics.

    rows -> batches -> references cleaned as the model's training captions were (a row whose references all
      clean to nothing has none: unscored in bleu.json and metrics.json alike), the COCO tokenization of the
      caption and raw references (PTB_BATCH captions per Java process) when the field's scores are on
    -> CIDEr-D's document frequencies, both tokenizations in one pass (document_frequencies.py): a table of the
       n-grams a sample of the images needs most as a bounded side input, every other n-gram's joined back to
       the images that need it (GroupByKey by n-gram, then by image)
    -> per image, its n-grams counted once (captioner/metrics/report.caption_scores): nltk's BLEU statistics and
       smoothed sentence BLEU, and the field's (BLEU, ROUGE-L, CIDEr-D, METEOR: one Java round trip per batch)
    -> one combine of the statistics (score_totals.py) -> bleu.json's nltk corpus BLEU and metrics.json's scores

With caption.field_scores=false only the project cleaning and nltk's BLEU run: no Java, no shuffle but the
combine. Side inputs hold only bounded things: the number of images scored, FREQUENT_NGRAMS n-grams and their df.
"""
from __future__ import annotations

import functools
import logging
from typing import Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.utils.shared import Shared

from captioner import text
from captioner.metrics import bleu, java, meteor, ptb, report
from pipelines.caption import document_frequencies, score_totals

log = logging.getLogger(__name__)
PTB_BATCH = 10_000  # captions per PTB tokenizer process: a Java start-up (~0.5 s of CPU) each
UNSCORED = {"references": [], "sentence_bleu": None, "cider_d": None}
TEXTS = "texts"  # tags an image's (row, COCO texts) in the join by image, beside its rare n-grams' (n-gram, dfs)


def java_missing() -> Dict[str, str]:
    """What needs Java and cannot run here, with the reason (empty when everything can)."""
    reasons = {}
    for what, jar in (("COCO tokenization", ptb.JAR), ("METEOR", meteor.JAR)):
        reason = java.missing(*jar)
        if reason:
            reasons[what] = reason
    return reasons


def texts_of(value, tokenization: str):
    """(caption, references) of one tokenization, as space-joined tokens, from a (row, COCO texts) value."""
    row, coco = value
    return (row["caption"], row["references"]) if tokenization == report.PROJECT else coco


def _all_texts(value, tokenizations):
    return [texts_of(value, t) for t in tokenizations]


class _Texts(beam.DoFn):
    """A batch of rows -> (image id, (row with cleaned references, COCO texts or None)); tagged "unscored": the
    rows with no reference left, finished."""

    def __init__(self, cleaning: str, coco: bool):
        self.cleaning, self.coco = cleaning, coco

    def process(self, rows: List[Dict]):
        kept = []
        for row in rows:
            raw = row["raw_references"]
            plain = {name: value for name, value in row.items() if name != "raw_references"}
            references = [c for c in (text.clean_caption(r, self.cleaning) for r in raw) if c]
            if references:
                kept.append((dict(plain, references=references), raw))
            else:
                yield beam.pvalue.TaggedOutput("unscored", dict(plain, **UNSCORED))
        tokens = iter(ptb.tokenize([s for row, raw in kept for s in (row["caption"], *raw)]) if self.coco else ())
        for row, raw in kept:
            coco = (next(tokens), [next(tokens) for _ in raw]) if self.coco else None
            yield row["image_id"], (row, coco)


def _unpacked(joined, tokenizations):
    """An image's joined values -> ((row, COCO texts), {tokenization: {n-gram: df} of its rare n-grams})."""
    value, rare = None, {t: {} for t in tokenizations}
    for first, second in joined:
        if first == TEXTS:
            value = second
        else:
            for t, df in zip(tokenizations, second):
                if df:
                    rare[t][first] = df
    return value, rare


class _Score(beam.DoFn):
    """A batch of joined images -> each row with its sentence BLEU and CIDEr-D; tagged "stats": the batch's
    summed statistics (score_totals.Totals). A batch's METEOR lines go to Java in one round trip.

    Without `tokenizations` (caption.field_scores=false) a batch holds (image id, (row, None)) and only nltk's
    BLEU is computed. METEOR's Java process is shared by the worker process's threads (`shared`; None: no
    METEOR) and started by the first caption that needs it.
    """

    def __init__(self, tokenizations, shared: Optional[Shared]):
        self.tokenizations, self.shared = tuple(tokenizations), shared
        self.meteor: Optional[meteor.Meteor] = None

    def teardown(self):
        self.meteor = None  # the shared process lives on while another DoFn holds it

    def process(self, batch: List, images: int = 0, frequent: Sequence[Dict] = ()):
        totals = score_totals.Totals(self.tokenizations)
        if not self.tokenizations:
            for _, (row, _) in batch:
                stats = bleu.sentence_stats([r.split() for r in row["references"]], row["caption"].split())
                totals.add_bleu(stats)
                yield dict(row, sentence_bleu=bleu.smoothed_bleu_from_stats(stats), cider_d=None)
            yield beam.pvalue.TaggedOutput("stats", totals.state())
            return
        values = [_unpacked(joined, self.tokenizations) for _, joined in batch]
        if self.shared and self.meteor is None:
            self.meteor = self.shared.acquire(meteor.Meteor)
        meteor_stats = {t: self.meteor.stats_of_many([texts_of(value, t) for value, _ in values]) if self.meteor
                        else [None] * len(values) for t in self.tokenizations}
        for number, (value, rare) in enumerate(values):
            scores = {t: report.caption_scores(*texts_of(value, t), rare[t], images, meteor_stats[t][number], table)
                      for t, table in zip(self.tokenizations, frequent)}
            totals.add(scores)
            yield dict(value[0], sentence_bleu=bleu.smoothed_bleu_from_stats(scores[report.PROJECT]["nltk_bleu"]),
                       cider_d=scores[report.PROJECT]["cider_d"])
        yield beam.pvalue.TaggedOutput("stats", totals.state())


class ScoreCaptions(beam.PTransform):
    """Caption rows (with raw references) -> {"rows": rows with cleaned references, sentence BLEU and CIDEr-D,
    "bleu": bleu.json's scores (nltk corpus BLEU, counts, lengths), "metrics": metrics.json's scores}."""

    def __init__(self, cleaning: str, with_meteor: bool = True, enabled: bool = True,
                 frequent_ngrams: int = document_frequencies.FREQUENT_NGRAMS):
        super().__init__()
        self.cleaning, self.enabled, self.frequent_ngrams = cleaning, enabled, frequent_ngrams
        self.missing = java_missing() if enabled else {
            "field scores": "not computed: caption.field_scores=false (bleu.json's BLEU and the rows' sentence BLEU "
                            "only; set it true for METEOR, ROUGE-L and CIDEr-D)"}
        if not with_meteor:
            self.missing["METEOR"] = "not computed: caption.meteor=false (set it true to score METEOR)"
        self.tokenizations = ([report.PROJECT] + ([] if "COCO tokenization" in self.missing else [report.COCO])
                              if enabled else [])
        self.shared = None if "METEOR" in self.missing or not enabled else Shared()
        for what, reason in self.missing.items():
            log.warning("%s skipped: %s", what, reason)

    def expand(self, rows):
        texts = (rows
                 | "Batch" >> beam.BatchElements(min_batch_size=PTB_BATCH, max_batch_size=PTB_BATCH)
                 | "Texts" >> beam.ParDo(_Texts(self.cleaning, report.COCO in self.tokenizations))
                 .with_outputs("unscored", main="scored"))
        batches, side_inputs = (self._joined(texts.scored) if self.enabled
                                else (texts.scored | "BatchForBleu" >> beam.BatchElements(), {}))
        finished = (batches | "Score" >> beam.ParDo(_Score(self.tokenizations, self.shared), **side_inputs)
                    .with_outputs("stats", main="rows"))
        totals = finished.stats | "Totals" >> beam.CombineGlobally(score_totals.TotalsFn(self.tokenizations))
        return {"rows": (finished.rows, texts.unscored) | "AllRows" >> beam.Flatten(),
                "bleu": totals | "CorpusBleu" >> beam.Map(score_totals.corpus_bleu),
                "metrics": totals | "Corpus" >> beam.Map(score_totals.metrics, self.tokenizations, self.shared,
                                                         self.missing, self.cleaning)}

    def _joined(self, scored):
        """(batches of (image id, [(TEXTS, (row, COCO texts)), (rare n-gram, df per tokenization)...]), the side
        inputs _Score takes: the images scored, the frequent n-grams' df per tokenization)."""
        side_inputs = {"images": beam.pvalue.AsSingleton(scored | "CountScored" >> beam.combiners.Count.Globally())}
        df = scored | "Df" >> document_frequencies.DocumentFrequencies(
            functools.partial(_all_texts, tokenizations=tuple(self.tokenizations)), len(self.tokenizations),
            self.frequent_ngrams)
        side_inputs["frequent"] = beam.pvalue.AsSingleton(df["frequent"])
        parts = [scored | "TagTexts" >> beam.MapTuple(lambda image_id, value: (image_id, (TEXTS, value))), df["rare"]]
        return (parts
                | "Both" >> beam.Flatten()
                | "JoinByImage" >> beam.GroupByKey()
                | "BatchForMeteor" >> beam.BatchElements(min_batch_size=1, max_batch_size=meteor.PIPE_LINES)), side_inputs
