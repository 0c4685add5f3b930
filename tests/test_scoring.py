"""The caption job's scoring transform: every row's CIDEr-D and the corpus scores are pycocoevalcap's, whichever
n-grams' document frequencies come by the bounded side input and whichever by the join."""
import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that

from captioner import text
from captioner.input_files import captions
from pipelines.caption.scoring import ScoreCaptions
from tools import demo_data

CLEANING = "keep_articles"


@pytest.fixture(scope="module")
def held_out_rows(tmp_path_factory):
    """Rows as the caption job makes them: each image's first demo caption stands in for the model's."""
    folder = tmp_path_factory.mktemp("demo")
    demo_data.generate(str(folder), num_images=120, seed=5)
    references = captions.read_captions(str(folder / demo_data.CAPTIONS_FILE))
    rows = [{"image_id": image_id, "caption": text.clean_caption(raw[0], CLEANING), "raw_references": raw[1:]}
            for image_id, raw in sorted(references.items())]
    rows.append({"image_id": "no_references.jpg", "caption": "a dog", "raw_references": []})
    return rows


def _official(rows, coco_scorers):
    """pycocoevalcap's CIDEr-D of each row with references, and of the corpus (project tokenization)."""
    scored = [row for row in rows if row["raw_references"]]
    gts = {row["image_id"]: [text.clean_caption(r, CLEANING) for r in row["raw_references"]] for row in scored}
    res = {row["image_id"]: [row["caption"]] for row in scored}
    corpus, each = coco_scorers["cider"].compute_score(gts, res)
    return dict(zip(gts, each)), corpus


def _equal_rows(expected):
    def check(rows):
        found = {row["image_id"]: row["cider_d"] for row in rows}
        assert found.pop("no_references.jpg") is None and set(found) == set(expected)
        for image_id, value in expected.items():
            assert found[image_id] == pytest.approx(value, abs=1e-9), image_id
    return check


def _equal_corpus(expected):
    def check(metrics):
        (summary,) = metrics
        assert summary["tokenizations"]["project"]["scores"]["CIDEr-D"] == pytest.approx(expected, abs=1e-9)
    return check


@pytest.mark.parametrize("frequent_ngrams", [1, 40, 1_000_000])
def test_every_rows_cider_d_is_pycocoevalcaps_however_the_df_is_split(held_out_rows, frequent_ngrams,
                                                                       coco_scorers):
    per_row, corpus = _official(held_out_rows, coco_scorers)
    assert len({round(v, 6) for v in per_row.values()}) > 10  # the captions do score differently
    with beam.Pipeline() as pipeline:
        scored = (pipeline | beam.Create(held_out_rows)
                  | ScoreCaptions(CLEANING, with_meteor=False, frequent_ngrams=frequent_ngrams))
        assert_that(scored["rows"], _equal_rows(per_row), label="Rows")
        assert_that(scored["metrics"], _equal_corpus(corpus), label="Metrics")
