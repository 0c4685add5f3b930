"""The caption-and-score pipeline: extract -> train -> caption on real runners, local and on gs://."""
import csv
import json
import os
import shutil

import pytest
from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

from captioner import captions as caption_files
from captioner import demo_data, storage, text
from pipelines import caption_and_score, extract_features
from trainer import task

pytestmark = pytest.mark.slow  # every test here runs a pipeline, and most train a decoder

XSS_NAME = "<img src=x onerror=alert(1)>.jpg"
TINY_TRAINING = ["--set", "train.epochs=4", "--set", "train.units=32", "--set", "train.embedding_dim=16",
                 "--set", "train.batch_size=32"]
WEIGHTS = [(1.0,), (0.5, 0.5), (1 / 3,) * 3, (0.25,) * 4]


def _stages(data: str, work: str, beam_flags=("--runner=FnApiRunner",)) -> str:
    """Extracts and trains on a demo-style data folder; returns the export folder."""
    caption_file = storage.join(data, "captions.txt")
    extract_features.run(["--config", "local", "--images", storage.join(data, "images", "*"),
                          "--captions", caption_file, "--splits", data,
                          "--output", storage.join(work, "features"), *beam_flags])
    assert task.main(["--config", "local", *TINY_TRAINING, "--features", storage.join(work, "features"),
                      "--job_dir", storage.join(work, "job"), "--eval_split", "none", "--verbose", "0"]) == 0
    return storage.join(work, "job", "export")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("captioning")
    data = str(folder / "data")
    demo_data.generate(data, num_images=60)
    return data, _stages(data, str(folder / "work"))


def _rows(output: str) -> list:
    return [json.loads(line) for line in storage.read_text(storage.join(output, "captions.jsonl")).splitlines()]


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
    summary = caption_and_score.run([
        "--config", "local", "--model", export, "--images", str(images / "*"), "--include", str(include),
        "--references", os.path.join(data, "captions.txt"), "--output", output, "--beam_size", "2",
        "--runner=FnApiRunner"])

    rows = _rows(output)
    dead = [json.loads(line) for line in storage.read_text(os.path.join(output, "dead_letter.jsonl")).splitlines()]
    counts = summary["counts"]
    assert counts["images_matched"] == len(test_ids) + 2
    assert counts["captioned"] + counts["dead_letters"] == counts["images_matched"]
    assert [d["image_id"] for d in dead] == ["broken.jpg"]
    assert sorted(r["image_id"] for r in rows) == sorted(test_ids + [XSS_NAME])
    assert counts["without_references"] == 1 and counts["scored"] == len(test_ids)

    references = caption_files.read_captions(os.path.join(data, "captions.txt"))
    scored = [r for r in rows if r["image_id"] != XSS_NAME]
    refs = [[text.tokenize(c) for c in references[r["image_id"]]] for r in scored]
    hyps = [r["caption"].split() for r in scored]
    for ours, weights in zip(summary["bleu"], WEIGHTS):
        assert ours == pytest.approx(nltk_corpus_bleu(refs, hyps, weights=weights), abs=1e-9)
    assert all(r["sentence_bleu"] is not None for r in scored)

    with open(os.path.join(output, "captions.csv"), encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert [(t["image_id"], t["caption"]) for t in table] == [(r["image_id"], r["caption"]) for r in rows]
    report = storage.read_text(os.path.join(output, "report.html"))
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in report and XSS_NAME not in report


def test_features_fast_path_uses_stored_references(trained, tmp_path):
    data, export = trained
    features = os.path.join(os.path.dirname(os.path.dirname(export)), "features")
    output = str(tmp_path / "out")
    summary = caption_and_score.run(["--config", "local", "--model", export, "--features", features,
                                     "--split", "test", "--output", output, "--beam_size", "1",
                                     "--runner=FnApiRunner"])
    test_ids = caption_files.read_split_ids(os.path.join(data, "Flickr_8k.testImages.txt"))
    assert sorted(r["image_id"] for r in _rows(output)) == sorted(test_ids)
    assert summary["counts"]["scored"] == len(test_ids) and summary["bleu"][0] > 0


def test_end_to_end_on_gs_paths(tmp_path, gcs_folder):
    """extract -> train -> caption-and-score, every input and output on the GCS emulator."""
    local = str(tmp_path / "data")
    demo_data.generate(local, num_images=24)
    storage.copy_folder_from_local(local, f"{gcs_folder}/data")
    export = _stages(f"{gcs_folder}/data", f"{gcs_folder}/work")
    assert storage.exists(f"{export}/bundle.json")
    summary = caption_and_score.run([
        "--config", "local", "--model", export, "--images", f"{gcs_folder}/data/images/*",
        "--references", f"{gcs_folder}/data/captions.txt", "--output", f"{gcs_folder}/captions",
        "--beam_size", "2", "--runner=FnApiRunner"])
    assert summary["counts"]["captioned"] == 24 and summary["counts"]["dead_letters"] == 0
    assert len(_rows(f"{gcs_folder}/captions")) == 24
    assert storage.exists(f"{gcs_folder}/captions/report.html")


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
                          "--splits", str(data), "--output", f"{work}/features", "--runner=FnApiRunner"])
    assert task.main(["--config", "flickr8k", *TINY_TRAINING, "--set", "train.epochs=2",
                      "--features", f"{work}/features", "--job_dir", f"{work}/job",
                      "--eval_split", "none", "--verbose", "0"]) == 0
    summary = caption_and_score.run([
        "--config", "flickr8k", "--model", f"{work}/job/export", "--images", str(data / "images" / "*.jpg"),
        "--include", os.path.join(flickr, "Flickr_8k.testImages.txt"), "--references", str(data / "captions.txt"),
        "--output", f"{work}/captions", "--beam_size", "2", "--runner=FnApiRunner"])
    assert summary["counts"] == {"images_matched": 10, "captioned": 10, "dead_letters": 0, "scored": 10,
                                 "without_references": 0}
    assert summary["model"]["encoder"] == os.path.basename(mobilenet_v1_tflite)
