"""CIDEr-D of one caption as pycocoevalcap computes it, given the document frequencies of the references.

tf-idf vectors of the 1- to 4-grams (raw counts x (log N - log df), N the images scored and df the images
whose references hold the n-gram), clipped cosine similarity with each reference, a Gaussian penalty on the
length difference (sigma 6; pycocoevalcap measures "length" in bigrams, kept here), the mean over orders and
references, times 10. The corpus score is the mean over captions. The document frequencies are the only
thing that needs the whole set: the caption job computes them with a combine and joins them back by n-gram.
N-grams are counted once per sentence as fingerprints (ngrams.py).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Dict, Iterable, List, Mapping, Sequence, Set

from captioner.metrics import ngrams

ORDERS = ngrams.ORDERS
SIGMA = 6.0
Ngram = int  # an n-gram's fingerprint (ngrams.py)
Counts = List[Counter]  # per order, the n-gram fingerprints' counts (ngrams.counts)
EMPTY: Mapping[Ngram, float] = {}


def ngram_counts(sentence: str) -> Counts:
    return ngrams.counts(sentence.split(), ORDERS)


def reference_ngrams(references: Sequence[str]) -> Set[Ngram]:
    """The n-grams of an image's references, each once: what the image adds to the document frequencies."""
    return ngrams.distinct([reference.split() for reference in references], ORDERS)


def needed_ngrams(candidate: str, references: Sequence[str]) -> Set[Ngram]:
    """Every n-gram whose document frequency the caption's score needs."""
    return ngrams.distinct([candidate.split(), *(reference.split() for reference in references)], ORDERS)


def document_frequencies(all_references: Iterable[Sequence[str]]) -> Dict[Ngram, int]:
    """df over a whole set held in memory (the trainer's dev and train splits; the job uses a combine)."""
    frequencies: Counter = Counter()
    for references in all_references:
        frequencies.update(reference_ngrams(references))
    return dict(frequencies)


def _vector(counts: Counts, idf: Mapping[Ngram, float]):
    vector: List[Dict[Ngram, float]] = []
    norm = []
    for order in counts:
        weights = {gram: float(term_freq) * idf[gram] for gram, term_freq in order.items()}
        vector.append(weights)
        norm.append(math.hypot(*weights.values()))
    return vector, norm, sum(counts[1].values())


def cider_d(candidate: str, references: Sequence[str], df: Mapping[Ngram, float], images: int) -> float:
    """The caption's CIDEr-D; `images` is the number of images whose references made `df`."""
    return cider_d_of_samples([candidate], references, df, images)[0]


def cider_d_of_samples(candidates: Sequence[str], references: Sequence[str], df: Mapping[Ngram, float],
                       images: int) -> List[float]:
    """CIDEr-D of several captions of one image (self-critical samples), its references' vectors built once."""
    return cider_d_of_counts([ngram_counts(c) for c in candidates], [ngram_counts(r) for r in references], df,
                             images)


def cider_d_of_counts(candidates: Sequence[Counts], references: Sequence[Counts], df: Mapping[Ngram, float],
                      images: int, shared_df: Mapping[Ngram, float] = EMPTY) -> List[float]:
    """`cider_d_of_samples` of sentences already counted (ngrams.counts); an n-gram not in `df` is looked up in
    `shared_df` (the caption job's table of frequent n-grams, behind an image's own rare ones)."""
    log_images = math.log(float(images))
    grams = {gram for sentence in (*candidates, *references) for order in sentence for gram in order}
    idf = {gram: log_images - math.log(max(1.0, df.get(gram) or shared_df.get(gram, 0.0)))
           for gram in grams}  # one df look-up an n-gram
    refs = [_vector(reference, idf) for reference in references]
    scores = []
    for candidate in candidates:
        vector, norm, length = _vector(candidate, idf)
        total = [0.0] * ORDERS
        for ref_vector, ref_norm, ref_length in refs:
            penalty = math.e ** (-(float(length - ref_length) ** 2) / (2 * SIGMA ** 2))
            for n in range(ORDERS):
                ours, theirs = vector[n], ref_vector[n]
                value = sum(min(ours[gram], theirs[gram]) * theirs[gram] for gram in ours.keys() & theirs.keys())
                if norm[n] != 0 and ref_norm[n] != 0:
                    value /= norm[n] * ref_norm[n]
                total[n] += value * penalty
        scores.append(sum(total) / ORDERS / len(references) * 10.0)
    return scores
