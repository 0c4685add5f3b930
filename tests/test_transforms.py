"""The Beam transforms one by one, on TestPipeline with assert_that: fast, no model, no training."""
import hashlib
import json
import os

import numpy as np
import pytest
from apache_beam import Create, Map, ParDo
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.testing.util import assert_that, equal_to
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from captioner import schema, text
from captioner.input_files import captions as caption_files
from captioner.input_files import listings
from pipelines.caption.graph import MakeRow
from pipelines.caption.sample import GallerySample
from pipelines.caption.scoring import ScoreCaptions
from pipelines.extract.records import AssembleRecord, AssignSplit
from pipelines.inputs import joins
from pipelines.inputs import sources as read
from pipelines.inputs.dead_letters import DEAD_LETTER
from pipelines.inputs.decode import DecodeImages
from tests import field_formats, image_zoo
from tests.conftest import in_process_pipeline


def _png(path) -> str:
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 6), (200, 30, 30)).save(path, "PNG")
    return str(path)


def test_images_from_a_glob_are_keyed_by_their_path_below_its_fixed_prefix(tmp_path):
    paths = [_png(tmp_path / name) for name in ("2019/IMG_0001.jpg", "2020/IMG_0001.jpg", "top.jpg")]
    with in_process_pipeline() as p:
        assert_that(p | read.ImagesFromPattern(str(tmp_path / "**")), equal_to(
            [("2019/IMG_0001.jpg", paths[0]), ("2020/IMG_0001.jpg", paths[1]), ("top.jpg", paths[2])]))


@pytest.mark.slow
def test_listing_files_in_three_formats_give_ids_paths_and_captions(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "plain.txt").write_text("\ufeffa/x.jpg\r\n\r\ngs://bucket/y.jpg\n", encoding="utf-8")
    (tmp_path / "table.csv").write_text("caption,path\nA dog.,b.jpg\nTwo dogs,b.jpg\n,c.jpg\n", encoding="utf-8")
    (tmp_path / "rows.jsonl").write_text('{"path": "d.jpg", "captions": ["one", "two"]}\nnot json\n{"id": 3}\n',
                                         encoding="utf-8")
    with in_process_pipeline() as p:
        plain = p | "Plain" >> read.ImagesFromListing(str(tmp_path / "lists" / "*.txt"))
        table = p | "Table" >> read.ImagesFromListing(str(tmp_path / "table.csv"))
        rows = p | "Rows" >> read.ImagesFromListing(str(tmp_path / "rows.jsonl"))
        assert_that(plain["images"], equal_to([("a/x.jpg", str(tmp_path / "lists" / "a" / "x.jpg")),
                                               ("gs://bucket/y.jpg", "gs://bucket/y.jpg")]), label="plain")
        assert_that(table["images"], equal_to([("b.jpg", str(tmp_path / "b.jpg")), ("c.jpg", str(tmp_path / "c.jpg"))]),
                    label="table")
        assert_that(table["captions"], equal_to([("b.jpg", "A dog."), ("b.jpg", "Two dogs")]), label="csv captions")
        assert_that(rows["captions"], equal_to([("d.jpg", "one"), ("d.jpg", "two")]), label="jsonl captions")
        assert_that(rows[read.BAD_LINES], equal_to(["not json", '{"id": 3}']), label="refused lines")


def test_join_by_name_gives_each_image_its_data_and_reports_ambiguous_names(tmp_path):
    images = [("2019/a.jpg", "/p/2019/a.jpg"), ("2020/a.jpg", "/p/2020/a.jpg"), ("b.jpg", "/p/b.jpg"),
              ("c/c.jpg", "/p/c/c.jpg"), ("d/d.jpg", "/p/d/d.jpg"), ("e/d.jpg", "/p/e/d.jpg")]
    with in_process_pipeline() as p:
        captions = p | "Captions" >> Create([("a.jpg", "an a"), ("b.jpg", "a b"), ("b.jpg", "b again"),
                                             ("gone.jpg", "no image")])
        joined = p | Create(images) | joins.JoinByName(listings.BY_NAME, ambiguous_tags=("captions",),
                                                       captions=captions)
        kept = joined.images | Map(lambda e: (e[0], sorted(e[2]["captions"])))
        assert_that(kept, equal_to([("b.jpg", ["a b", "b again"]), ("c/c.jpg", []), ("d/d.jpg", []),
                                    ("e/d.jpg", [])]), label="kept")  # d.jpg twice, but without captions: both kept

        def names_both_paths(dead):
            assert sorted(d["image_id"] for d in dead) == ["2019/a.jpg", "2020/a.jpg"]
            assert all("/p/2019/a.jpg" in d["reason"] and "/p/2020/a.jpg" in d["reason"] for d in dead)

        assert_that(joined[DEAD_LETTER], names_both_paths, label="dead")
        assert_that(joined[joins.ORPHANS], equal_to(["gone.jpg"]), label="orphans")


