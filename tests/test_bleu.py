"""captioner.metrics.bleu and the caption job's combine of BLEU statistics (score_totals) agree with nltk's corpus_bleu.

nltk is the reference: random corpora over a tiny vocabulary (so 3- and
4-gram matches happen), 0-12 tokens per sentence, 1-5 references each, plus the
edge cases where nltk does something surprising (empty hypotheses, no matches
of some order, no matches at all).
"""
import random
import warnings

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that
from nltk.translate import bleu_score as nltk_bleu

from captioner.metrics import bleu
from pipelines.caption import score_totals
from tests.conftest import in_process_pipeline

WEIGHTS = [(1.0,), (1 / 2, 1 / 2), (1 / 3, 1 / 3, 1 / 3), (1 / 4, 1 / 4, 1 / 4, 1 / 4)]
VOCAB = ["a", "dog", "runs", "on", "the", "grass"]
TOL = 1e-9


def nltk_corpus(list_of_references, hypotheses):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # method0 warns on every order without matches
        return [float(nltk_bleu.corpus_bleu(list_of_references, hypotheses, weights=w)) for w in WEIGHTS]


def random_sentence(rng, max_len=12):
    length = rng.choice([0, 1, 2, 3, 4]) if rng.random() < 0.25 else rng.randint(0, max_len)
    return [rng.choice(VOCAB) for _ in range(length)]


def random_corpus(seed, size=300):
    rng = random.Random(seed)
    refs = [[random_sentence(rng) for _ in range(rng.randint(1, 5))] for _ in range(size)]
    hyps = [random_sentence(rng) for _ in range(size)]
    return refs, hyps


