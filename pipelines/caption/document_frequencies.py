"""CIDEr-D's document frequencies for every caption's score, with no per-worker state that grows with the set.

    a bounded sample of the images (of the first SAMPLE_IMAGES of each bundle) -> the n-grams most of them
    need (at most FREQUENT_NGRAMS): the table
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


class _Head(beam.DoFn):
    """The first `count` images' texts of each bundle: what the sample draws from, for a counter check an image
    (a sampling combine draws a random number and pushes a heap for every one)."""

    def __init__(self, texts: Callable, count: int):
        self.texts, self.count = texts, count

    def start_bundle(self):
        self.seen = 0

    def process(self, element):
        if self.seen < self.count:
            self.seen += 1
            yield self.texts(element[1])


def _table(sample, size: int):
    """The n-grams at least HOT_NEED of the sampled images need in any tokenization, the `size` most needed."""
    needed = Counter()
    for texts in sample:
        needed.update(set().union(*(cider.needed_ngrams(*pair) for pair in texts)))
    return frozenset(gram for gram, count in needed.most_common(size) if count >= HOT_NEED)


class _Needs(beam.DoFn):
    """Images -> tagged RARE: (n-gram, (image id, flags)) for each n-gram the image needs outside the table, in
    any tokenization (flags: bit 2i set where tokenization i needs it, bit 2i+1 where i's references hold it);
    main: ((i, table n-gram), images whose references hold it), summed per bundle (a C-level Counter update an
    image; at most the table's n-grams held)."""

    def __init__(self, texts: Callable):
        self.texts = texts

    def start_bundle(self):
        self.held = Counter()

    def process(self, element, table):
        image_id, value = element
        flags = Counter()
        for i, (candidate, references) in enumerate(self.texts(value)):
            in_references = cider.reference_ngrams(references)
            self.held.update((i, gram) for gram in in_references & table)
            flags.update(dict.fromkeys(in_references | cider.reference_ngrams([candidate]), 1 << 2 * i))
            flags.update(dict.fromkeys(in_references, 2 << 2 * i))
        for gram in flags.keys() - table:
            yield beam.pvalue.TaggedOutput(RARE, (gram, (image_id, flags[gram])))

    def finish_bundle(self):
        for sums in self.held.items():
            yield WindowedValue(sums, MIN_TIMESTAMP, [GlobalWindow()])


def _to_images(element, tokenizations: int):
    """(n-gram, [(image id, flags)]) -> (image id, (n-gram, (df in each tokenization where the image needs it
    and df >= 2, else 0))) for each image with any such."""
    gram, needs = element
    dfs = [sum((flags >> (2 * i + 1)) & 1 for _, flags in needs) for i in range(tokenizations)]
    if max(dfs) >= 2:
        for image_id, flags in needs:
            sent = tuple(df if df >= 2 and (flags >> 2 * i) & 1 else 0 for i, df in enumerate(dfs))
            if any(sent):
                yield image_id, (gram, sent)


def _tables(entries, tokenizations: int):
    """{(i, n-gram): df} -> one {n-gram: df} per tokenization."""
    tables = [{} for _ in range(tokenizations)]
    for (i, gram), df in entries.items():
        tables[i][gram] = df
    return tables


class DocumentFrequencies(beam.PTransform):
    """(image id, value) -> {"frequent": a singleton [{n-gram: df} of the table's n-grams, per tokenization],
    "rare": (image id, (n-gram, (df per tokenization, 0 where not needed or < 2))) for the image's other
    n-grams}; `texts(value)` is the image's [(caption, references)] per tokenization, as space-joined tokens.
    One pass for every tokenization: their n-grams mostly coincide, so one element carries an n-gram for all.
    An image's rare df and the table are cider.cider_d_of_counts' `df` and `shared_df`."""

    def __init__(self, texts: Callable, tokenizations: int, frequent_ngrams: int = FREQUENT_NGRAMS):
        super().__init__()
        self.texts, self.tokenizations, self.frequent_ngrams = texts, tokenizations, frequent_ngrams

    def expand(self, tokenized):
        table = beam.pvalue.AsSingleton(
            tokenized
            | "Heads" >> beam.ParDo(_Head(self.texts, SAMPLE_IMAGES))
            | "Sample" >> beam.combiners.Sample.FixedSizeGlobally(SAMPLE_IMAGES)
            | "Table" >> beam.Map(_table, self.frequent_ngrams))
        needs = tokenized | "Needs" >> beam.ParDo(_Needs(self.texts), table).with_outputs(RARE, main="held")
        frequent = (needs.held
                    | "ByTableNgram" >> beam.CombinePerKey(sum)
                    | "AsTable" >> beam.combiners.ToDict()
                    | "PerTokenization" >> beam.Map(_tables, self.tokenizations))
        rare = (needs[RARE]
                | "JoinByNgram" >> beam.GroupByKey()
                | "ToImages" >> beam.FlatMap(_to_images, self.tokenizations))
        return {"frequent": frequent, "rare": rare}