def test_join_by_name_keeps_only_included_images_and_counts_the_others():
    with in_process_pipeline() as p:
        include = p | "Include" >> Create([("x/a.jpg", True)])
        joined = (p | Create([("x/a.jpg", "/p/x/a.jpg"), ("x/b.jpg", "/p/x/b.jpg")])
                  | joins.JoinByName(listings.BY_ID, required="include", include=include))
        assert_that(joined.images | Map(lambda e: e[0]), equal_to(["x/a.jpg"]), label="kept")
        assert_that(joined[joins.EXCLUDED], equal_to(["x/b.jpg"]), label="excluded")


def test_drop_existing_is_an_anti_join_on_ids():
    with in_process_pipeline() as p:
        existing = p | "Existing" >> Create(["a", "c", "zzz"])
        kept = p | Create([("a", "/a"), ("b", "/b"), ("c", "/c")]) | joins.DropExisting(existing)
        assert_that(kept.images, equal_to([("b", "/b")]), label="new")
        assert_that(kept[joins.SKIPPED], equal_to(["a", "c"]), label="skipped")


def test_decode_images_routes_bad_files_to_dead_letters_with_their_reason(tmp_path):
    expected = image_zoo.write_image_zoo(str(tmp_path))
    chosen = [image_zoo.ALPHA_PNG, image_zoo.TRUNCATED_JPEG, image_zoo.HTML_PAGE, image_zoo.EMPTY]
    keyed = [(name, str(tmp_path / name), "payload") for name in chosen + ["gone.jpg"]]
    with in_process_pipeline() as p:
        decoded = p | Create(keyed) | DecodeImages((16, 16), max_pixels=10_000)
        shapes = decoded.images | Map(lambda e: (e[0], e[2], e[3].shape, str(e[3].dtype)))
        assert_that(shapes, equal_to([(image_zoo.ALPHA_PNG, "payload", (16, 16, 3), "uint8")]), label="decoded")

        def has_every_reason(dead):
            by_id = {d["image_id"]: d for d in dead}
            assert sorted(by_id) == sorted(chosen[1:] + ["gone.jpg"])
            for name in chosen[1:]:
                assert expected[name] in by_id[name]["reason"], by_id[name]
            assert by_id["gone.jpg"]["stage"] == "read" and by_id["gone.jpg"]["reason"].startswith("unreadable")

        assert_that(decoded[DEAD_LETTER], has_every_reason, label="dead")


def test_caption_files_with_a_bom_crlf_blank_lines_and_bad_lines(tmp_path):
    token = tmp_path / "Flickr8k.token.txt"
    token.write_bytes("\ufeffa.jpg#0\tA dog runs .\r\na.jpg#1\tThe dog, running\r\n\r\nno tab here\n"
                      "b.jpg#0\tTwo cats\n\n\n".encode("utf-8"))
    table = tmp_path / "captions.csv"
    table.write_text('\ufeffimage,caption\na.jpg,"A dog, running"\nb.jpg,Two cats\nlonely\n', encoding="utf-8")
    with in_process_pipeline() as p:
        tokens = p | "Token" >> read.ReadCaptionPairs(str(token))
        csv = p | "Csv" >> read.ReadCaptionPairs(str(table))
        assert_that(tokens["pairs"], equal_to(
            [("a.jpg", "A dog runs ."), ("a.jpg", "The dog, running"), ("b.jpg", "Two cats")]), label="token")
        assert_that(tokens[read.BAD_LINES], equal_to(["no tab here"]), label="token refused")
        assert_that(csv["pairs"], equal_to([("a.jpg", "A dog, running"), ("b.jpg", "Two cats")]), label="csv")
        assert_that(csv[read.BAD_LINES], equal_to(["lonely"]), label="csv refused")


