"""CIDEr-D of one caption as pycocoevalcap computes it, given the document frequencies of the references.

tf-idf vectors of the 1- to 4-grams (raw counts x (log N - log df), N the images scored and df the images
whose references hold the n-gram), clipped cosine similarity with each reference, a Gaussian penalty on the
length difference (sigma 6; pycocoevalcap measures "length" in bigrams, kept here), the mean over orders and
references, times 10. The corpus score is the mean over captions. The document frequencies are the only
thing that needs the whole set: the caption job computes them with a combine and joins them back by n-gram.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Dict, Iterable, List, Mapping, Sequence, Set, Tuple

ORDERS = 4
SIGMA = 6.0
Ngram = Tuple[str, ...]


def ngram_counts(sentence: str) -> Counter:
    words = sentence.split()
    return Counter(tuple(words[i:i + n]) for n in range(1, ORDERS + 1) for i in range(len(words) - n + 1))


def reference_ngrams(references: Sequence[str]) -> Set[Ngram]:
    """The n-grams of an image's references, each once: what the image adds to the document frequencies."""
    return {gram for reference in references for gram in ngram_counts(reference)}


def needed_ngrams(candidate: str, references: Sequence[str]) -> Set[Ngram]:
    """Every n-gram whose document frequency the caption's score needs."""
    return set(ngram_counts(candidate)) | reference_ngrams(references)


def document_frequencies(all_references: Iterable[Sequence[str]]) -> Dict[Ngram, int]:
    """df over a whole set held in memory (the trainer's dev and train splits; the job uses a combine)."""
    frequencies: Counter = Counter()
    for references in all_references:
        frequencies.update(reference_ngrams(references))
    return dict(frequencies)


def _vector(counts: Counter, df: Mapping[Ngram, float], log_images: float):
    vector: List[Dict[Ngram, float]] = [{} for _ in range(ORDERS)]
    norm = [0.0] * ORDERS
    length = 0
    for gram, term_freq in counts.items():
        order = len(gram) - 1
        weight = float(term_freq) * (log_images - math.log(max(1.0, df.get(gram, 0.0))))
        vector[order][gram] = weight
        norm[order] += weight ** 2
        if order == 1:
            length += term_freq
    return vector, [math.sqrt(value) for value in norm], length


def cider_d(candidate: str, references: Sequence[str], df: Mapping[Ngram, float], images: int) -> float:
    """The caption's CIDEr-D; `images` is the number of images whose references made `df`."""
    return cider_d_of_samples([candidate], references, df, images)[0]


def cider_d_of_samples(candidates: Sequence[str], references: Sequence[str], df: Mapping[Ngram, float],
                       images: int) -> List[float]:
    """CIDEr-D of several captions of one image (self-critical samples), its references' vectors built once."""
    log_images = math.log(float(images))
    refs = [_vector(ngram_counts(reference), df, log_images) for reference in references]
    scores = []
    for candidate in candidates:
        vector, norm, length = _vector(ngram_counts(candidate), df, log_images)
        total = [0.0] * ORDERS
        for ref_vector, ref_norm, ref_length in refs:
            penalty = math.e ** (-(float(length - ref_length) ** 2) / (2 * SIGMA ** 2))
            for n in range(ORDERS):
                value = sum(min(weight, ref_vector[n].get(gram, 0.0)) * ref_vector[n].get(gram, 0.0)
                            for gram, weight in vector[n].items())
                if norm[n] != 0 and ref_norm[n] != 0:
                    value /= norm[n] * ref_norm[n]
                total[n] += value * penalty
        scores.append(sum(total) / ORDERS / len(references) * 10.0)
    return scores
