"""Caption cleaning and the vocabulary file: one implementation for training and for scoring.

Two cleanings (`text.cleaning` at extraction; the manifest and the bundle record which):
- `tutorial`, the classic Flickr8k tutorials': lowercase, strip punctuation,
  drop one-letter tokens and tokens that are not purely alphabetic. The model
  never learns "a", so its captions read "dog runs on the beach".
- `keep_articles`: the same, but one-letter words ("a") are kept, so captions
  read as sentences, as the references scored by the captioning papers do.
The same `clean_caption` produces the training targets and the references of
the project's own scores, so the two can never drift apart. Tokenization is a
plain split on whitespace of the cleaned text (no nltk data download needed).
"""
from __future__ import annotations

import re
from typing import Iterable, List, Mapping, Sequence, Tuple

PAD = "<pad>"
OOV = "<unk>"
START = "<start>"
END = "<end>"
SPECIAL_TOKENS = (PAD, OOV, START, END)
PAD_ID, OOV_ID, START_ID, END_ID = range(len(SPECIAL_TOKENS))  # ids in the decoder's token table

TUTORIAL, KEEP_ARTICLES = "tutorial", "keep_articles"
CLEANINGS = (TUTORIAL, KEEP_ARTICLES)
LEGACY_CLEANING = TUTORIAL  # what features and bundles written before text.cleaning existed were cleaned with
_PUNCTUATION = re.compile(r"[^\w\s]")
_SHORTEST = {TUTORIAL: 2, KEEP_ARTICLES: 1}  # letters a kept word needs


def tokenize(text: str, cleaning: str) -> List[str]:
    """Cleaned tokens of a raw caption.

    Splits on whitespace, then strips punctuation inside each word (so "dog's"
    becomes "dogs", as the tutorials' `str.translate` does), then keeps ASCII
    alphabetic words (of two letters or more with the tutorial's cleaning).
    """
    shortest = _SHORTEST[cleaning]
    words = []
    for raw in text.lower().split():
        word = _PUNCTUATION.sub("", raw)
        if len(word) >= shortest and word.isalpha() and word.isascii():
            words.append(word)
    return words


def clean_caption(text: str, cleaning: str) -> str:
    """The cleaned caption as space-joined tokens (may be empty)."""
    return " ".join(tokenize(text, cleaning))


def count_words(cleaned_captions: Iterable[str]) -> Mapping[str, int]:
    counts: dict = {}
    for caption in cleaned_captions:
        for word in caption.split():
            counts[word] = counts.get(word, 0) + 1
    return counts


def vocabulary_lines(word_counts: Mapping[str, int], min_count: int) -> List[str]:
    """Vocabulary file lines `word<TAB>count`, most frequent first, ties by word (deterministic)."""
    kept = [(w, c) for w, c in word_counts.items() if c >= min_count and w not in SPECIAL_TOKENS]
    kept.sort(key=lambda wc: (-wc[1], wc[0]))
    return [f"{word}\t{count}" for word, count in kept]


def parse_vocabulary(text: str) -> List[Tuple[str, int]]:
    """Reads a vocabulary file written from `vocabulary_lines`."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        word, sep, count = line.partition("\t")
        if not sep or not count.strip().isdigit():
            raise ValueError(f"vocabulary line {number} is not 'word<TAB>count': {line!r}")
        entries.append((word, int(count)))
    return entries


def decoder_tokens(vocabulary_words: Sequence[str]) -> List[str]:
    """The decoder's token table: special tokens first (PAD is id 0), then the words."""
    return list(SPECIAL_TOKENS) + [w for w in vocabulary_words if w not in SPECIAL_TOKENS]