@pytest.mark.slow
def test_coco_and_karpathy_files_give_captions_splits_and_coco_ids(tmp_path):
    captions = {"COCO_val2014_000000000042.jpg": ["A man riding a wave.", "A surfer, on a wave"],
                "COCO_val2014_000000000073.jpg": ["Two dogs play."], "COCO_val2014_000000000074.jpg": ["A cat."],
                "COCO_val2014_000000000133.jpg": ["A red bus."]}
    ids = {name: int(name[-10:-4]) for name in captions}
    coco = field_formats.write_coco(str(tmp_path / "captions_val2014.json"), captions, ids)
    document = json.load(open(coco))
    document["annotations"].append({"image_id": 999, "id": 7, "caption": "names no listed image"})
    json.dump(document, open(coco, "w"))
    splits = dict(zip(sorted(captions), ["train", "restval", "val", "test"]))
    karpathy = field_formats.write_karpathy(str(tmp_path / "dataset_coco.json"), captions, splits, ids, "coco")
    pairs = sorted((name, c) for name, caps in captions.items() for c in caps)
    with in_process_pipeline() as p:
        from_coco = p | "Coco" >> read.ReadCaptionPairs(coco)
        from_karpathy = p | "Karpathy" >> read.ReadCaptionPairs(karpathy)
        assert_that(from_coco["pairs"], equal_to(pairs), label="coco captions")
        assert_that(from_coco["coco_ids"], equal_to(list(ids.items())), label="coco ids")
        assert_that(from_coco[read.BAD_LINES] | Map(lambda line: "999" in line), equal_to([True]), label="bad")
        assert_that(from_karpathy["pairs"], equal_to(pairs), label="karpathy captions")
        assert_that(from_karpathy["splits"], equal_to(list(zip(sorted(captions), ["train", "train", "dev", "test"]))),
                    label="karpathy splits")
        assert_that(from_karpathy["coco_ids"], equal_to(list(ids.items())), label="karpathy ids")
    assert from_coco["splits"] is None
    assert caption_files.key_scheme(coco) == caption_files.key_scheme(karpathy) == listings.BY_NAME


def test_a_json_caption_file_in_neither_format_is_refused_before_the_job(tmp_path):
    listing = tmp_path / "list.jsonl"
    listing.write_text('{"path": "a.jpg", "caption": "A dog."}\n')
    with pytest.raises(caption_files.CaptionFileError, match="names no 'images'.*--image_list"):
        read.ReadCaptionPairs(str(listing))


def test_split_assignment_and_record_assembly():
    pooled = np.arange(4, dtype=np.uint8)
    joined = [("a.jpg", "/d/a.jpg", {"captions": ["The dog runs!", "A dog, running"], "splits": ["train"],
                                     "coco_id": [7, 7]}),
              ("b.jpg", "/d/b.jpg", {"captions": [], "splits": []}),
              ("c.jpg", "/d/c.jpg", {"captions": ["x"], "splits": ["train", "test"]}),
              ("d.jpg", "/d/d.jpg", {"captions": ["x"], "splits": ["test"], "coco_id": [3, 4]})]
    with in_process_pipeline() as p:
        assigned = p | Create(joined) | ParDo(AssignSplit()).with_outputs(DEAD_LETTER, main="ok")
        encoded = assigned.ok | Map(lambda e: (e, PredictionResult(None, {"pooled": pooled})))
        assembled = encoded | ParDo(AssembleRecord(text.TUTORIAL)).with_outputs("train_captions", main="records")
        parsed = assembled.records | Map(lambda kv: (kv[0], schema.parse_example_py(kv[1])))
        summary = parsed | Map(lambda kv: (kv[0], kv[1]["image_id"], kv[1]["image_path"], kv[1]["captions"],
                                           kv[1]["raw_captions"], list(np.frombuffer(kv[1]["pooled"], np.uint8)),
                                           kv[1]["coco_id"]))
        assert_that(summary, equal_to([
            ("train", "a.jpg", "/d/a.jpg", ["dog running", "the dog runs"], ["A dog, running", "The dog runs!"],
             [0, 1, 2, 3], 7),
            ("unsplit", "b.jpg", "/d/b.jpg", [], [], [0, 1, 2, 3], None)]), label="records")
        assert_that(assembled.train_captions, equal_to([["dog running", "the dog runs"]]), label="train")
        assert_that(assigned[DEAD_LETTER] | Map(lambda d: (d["image_id"], d["reason"])), equal_to(
            [("c.jpg", "listed in 2 split files (test, train); list it in one"),
             ("d.jpg", "given 2 COCO ids (3, 4) by the caption files; an image has one")]), label="dead")


