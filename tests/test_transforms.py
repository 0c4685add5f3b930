"""The Beam transforms one by one, on TestPipeline with assert_that: fast, no model, no training."""
import os

import numpy as np
import pytest
from apache_beam import Create, Map, ParDo, pvalue
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.testing.util import assert_that, equal_to
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from captioner import schema
from pipelines import inputs
from pipelines.caption.graph import MakeRow
from pipelines.extract.graph import AssembleRecord
from tests import image_zoo
from tests.conftest import in_process_pipeline


def _png(path, colour=(200, 30, 30)) -> str:
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 6), colour).save(path, "PNG")
    return path


def test_match_images_finds_every_file_of_a_recursive_glob(tmp_path):
    paths = sorted(_png(str(tmp_path / name)) for name in ("a.png", "sub/b.png", "sub/deeper/c.png"))
    with in_process_pipeline() as p:
        assert_that(p | inputs.MatchImages(str(tmp_path / "**")), equal_to(paths))


def test_keep_first_per_id_dead_letters_the_later_duplicates():
    paths = ["/data/b/x.jpg", "/data/a/x.jpg", "/data/c/x.jpg", "/data/a/y.jpg"]
    with in_process_pipeline() as p:
        kept = p | Create(paths) | inputs.KeepFirstPerId()
        assert_that(kept.images, equal_to([("x.jpg", "/data/a/x.jpg"), ("y.jpg", "/data/a/y.jpg")]), label="kept")
        reasons = kept.dead_letter | Map(lambda d: (d["path"], d["stage"], d["reason"]))
        assert_that(reasons, equal_to([
            ("/data/b/x.jpg", "match", "duplicate image id 'x.jpg', kept /data/a/x.jpg"),
            ("/data/c/x.jpg", "match", "duplicate image id 'x.jpg', kept /data/a/x.jpg")]), label="dead")


def test_decode_images_routes_bad_files_to_dead_letters_with_their_reason(tmp_path):
    expected = image_zoo.write_image_zoo(str(tmp_path))
    chosen = [image_zoo.ALPHA_PNG, image_zoo.TRUNCATED_JPEG, image_zoo.HTML_PAGE, image_zoo.EMPTY]
    keyed = [(name, str(tmp_path / name)) for name in chosen] + [("gone.jpg", str(tmp_path / "gone.jpg"))]
    with in_process_pipeline() as p:
        decoded = p | Create(keyed) | inputs.DecodeImages((16, 16), max_pixels=10_000)
        shapes = decoded.images | Map(lambda e: (e[0], e[2].shape, str(e[2].dtype)))
        assert_that(shapes, equal_to([(image_zoo.ALPHA_PNG, (16, 16, 3), "uint8")]), label="decoded")

        def has_every_reason(dead):
            by_id = {d["image_id"]: d for d in dead}
            assert sorted(by_id) == sorted(chosen[1:] + ["gone.jpg"])
            for name in chosen[1:]:
                assert expected[name] in by_id[name]["reason"], by_id[name]
            assert by_id["gone.jpg"]["stage"] == "read" and by_id["gone.jpg"]["reason"].startswith("unreadable")

        assert_that(decoded.dead_letter, has_every_reason, label="dead")


def test_read_caption_pairs_reads_token_files_and_csv(tmp_path):
    token = tmp_path / "Flickr8k.token.txt"
    token.write_text("a.jpg#0\tA dog runs .\na.jpg#1\tThe dog, running\n\nb.jpg#0\tTwo cats\n", encoding="utf-8")
    table = tmp_path / "captions.csv"
    table.write_text('image,caption\na.jpg,"A dog, running"\nb.jpg,Two cats\n', encoding="utf-8")
    with in_process_pipeline() as p:
        assert_that(p | "Token" >> inputs.ReadCaptionPairs(str(token)), equal_to(
            [("a.jpg", "A dog runs ."), ("a.jpg", "The dog, running"), ("b.jpg", "Two cats")]), label="token")
        assert_that(p | "Csv" >> inputs.ReadCaptionPairs(str(table)), equal_to(
            [("a.jpg", "A dog, running"), ("b.jpg", "Two cats")]), label="csv")


def test_assemble_record_joins_captions_and_split_into_one_example():
    pooled = np.arange(4, dtype=np.uint8)
    spatial = np.arange(8, dtype=np.uint8).reshape(1, 2, 4)
    features = [(("a.jpg", "/d/a.jpg"), {"pooled": pooled, "spatial": spatial}),
                (("b.jpg", "/d/b.jpg"), {"pooled": pooled + 1, "spatial": spatial})]
    with in_process_pipeline() as p:
        captions = p | "Captions" >> Create([("a.jpg", ["The dog runs!", "A dog, running"])])
        splits = p | "Splits" >> Create([("a.jpg", "train")])
        assembled = (p | "Features" >> Create(features)
                     | ParDo(AssembleRecord(), pvalue.AsDict(captions), pvalue.AsDict(splits)).with_outputs(
                         "train_captions", main="records"))
        parsed = assembled.records | Map(lambda kv: (kv[0], schema.parse_example_py(kv[1])))
        summary = parsed | Map(lambda kv: (kv[0], kv[1]["image_id"], kv[1]["image_path"], kv[1]["captions"],
                                           kv[1]["raw_captions"], list(np.frombuffer(kv[1]["pooled"], np.uint8))))
        assert_that(summary, equal_to([
            ("train", "a.jpg", "/d/a.jpg", ["dog running", "the dog runs"], ["A dog, running", "The dog runs!"],
             [0, 1, 2, 3]),
            ("unsplit", "b.jpg", "/d/b.jpg", [], [], [1, 2, 3, 4])]), label="records")
        assert_that(assembled.train_captions, equal_to([["dog running", "the dog runs"]]), label="train")


@pytest.mark.parametrize("references", [["a dog runs on the grass", "the dog runs"], []])
def test_make_row_scores_each_caption_with_smoothed_sentence_bleu(references):
    element = (("a.jpg", "/d/a.jpg", None), PredictionResult(None, ("a dog runs", -1.5)))
    with in_process_pipeline() as p:
        refs = p | "Refs" >> Create([("a.jpg", references + [""])])  # an empty cleaned reference is dropped
        rows = p | Create([element]) | ParDo(MakeRow(), pvalue.AsDict(refs))

        def check(rows):
            (row,) = rows
            assert row["references"] == references and row["log_prob"] == -1.5
            if references:
                expected = sentence_bleu([r.split() for r in references], "a dog runs".split(),
                                         smoothing_function=SmoothingFunction().method1)
                assert row["sentence_bleu"] == pytest.approx(expected, abs=1e-12) and row["sentence_bleu"] > 0
            else:
                assert row["sentence_bleu"] is None

        assert_that(rows, check)
