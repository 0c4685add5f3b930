"""CIDEr-D's document frequencies for every caption's score, with no per-worker state that grows with the set.

    a bounded sample of the images -> the n-grams most of them need (at most FREQUENT_NGRAMS): the table
    each image's n-grams:
      in the table -> the images whose references hold each, summed per bundle in C -> exact df, a bounded
                      side input (n-gram -> df), like a vocabulary
      the others   -> one element each (n-gram, (image id, whether its references hold it)) -> GroupByKey by
                      n-gram -> df, sent to each image that needs it, only where df >= 2

One shuffle element per image and rare n-gram, and no counting pass for them: a rare n-gram's group is both
its count and its join. The sample only chooses which n-grams take the table's path; both paths are exact. An
n-gram many images need ("a", "on the", a phrase the model repeats) is in the table, so a join group holds
only the few images that need a rarer one (one the sample missed makes a large group, as an n-gram past the
table's size always could). An n-gram with df 0 or 1 weighs log(max(1, df)) = 0 in CIDEr-D, so the join sends
nothing for it; an image that hears of no df for an n-gram scores it exactly as pycocoevalcap would. N-grams
are fingerprints (captioner/metrics/ngrams.py), 9 bytes each in the shuffles.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from captioner.metrics import cider

FREQUENT_NGRAMS = 20_000  # n-grams in the side inputs at most: a few MB per worker, whatever the set's size
SAMPLE_IMAGES = 2_000  # images whose needs choose the table's n-grams
HOT_NEED = 2  # sampled images needing an n-gram before it takes the table's path
RARE = "rare"


def _table(sample, texts: Callable, size: int):
    """The n-grams at least HOT_NEED of the sampled images need, the `size` most needed."""
    needed = Counter()
    for _, value in sample:
        needed.update(cider.needed_ngrams(*texts(value)))
    return frozenset(gram for gram, count in needed.most_common(size) if count >= HOT_NEED)


class _Needs(beam.DoFn):
    """Images -> tagged RARE: (n-gram, (image id, 1 if its references hold it else 0)) for each n-gram the image
    needs outside the table; main: (table n-gram, images whose references hold it), summed per bundle (a
    C-level Counter update an image; at most the table's n-grams held)."""

    def __init__(self, texts: Callable):
        self.texts = texts

    def start_bundle(self):
        self.held = Counter()

    def process(self, element, table):
        image_id, value = element
        candidate, references = self.texts(value)
        in_references = cider.reference_ngrams(references)
        self.held.update(in_references & table)
        for gram in (in_references | cider.reference_ngrams([candidate])) - table:
            yield beam.pvalue.TaggedOutput(RARE, (gram, (image_id, int(gram in in_references))))

    def finish_bundle(self):
        for sums in self.held.items():
            yield WindowedValue(sums, MIN_TIMESTAMP, [GlobalWindow()])


def _to_images(element, tag):
    """(n-gram, [(image id, held)]) -> (image id, (tag, n-gram, df)) for each image that needs it, if df >= 2."""
    gram, needs = element
    df = sum(held for _, held in needs)
    if df >= 2:
        for image_id, _ in needs:
            yield image_id, (tag, gram, df)


class DocumentFrequencies(beam.PTransform):
    """(image id, value) -> {"frequent": a singleton {n-gram: df} of the table's n-grams, "rare": (image id, (tag,
    n-gram, df)) for the image's other n-grams of df >= 2}; `texts(value)` is the image's (caption, references)
    as space-joined tokens. An image's rare df and the table are cider.cider_d_of_counts' `df` and `shared_df`."""

    def __init__(self, texts: Callable, tag: str, frequent_ngrams: int = FREQUENT_NGRAMS):
        super().__init__()
        self.texts, self.tag, self.frequent_ngrams = texts, tag, frequent_ngrams

    def expand(self, tokenized):
        table = beam.pvalue.AsSingleton(
            tokenized
            | "Sample" >> beam.combiners.Sample.FixedSizeGlobally(SAMPLE_IMAGES)
            | "Table" >> beam.Map(_table, self.texts, self.frequent_ngrams))
        needs = tokenized | "Needs" >> beam.ParDo(_Needs(self.texts), table).with_outputs(RARE, main="held")
        frequent = (needs.held
                    | "ByTableNgram" >> beam.CombinePerKey(sum)
                    | "AsTable" >> beam.combiners.ToDict())
        rare = (needs[RARE]
                | "JoinByNgram" >> beam.GroupByKey()
                | "ToImages" >> beam.FlatMap(_to_images, self.tag))
        return {"frequent": frequent, "rare": rare}