@pytest.mark.parametrize("references", [("A dog runs on the grass.", "The dog runs"), ()])
def test_rows_carry_no_image_and_score_with_smoothed_sentence_bleu(references):
    """MakeRow's row holds ids, path and texts; scoring cleans the raw references as the model's training
    captions were (text.cleaning=tutorial) and scores the caption against them."""
    element = (("a.jpg", "/d/a.jpg", references, 9), PredictionResult(None, ("dog runs", -1.5)))
    with in_process_pipeline() as p:
        made = p | Create([element]) | ParDo(MakeRow())
        rows = (made | ScoreCaptions(text.TUTORIAL, enabled=False))["rows"]

        def check(rows):
            (row,) = rows
            cleaned = [text.clean_caption(r, text.TUTORIAL) for r in references]
            assert row["references"] == cleaned and row["log_prob"] == -1.5 and row["coco_id"] == 9
            if references:
                assert cleaned == ["dog runs on the grass", "the dog runs"]
                expected = sentence_bleu([r.split() for r in cleaned], "dog runs".split(),
                                         smoothing_function=SmoothingFunction().method1)
                assert row["sentence_bleu"] == pytest.approx(expected, abs=1e-12) and row["sentence_bleu"] > 0
            else:
                assert row["sentence_bleu"] is None

        assert_that(made | Map(sorted), equal_to([["caption", "coco_id", "image_id", "log_prob", "path",
                                                   "raw_references"]]), label="lean")
        assert_that(rows, check)


@pytest.mark.parametrize("rows, size", [(500, 30), (500, 0), (10, 30)])
def test_the_gallery_sample_has_exactly_the_size_asked_for(rows, size):
    rng = np.random.default_rng(rows + size)
    scores = rng.random(rows)
    data = [{"image_id": f"img{i:04d}", "sentence_bleu": None if i % 7 == 0 else float(scores[i])}
            for i in range(rows)]
    scored = sorted((r for r in data if r["sentence_bleu"] is not None), key=lambda r: r["sentence_bleu"])
    with in_process_pipeline() as p:
        picked = p | Create(data) | GallerySample(size)

        def exact(groups):
            (gallery,) = groups
            assert len(gallery) == min(size, rows) == len({r["image_id"] for r in gallery})
            by_group = {name: {r["image_id"] for r in gallery if r["gallery"] == name} for name in ("best", "worst")}
            if size and rows > size:
                assert by_group["best"] == {r["image_id"] for r in scored[-(size // 3):]}
                assert by_group["worst"] == {r["image_id"] for r in scored[:size // 3]}

        assert_that(picked, exact)


def test_the_gallery_sample_is_the_same_on_every_run():
    """Whatever order the rows come in: the best, the worst, and the smallest hashes of the other ids."""
    data = [{"image_id": f"img{i:04d}", "sentence_bleu": (i * 37 % 101 + i / 1000) / 102} for i in range(300)]
    ranked = sorted(data, key=lambda r: r["sentence_bleu"])
    chosen = {r["image_id"] for r in ranked[:4] + ranked[-4:]}
    others = sorted((r["image_id"] for r in data if r["image_id"] not in chosen),
                    key=lambda i: hashlib.sha1(i.encode()).hexdigest())
    expected = sorted(chosen | set(others[:4]))
    for order in (data, list(reversed(data))):
        with in_process_pipeline() as p:
            ids = p | Create(order) | GallerySample(12) | Map(lambda gallery: [r["image_id"] for r in gallery])
            assert_that(ids, equal_to([expected]))
