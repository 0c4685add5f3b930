"""A sentence's 1- to 4-grams, counted once per order and keyed by 64-bit fingerprints.

BLEU (both flavours), CIDEr-D and the caption job's document frequencies all count the same n-grams; a
fingerprint is an int, so counting, dict look-ups and the job's shuffles by n-gram cost less than with tuples
of words (an n-gram travels as 9 bytes, not its words). A word's fingerprint is its BLAKE2b-64 digest (the
same in every process, unlike a str's hash()); an n-gram's is CPython's hash of the tuple (its first n-1
words' fingerprint, its last word's), which for ints is the same in every process too (only str and bytes
hashes are salted), and costs a third of 64-bit arithmetic in Python. Two different n-grams meet one
fingerprint with odds ~n^2 / 2^64: for the 10^7 distinct n-grams of a large set, one in a few million runs.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from typing import Dict, Iterable, List, Sequence, Set

ORDERS = 4
_CACHE_LIMIT = 200_000  # words whose fingerprints are kept; the cache starts again past it
_words: Dict[str, int] = {}


def word_fingerprint(word: str) -> int:
    known = _words.get(word)
    if known is None:
        if len(_words) >= _CACHE_LIMIT:
            _words.clear()
        known = _words[word] = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
    return known


def _orders(tokens: Sequence[str], orders: int) -> List[List[int]]:
    """Per order n=1..`orders`: the sentence's n-gram fingerprints in order, repeats included."""
    words = [_words.get(word) or word_fingerprint(word) for word in tokens]
    per_order, grams = [words], words
    for n in range(1, orders):
        grams = list(map(hash, zip(grams, words[n:])))
        per_order.append(grams)
    return per_order


def counts(tokens: Sequence[str], orders: int = ORDERS) -> List[Counter]:
    """Per order n=1..`orders`: a Counter of the sentence's n-gram fingerprints."""
    return [Counter(grams) for grams in _orders(tokens, orders)]


def distinct(sentences: Iterable[Sequence[str]], orders: int = ORDERS) -> Set[int]:
    """Every n-gram fingerprint of any order in any of the sentences, each once (no counting)."""
    found: Set[int] = set()
    for tokens in sentences:
        for grams in _orders(tokens, orders):
            found.update(grams)
    return found
