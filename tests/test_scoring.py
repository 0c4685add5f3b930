"""The caption job's one scoring path: every row's CIDEr-D and the corpus scores are pycocoevalcap's, whichever
n-grams' document frequencies come by the bounded side input and whichever by the join; bleu.json's BLEU is
nltk's over the very references metrics.json scores."""
import warnings

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that
from nltk.translate import bleu_score as nltk_bleu

from captioner import text
from captioner.input_files import captions
from pipelines.caption.scoring import ScoreCaptions
from tests.conftest import in_process_pipeline
from tools import demo_data

CLEANING = "keep_articles"
CYRILLIC, CJK, PUNCTUATION = "Собака бежит по траве", "一只狗在草地上跑", "!!! ..."  # each cleans to nothing


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


def _cleaned(rows):
    """Each row with references left after the project's cleaning -> those references."""
    cleaned = {row["image_id"]: [c for c in (text.clean_caption(r, CLEANING) for r in row["raw_references"]) if c]
               for row in rows}
    return {image_id: references for image_id, references in cleaned.items() if references}


def _official(rows, coco_scorers):
    """pycocoevalcap's CIDEr-D of each row with references, and of the corpus (project tokenization)."""
    gts = _cleaned(rows)
    res = {row["image_id"]: [row["caption"]] for row in rows if row["image_id"] in gts}
    corpus, each = coco_scorers["cider"].compute_score(gts, res)
    return dict(zip(gts, each)), corpus


def _equal_rows(expected):
    def check(rows):
        found = {row["image_id"]: row["cider_d"] for row in rows}
        assert set(found) - set(expected) == {"no_references.jpg"} and found["no_references.jpg"] is None
        for image_id, value in expected.items():
            assert found[image_id] == pytest.approx(value, abs=1e-9), image_id
    return check


def _equal_corpus(expected):
    def check(metrics):
        (summary,) = metrics
        assert summary["tokenizations"]["project"]["scores"]["CIDEr-D"] == pytest.approx(expected, abs=1e-9)
    return check


@pytest.mark.slow
@pytest.mark.parametrize("frequent_ngrams", [1, 1_000_000])
def test_every_rows_cider_d_is_pycocoevalcaps_however_the_df_is_split(held_out_rows, frequent_ngrams,
                                                                       coco_scorers):
    per_row, corpus = _official(held_out_rows, coco_scorers)
    assert len({round(v, 6) for v in per_row.values()}) > 10  # the captions do score differently
    with in_process_pipeline() as pipeline:
        scored = (pipeline | beam.Create(held_out_rows)
                  | ScoreCaptions(CLEANING, with_meteor=False, frequent_ngrams=frequent_ngrams))
        assert_that(scored["rows"], _equal_rows(per_row), label="Rows")
        assert_that(scored["metrics"], _equal_corpus(corpus), label="Metrics")


def _nltk(rows, cleaned):
    hypotheses = [row["caption"].split() for row in rows if row["image_id"] in cleaned]
    references = [[r.split() for r in cleaned[row["image_id"]]] for row in rows if row["image_id"] in cleaned]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [nltk_bleu.corpus_bleu(references, hypotheses, weights=[1 / n] * n) for n in range(1, 5)]


def _coco_bleu(coco_scorers, gts, res):
    return coco_scorers["bleu"].compute_score(gts, {i: res[i] for i in gts}, verbose=0)[0]


@pytest.mark.slow
def test_bleu_json_and_metrics_json_score_the_same_references(held_out_rows, coco_scorers):
    """A reference in another script cleans to nothing: dropped from the project's BLEU in bleu.json and
    metrics.json alike (an image left with none is scored by neither), kept by the COCO tokenization."""
    rows = [dict(row, raw_references=row["raw_references"] + [CYRILLIC, PUNCTUATION]) if n % 3 == 0 else row
            for n, row in enumerate(held_out_rows)]
    rows.append({"image_id": "only_chinese.jpg", "caption": "a dog", "raw_references": [CJK]})
    cleaned = _cleaned(rows)
    res = {row["image_id"]: [row["caption"]] for row in rows}
    project = {"BLEU": _coco_bleu(coco_scorers, cleaned, res), "CIDEr-D": _official(rows, coco_scorers)[1]}
    with_empty = {i: refs + [""] for i, refs in cleaned.items()}
    assert coco_scorers["cider"].compute_score(with_empty, {i: res[i] for i in cleaned})[0] != pytest.approx(
        project["CIDEr-D"], abs=1e-6)  # keeping the empty references would show
    raw = {row["image_id"]: [{"caption": r} for r in row["raw_references"]] for row in rows if row["image_id"] in cleaned}
    tokenized = coco_scorers["tokenizer"].tokenize(raw)
    coco_res = coco_scorers["tokenizer"].tokenize({i: [{"caption": res[i][0]}] for i in raw})
    coco = {"BLEU": _coco_bleu(coco_scorers, tokenized, coco_res),
            "CIDEr-D": coco_scorers["cider"].compute_score(tokenized, coco_res)[0]}
    assert any(CYRILLIC.lower() in " ".join(refs) for refs in tokenized.values())

    def check_bleu(bleu_json):
        (scores,) = bleu_json
        assert scores["sentences"] == len(cleaned) == len(held_out_rows) - 1
        assert scores["bleu"] == pytest.approx(_nltk(rows, cleaned), abs=1e-9)

    def check_metrics(metrics):
        (summary,) = metrics
        ours = summary["tokenizations"]
        assert [ours["project"]["scores"][f"BLEU-{n}"] for n in range(1, 5)] == pytest.approx(project["BLEU"], abs=1e-9)
        assert ours["project"]["scores"]["CIDEr-D"] == pytest.approx(project["CIDEr-D"], abs=1e-9)
        assert [ours["coco"]["scores"][f"BLEU-{n}"] for n in range(1, 5)] == pytest.approx(coco["BLEU"], abs=1e-9)
        assert ours["coco"]["scores"]["CIDEr-D"] == pytest.approx(coco["CIDEr-D"], abs=1e-9)

    def check_rows(scored):
        found = {row["image_id"]: row for row in scored}
        assert len(found) == len(rows) and found["only_chinese.jpg"]["sentence_bleu"] is None
        assert all(found[i]["references"] == refs for i, refs in cleaned.items())

    with in_process_pipeline() as pipeline:
        scored = pipeline | beam.Create(rows) | ScoreCaptions(CLEANING, with_meteor=False)
        assert_that(scored["bleu"], check_bleu, label="Bleu")
        assert_that(scored["metrics"], check_metrics, label="Metrics")
        assert_that(scored["rows"], check_rows, label="Rows")
