"""The field's scores equal the official COCO caption evaluation (pycocoevalcap 1.2) on the same captions.

Hold one reference out per image as the caption to score, against the image's other references: no model
is needed, and the captions are real ones (the demo scenes' always, Flickr8k's test split when ../shared is
there). BLEU, ROUGE-L and CIDEr-D must agree to 1e-6, METEOR to 1e-4 (it is summed from per-caption
statistics here, scored from all of them at once there).
"""
import os
import random

import pytest

from captioner.input_files import captions
from captioner.metrics import cider, meteor, ptb, report
from tests import coco_eval
from tests.conftest import SHARED_DIR
from tools import demo_data


def _held_out(references_by_image):
    gts = {i: [{"caption": c} for c in refs[1:]] for i, refs in references_by_image.items()}
    res = {i: [{"caption": refs[0]}] for i, refs in references_by_image.items()}
    return gts, res


def _ours(gts, res, meteor_process):
    ids = sorted(gts)
    flat = [c["caption"] for i in ids for c in gts[i]]
    tokenized, hypotheses = iter(ptb.tokenize(flat)), ptb.tokenize([res[i][0]["caption"] for i in ids])
    references = {i: [next(tokenized) for _ in gts[i]] for i in ids}
    df = cider.document_frequencies(references.values())
    totals = report.Totals()
    for i, hypothesis in zip(ids, hypotheses):
        totals.add(report.caption_scores(hypothesis, references[i], df, len(ids),
                                         meteor_process.stats(hypothesis, references[i])))
    return totals, references, dict(zip(ids, hypotheses))


def _compare(coco_scorers, references_by_image):
    gts, res = _held_out(references_by_image)
    tok_gts, tok_res = coco_scorers["tokenizer"].tokenize(gts), coco_scorers["tokenizer"].tokenize(res)
    process = meteor.Meteor()
    try:
        totals, our_refs, our_hyps = _ours(gts, res, process)
        # split into two halves and merged: the combine's accumulators may meet in any grouping
        ids = sorted(gts)
        halves = [report.Totals(), report.Totals()]
        df = cider.document_frequencies(our_refs.values())
        for n, i in enumerate(ids):
            halves[n % 2].add(report.caption_scores(our_hyps[i], our_refs[i], df, len(ids),
                                                    process.stats_of_many([(our_hyps[i], our_refs[i])])[0]))
        merged = report.Totals(halves[0].state()).merge(report.Totals(halves[1].state()))
        scores = totals.corpus(process)
        assert merged.corpus(process) == pytest.approx(scores, abs=1e-12)
    finally:
        process.close()
    assert our_refs == tok_gts and {i: [h] for i, h in our_hyps.items()} == tok_res  # the same tokenization
    expected = coco_eval.score_tokenized(coco_scorers, tok_gts, tok_res)
    for name, value in expected.items():
        tolerance = coco_eval.TOLERANCE.get(name, coco_eval.DEFAULT_TOLERANCE)
        assert scores[name] == pytest.approx(value, abs=tolerance), (name, scores[name], value)
    return scores


@pytest.mark.slow
def test_equal_to_pycocoevalcap_on_the_demo_captions(coco_scorers, tmp_path):
    demo_data.generate(str(tmp_path), num_images=240, seed=3)
    references = captions.read_captions(str(tmp_path / demo_data.CAPTIONS_FILE))
    scores = _compare(coco_scorers, references)
    assert 0 < scores["CIDEr-D"] and 0 < scores["METEOR"] < 1


@pytest.mark.slow
def test_equal_to_pycocoevalcap_on_flickr8k_test_references(coco_scorers):
    flickr = os.path.join(SHARED_DIR, "data", "flickr8k")
    if not os.path.isdir(flickr):
        pytest.skip(f"needs the real data in {flickr} (../shared beside the project), which is absent here")
    references = captions.read_captions(os.path.join(flickr, "Flickr8k.token.txt"))
    test = captions.read_split_ids(os.path.join(flickr, "Flickr_8k.testImages.txt"))[:300]
    scores = _compare(coco_scorers, {i: references[i] for i in test})
    assert 0.1 < scores["BLEU-4"] < 0.5


@pytest.mark.slow
def test_awkward_captions_score_as_pycocoevalcap_scores_them(coco_scorers):
    """Empty and one-word captions, words no reference has, repeated words, references of one word."""
    rng = random.Random(7)
    words = "a dog runs on the grass two cats sleep in sun".split()
    references = {}
    for n in range(60):
        refs = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))) for _ in range(rng.randint(2, 5))]
        candidate = rng.choice(["", "zebra", "dog dog dog dog", " ".join(rng.choice(words) for _ in range(6))])
        references[f"img{n:03d}"] = [candidate] + refs
    _compare(coco_scorers, references)
