"""CIDEr-D's document frequencies for every caption's score, with no per-worker state that grows with the set.

    each image's n-grams, summed per bundle -> per n-gram: (images that need it, df) by one GroupByKey
    -> of the n-grams at least HOT_NEED images need, the FREQUENT_NGRAMS the most images need: a bounded side
       input (n-gram -> df), like a vocabulary
    -> every other n-gram an image needs: joined back to it by n-gram (GroupByKey), only where df >= 2

Splitting by need keeps the join's groups small: an n-gram that many images need ("a", "on the", a phrase
the model repeats) is in the side input, so a join group holds only the few images that need a rarer one.
An n-gram with df 0 or 1 weighs log(max(1, df)) = 0 in CIDEr-D, so the join sends nothing for it; an image
that hears of no df for an n-gram scores it exactly as pycocoevalcap would.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Mapping

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from captioner.metrics import cider

FREQUENT_NGRAMS = 20_000  # n-grams in the side input at most: a few MB per worker, whatever the set's size
HOT_NEED = 10  # images needing an n-gram before it is worth a place in the side input
FLUSH_AT = 100_000  # n-grams a worker sums before it sends them on


class _NeedsAndReferences(beam.DoFn):
    """Images -> (n-gram, (images whose score needs it, images whose references hold it)), summed over the
    bundle first: two C-level Counter updates an image instead of an element per n-gram (a combiner's lifted
    partial sum would still take each element through Python). At most FLUSH_AT n-grams are held."""

    def __init__(self, texts: Callable):
        self.texts = texts

    def start_bundle(self):
        self.needed, self.held = Counter(), Counter()

    def process(self, element):
        candidate, references = self.texts(element[1])
        in_references = cider.reference_ngrams(references)
        self.held.update(in_references)
        self.needed.update(in_references | cider.reference_ngrams([candidate]))  # needed_ngrams, refs once
        if len(self.needed) >= FLUSH_AT:
            yield from self._sums()

    def finish_bundle(self):
        for sums in self._sums():
            yield WindowedValue(sums, MIN_TIMESTAMP, [GlobalWindow()])

    def _sums(self):
        needed, held, self.needed, self.held = self.needed, self.held, Counter(), Counter()
        return [(gram, (count, held[gram])) for gram, count in needed.items()]


def _summed(element):
    gram, pairs = element
    needed = df = 0
    for a, b in pairs:
        needed, df = needed + a, df + b
    return gram, (needed, df)


def _joinable(entry, frequent: Mapping):
    """A counted n-gram the rare join needs: df >= 2 (df 0 and 1 weigh nothing) and not in the shared table; its
    df goes in negated (an image id is a str, so the join's values tell one from the other)."""
    gram, (_, df) = entry
    if df >= 2 and gram not in frequent:
        yield gram, -df


def _rare_needs(element, texts: Callable, frequent: Mapping):
    image_id, value = element
    return [(gram, image_id) for gram in cider.needed_ngrams(*texts(value)) if gram not in frequent]


def _to_images(element, tag):
    """(n-gram, its df negated and the ids of the images that need it) -> (image id, (tag, n-gram, df)) each."""
    gram, values = element
    df = next((-value for value in values if isinstance(value, int)), 0)
    if df:
        for image_id in values:
            if isinstance(image_id, str):
                yield image_id, (tag, gram, df)


class DocumentFrequencies(beam.PTransform):
    """(image id, value) -> {"frequent": a singleton n-gram -> df of the most needed n-grams, "rare": (image id,
    (tag, n-gram, df)) for the image's other n-grams of df >= 2}; `texts(value)` is the image's (caption,
    references) as space-joined tokens. `lookup` joins the two into the mapping cider.cider_d takes; n-grams
    are fingerprints (captioner/metrics/ngrams.py), 9 bytes each in the shuffles. Plain GroupByKeys, not
    CombinePerKey or CoGroupByKey: each of those takes every element through several more Python steps."""

    def __init__(self, texts: Callable, tag: str, frequent_ngrams: int = FREQUENT_NGRAMS):
        super().__init__()
        self.texts, self.tag, self.frequent_ngrams = texts, tag, frequent_ngrams

    def expand(self, tokenized):
        counts = (tokenized
                  | "NeedsAndReferences" >> beam.ParDo(_NeedsAndReferences(self.texts))
                  | "ByNgram" >> beam.GroupByKey()
                  | "Sum" >> beam.Map(_summed))
        frequent = (counts
                    | "Hot" >> beam.Filter(lambda entry: entry[1][0] >= HOT_NEED)
                    | "MostNeeded" >> beam.combiners.Top.Of(self.frequent_ngrams, key=lambda entry: entry[1][0])
                    | "AsTable" >> beam.Map(lambda entries: {gram: df for gram, (_, df) in entries}))
        table = beam.pvalue.AsSingleton(frequent)
        joined = ((counts | "Joinable" >> beam.FlatMap(_joinable, table),
                   tokenized | "RareNeeds" >> beam.FlatMap(_rare_needs, self.texts, table))
                  | "Both" >> beam.Flatten()
                  | "JoinByNgram" >> beam.GroupByKey()
                  | "ToImages" >> beam.FlatMap(_to_images, self.tag))
        return {"frequent": frequent, "rare": joined}


class _Frequencies(dict):
    """An image's joined rare n-grams' df, then the shared table's (not copied): a dict, so a look-up is fast."""
    __slots__ = ("frequent",)

    def get(self, gram, default=None):
        value = dict.get(self, gram)
        return self.frequent.get(gram, default) if value is None else value


def lookup(frequent: Mapping, rare: dict) -> Mapping:
    """One image's df: its joined rare n-grams ({n-gram: df}) first, then the shared table (not copied); `get`
    only."""
    found = _Frequencies(rare)
    found.frequent = frequent
    return found
