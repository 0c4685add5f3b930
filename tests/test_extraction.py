"""The extraction pipeline on real Beam runners: nothing lost, deterministic, gs://, real encoder."""
import glob
import json
import os
import shutil
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from captioner import manifest, schema, storage, text
from pipelines import extract_features
from tests.image_zoo import write_image_zoo

pytestmark = pytest.mark.slow  # every test here runs the extraction pipeline


def _write_dataset(folder: str) -> dict:
    """The image zoo plus captions and splits with every awkward case of the issue."""
    images = os.path.join(folder, "images")
    expected = write_image_zoo(images)
    good = sorted(name for name, reason in expected.items() if reason is None)
    # A duplicate id: the same file name in a second folder; the sorted-first path is kept.
    os.makedirs(os.path.join(images, "zz_copy"))
    shutil.copy(os.path.join(images, good[0]), os.path.join(images, "zz_copy", good[0]))
    captioned = good[:-1]  # the last good image has no captions at all
    lines = []
    for number, name in enumerate(captioned):
        lines += [f"{name}#0\tA dog runs on the grass {number % 3}.", f"{name}#1\tTwo dogs, playing!"]
    lines += ["missing_image.jpg#0\tcaptions for an image that does not exist"]
    with open(os.path.join(folder, "captions.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    splits = {"train": good[: len(good) // 2], "dev": good[len(good) // 2: -2], "test": good[-2:-1]}
    for split, names in splits.items():
        with open(os.path.join(folder, f"Flickr_8k.{split}Images.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(names))
    return {"expected": expected, "good": good, "captioned": captioned, "splits": splits,
            "uncaptioned": good[-1], "duplicate": os.path.join(images, "zz_copy", good[0])}


def _records(folder: str) -> list:
    """Every serialized record under a features folder (copied down first when it is on gs://)."""
    local = storage.copy_folder_to_local(folder, tempfile.mkdtemp())
    paths = sorted(glob.glob(os.path.join(local, "*", "records-*.tfrecord")))
    return [bytes(r.numpy()) for path in paths for r in tf.data.TFRecordDataset(path)]


def _run(folder: str, output: str, *beam_flags: str, images: str = None) -> dict:
    return extract_features.run([
        "--config", "local", "--images", images or os.path.join(folder, "images", "**"),
        "--captions", os.path.join(folder, "captions.txt"), "--splits", folder, "--output", output,
        *beam_flags])


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("zoo"))
    data = _write_dataset(folder)
    output = os.path.join(folder, "features")
    written = _run(folder, output, "--runner=FnApiRunner")
    return data, folder, output, written


def test_every_image_is_a_record_or_a_dead_letter(zoo_run):
    data, _, output, written = zoo_run
    records = [schema.parse_example_py(r) for r in _records(output)]
    dead = [json.loads(line) for line in open(os.path.join(output, manifest.DEAD_LETTER_FILE), encoding="utf-8")]
    stored_ids = sorted(r["image_id"] for r in records)
    assert stored_ids == data["good"]
    bad = {name: reason for name, reason in data["expected"].items() if reason}
    dead_by_id = {d["image_id"]: d for d in dead if d["stage"] != "match"}
    assert sorted(dead_by_id) == sorted(bad)
    for name, reason in bad.items():
        assert reason in dead_by_id[name]["reason"], (name, dead_by_id[name])
    duplicates = [d for d in dead if d["stage"] == "match"]
    assert [d["path"] for d in duplicates] == [data["duplicate"]]
    assert written["images_matched"] == len(data["expected"]) + 1
    assert sum(written["counts"].values()) + written["dead_letters"] == written["images_matched"]
    assert written["dead_letters"] == len(dead)


def test_records_hold_captions_splits_and_features(zoo_run):
    data, _, output, written = zoo_run
    records = {r["image_id"]: r for r in map(schema.parse_example_py, _records(output))}
    split_of = {name: split for split, names in data["splits"].items() for name in names}
    for image_id, record in records.items():
        assert record["split"] == split_of.get(image_id, "unsplit")
        pooled = schema.array_from_bytes(record["pooled"], written["features"]["pooled"])
        spatial = schema.array_from_bytes(record["spatial"], written["features"]["spatial"])
        assert pooled.shape == (320,) and spatial.shape == (8, 8, 5)
        np.testing.assert_allclose(pooled, spatial.reshape(-1))
    assert records[data["uncaptioned"]]["captions"] == []
    first = records[data["captioned"][0]]
    assert first["raw_captions"] == ["A dog runs on the grass 0.", "Two dogs, playing!"]
    assert first["captions"] == ["dog runs on the grass", "two dogs playing"]
    assert written["counts"] == {split: sum(1 for r in records.values() if r["split"] == split)
                                 for split in schema.SPLITS}
    assert written["captions_without_images"] == {"count": 1, "ids": ["missing_image.jpg"]}


def test_vocabulary_counts_train_captions_only(zoo_run):
    data, _, output, written = zoo_run
    train = [c for r in map(schema.parse_example_py, _records(output)) if r["split"] == "train" for c in r["captions"]]
    expected = text.vocabulary_lines(text.count_words(train), min_count=1)
    vocabulary = open(os.path.join(output, manifest.VOCABULARY_FILE), encoding="utf-8").read().splitlines()
    assert vocabulary == expected and len(vocabulary) == written["vocabulary"]["size"] > 0


def test_running_twice_gives_the_same_records(zoo_run):
    _, folder, output, _ = zoo_run
    again = os.path.join(folder, "features-again")
    _run(folder, again, "--runner=FnApiRunner")
    assert sorted(_records(again)) == sorted(_records(output))
    first = json.load(open(os.path.join(output, manifest.MANIFEST_FILE)))
    second = json.load(open(os.path.join(again, manifest.MANIFEST_FILE)))
    assert first == second


def test_gs_paths_with_two_worker_processes(tmp_path, gcs_folder):
    """Images read from and shards written to gs:// on the emulator, by DirectRunner's worker subprocesses."""
    data = _write_dataset(str(tmp_path))
    storage.copy_folder_from_local(str(tmp_path), gcs_folder)
    written = extract_features.run([
        "--config", "local", "--images", f"{gcs_folder}/images/**", "--captions", f"{gcs_folder}/captions.txt",
        "--splits", gcs_folder, "--output", f"{gcs_folder}/features", "--runner=DirectRunner",
        "--direct_num_workers=2", "--direct_running_mode=multi_processing", "--encoder_threads=1"])
    records = [schema.parse_example_py(r) for r in _records(f"{gcs_folder}/features")]
    assert sorted(r["image_id"] for r in records) == data["good"]
    assert all(r["image_path"].startswith(gcs_folder) for r in records)
    assert sum(written["counts"].values()) + written["dead_letters"] == written["images_matched"]


def test_missing_images_fail_with_the_pattern_named(tmp_path):
    with pytest.raises(Exception, match="nothing-here"):
        extract_features.run(["--images", str(tmp_path / "nothing-here" / "*.jpg"),
                              "--output", str(tmp_path / "out"), "--runner=FnApiRunner"])


def test_real_flickr8k_features_equal_a_direct_tflite_invoke(tmp_path, shared_dir, mobilenet_v1_tflite):
    flickr = os.path.join(shared_dir, "data", "flickr8k")
    names = sorted(os.listdir(os.path.join(flickr, "images")))[:20]
    for name in names:
        os.symlink(os.path.join(flickr, "images", name), tmp_path / name)
    output = str(tmp_path / "features")
    written = extract_features.run([
        "--config", "flickr8k", "--set", f"extract.encoder={mobilenet_v1_tflite}", "--images", str(tmp_path / "*.jpg"),
        "--captions", os.path.join(flickr, "Flickr8k.token.txt"), "--splits", flickr, "--output", output,
        "--runner=FnApiRunner"])
    assert written["features"]["pooled"]["shape"] == [1024] and written["features"]["pooled"]["dtype"] == "uint8"
    assert written["features"]["spatial"]["shape"] == [7, 7, 1024]
    interpreter = tf.lite.Interpreter(model_path=mobilenet_v1_tflite)
    interpreter.allocate_tensors()
    records = [schema.parse_example_py(r) for r in _records(output)]
    assert sorted(r["image_id"] for r in records) == names
    from PIL import Image
    for record in records:
        pixels = np.asarray(Image.open(os.path.join(flickr, "images", record["image_id"])).convert("RGB"))
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels[None])
        interpreter.invoke()
        direct = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).reshape(-1)
        np.testing.assert_array_equal(schema.array_from_bytes(record["pooled"], written["features"]["pooled"]), direct)
        assert len(record["raw_captions"]) == 5