def assert_close(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a == pytest.approx(e, abs=TOL, rel=TOL), (actual, expected)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_corpus_bleu_equals_nltk_on_random_corpora(seed):
    refs, hyps = random_corpus(seed)
    expected = nltk_corpus(refs, hyps)
    assert expected[3] > 0.01, "the corpus should have real 4-gram matches"
    assert_close(bleu.corpus_bleu(refs, hyps), expected)


@pytest.mark.parametrize("seed", [10, 11])
def test_sentence_stats_match_nltk_pieces(seed):
    refs, hyps = random_corpus(seed, size=200)
    for references, hypothesis in zip(refs, hyps):
        stats = bleu.sentence_stats(references, hypothesis)
        for n in range(1, 5):
            p = nltk_bleu.modified_precision(references, hypothesis, n)
            assert (stats[n - 1], stats[4 + n - 1]) == (p.numerator, p.denominator)
        assert stats[8] == len(hypothesis)
        assert stats[9] == nltk_bleu.closest_ref_length(references, len(hypothesis))


def test_closest_reference_ties_go_to_the_shorter_one():
    refs = [["a"] * 7, ["a"] * 3]
    assert bleu.sentence_stats(refs, ["a"] * 5)[9] == 3
    assert bleu.sentence_stats(list(reversed(refs)), ["a"] * 5)[9] == 3


def test_empty_hypothesis_in_corpus_still_counts_in_every_denominator():
    refs = [[["a", "dog", "runs", "on", "grass"]], [["the", "dog"]]]
    hyps = [["a", "dog", "runs", "on", "grass"], []]
    stats = bleu.corpus_bleu(refs, hyps)
    assert_close(stats, nltk_corpus(refs, hyps))
    # nltk counts the empty sentence as one n-gram of each order, so BLEU-1 < 1.
    assert stats[0] < 1.0


def test_only_empty_hypotheses_score_zero():
    refs, hyps = [[["a", "dog"]], [["the"]]], [[], []]
    assert bleu.corpus_bleu(refs, hyps) == [0.0] * 4 == nltk_corpus(refs, hyps)


def test_all_hypotheses_shorter_than_four_tokens():
    rng = random.Random(7)
    refs = [[random_sentence(rng) for _ in range(3)] for _ in range(200)]
    hyps = [[rng.choice(VOCAB) for _ in range(rng.randint(1, 3))] for _ in range(200)]
    result = bleu.corpus_bleu(refs, hyps)
    expected = nltk_corpus(refs, hyps)
    assert_close(result, expected)
    # No 4-gram exists at all: nltk's method0 gives a tiny positive number, not 0.
    assert 0.0 < result[3] < 1e-30 and result[3] == pytest.approx(expected[3], rel=1e-12)


def test_no_matches_at_all():
    refs = [[["a", "dog", "runs"]], [["on", "the", "grass"]]]
    hyps = [["cat", "sleeps"], ["bird", "flies", "high", "up", "there"]]
    assert bleu.corpus_bleu(refs, hyps) == [0.0] * 4 == nltk_corpus(refs, hyps)


def test_identical_hypothesis_and_reference_score_one():
    refs, hyps = random_corpus(3, size=50)
    hyps = [r[0] for r in refs]
    hyps[0] = ["a", "dog", "runs", "on", "the", "grass"]  # at least one sentence with a 4-gram
    refs[0] = [hyps[0]]
    result = bleu.corpus_bleu(refs, hyps)
    assert_close(result, nltk_corpus(refs, hyps))
    one = bleu.corpus_bleu([[["a", "dog", "runs", "on", "the", "grass"]]], [["a", "dog", "runs", "on", "the", "grass"]])
    assert one == [1.0, 1.0, 1.0, 1.0]


def test_stats_are_validated():
    with pytest.raises(ValueError, match="at least one reference"):
        bleu.sentence_stats([], ["a"])
    with pytest.raises(ValueError, match="2\\*N\\+2"):
        bleu.corpus_bleu_from_stats([1, 2, 3])


def test_sentence_bleu_is_nltk_method1():
    refs, hyps = random_corpus(5, size=40)
    smooth = nltk_bleu.SmoothingFunction().method1
    for references, hypothesis in zip(refs, hyps):
        expected = nltk_bleu.sentence_bleu(references, hypothesis, smoothing_function=smooth)
        assert bleu.sentence_bleu(references, hypothesis) == pytest.approx(expected, abs=TOL)


def one(pair):
    """A caption's statistics as the job's scoring emits them."""
    totals = score_totals.Totals(())
    totals.add_bleu(bleu.sentence_stats(*pair))
    return totals.state()


def fold(fn, pairs):
    accumulator = fn.create_accumulator()
    for pair in pairs:
        accumulator = fn.add_input(accumulator, one(pair))
    return accumulator


def tree_merge(fn, accumulators):
    while len(accumulators) > 1:
        accumulators = [fn.merge_accumulators(accumulators[i:i + 2]) for i in range(0, len(accumulators), 2)]
    return accumulators[0]


@pytest.mark.parametrize("chunk", [1, 7, 50])
def test_combine_fn_any_bundling_equals_nltk(chunk):
    refs, hyps = random_corpus(chunk + 100)
    pairs = list(zip(refs, hyps))
    expected = nltk_corpus(refs, hyps)
    fn = score_totals.TotalsFn(())
    partials = [fold(fn, pairs[i:i + chunk]) for i in range(0, len(pairs), chunk)]
    shuffled = list(partials)
    random.Random(chunk).shuffle(shuffled)
    merges = [
        fn.merge_accumulators(list(partials)),
        fn.merge_accumulators(list(reversed(partials))),
        tree_merge(fn, list(shuffled)),
        fn.merge_accumulators([fn.merge_accumulators(shuffled[::2]),
                               fn.create_accumulator(),
                               fn.merge_accumulators(shuffled[1::2])]),
    ]
    for merged in merges:
        out = score_totals.corpus_bleu(fn.extract_output(merged))
        assert_close(out["bleu"], expected)
        assert out["sentences"] == len(pairs)
        assert out["hypothesis_length"] == sum(len(h) for h in hyps)


def test_beam_combine_globally_equals_nltk():
    refs, hyps = random_corpus(42, size=400)
    expected = nltk_corpus(refs, hyps)
    pairs = list(zip(refs, hyps))

    def matches_nltk(outputs):
        assert len(outputs) == 1
        out = outputs[0]
        assert_close(out["bleu"], expected)
        assert out["sentences"] == len(pairs)
        assert out["hypothesis_length"] == sum(len(h) for h in hyps)
        assert out["reference_length"] == sum(nltk_bleu.closest_ref_length(r, len(h)) for r, h in pairs)

    with in_process_pipeline() as p:
        scores = (p | beam.Create(pairs) | beam.Map(one) | beam.CombineGlobally(score_totals.TotalsFn(()))
                  | beam.Map(score_totals.corpus_bleu))
        assert_that(scores, matches_nltk)


def test_beam_combine_globally_on_empty_input():
    def is_empty_score(outputs):
        assert outputs == [{"bleu": None, "sentences": 0, "hypothesis_length": 0, "reference_length": 0}]

    with in_process_pipeline() as p:
        scores = (p | beam.Create([], reshuffle=False) | beam.CombineGlobally(score_totals.TotalsFn(()))
                  | beam.Map(score_totals.corpus_bleu))
        assert_that(scores, is_empty_score)
