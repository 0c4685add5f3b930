"""The extraction pipeline on real Beam runners: nothing lost, deterministic, gs://, real encoder."""
import io
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from captioner import config, encoders, manifest, schema, storage, text
from captioner.errors import InputError, OutputError, UsageError
from captioner.input_files import captions as caption_files
from captioner.layout import MANIFEST_FILE, SPLIT_FILES, VOCABULARY_FILE
from pipelines import caption_and_score, extract_features
from tests import field_formats
from tests.conftest import LEGACY_EXPORT
from tests.image_zoo import write_image_zoo
from tools import demo_data
from trainer import data as data_lib
from trainer import features_folder

pytestmark = pytest.mark.slow  # every test here runs the extraction pipeline


def _write_dataset(folder: str) -> dict:
    """The image zoo plus captions and splits with every awkward case of the issues."""
    images = os.path.join(folder, "images")
    expected = write_image_zoo(images)
    good = sorted(name for name, reason in expected.items() if reason is None)
    # The same file name in a second folder, while the caption file keys captions by file name: ambiguous.
    os.makedirs(os.path.join(images, "zz_copy"))
    shutil.copy(os.path.join(images, good[0]), os.path.join(images, "zz_copy", good[0]))
    captioned = good[:-1]  # the last good image has no captions at all
    lines = []
    for number, name in enumerate(captioned):
        lines += [f"{name}#0\tA dog runs on the grass {number % 3}.", f"{name}#1\tTwo dogs, playing!"]
    lines += ["missing_image.jpg#0\tcaptions for an image that does not exist", "a line without a tab"]
    with open(os.path.join(folder, "captions.txt"), "w", encoding="utf-8") as handle:
        handle.write("\ufeff" + "\r\n".join(lines) + "\r\n\r\n")  # a BOM, CRLF and trailing blank lines
    splits = {"train": good[: len(good) // 2], "dev": good[len(good) // 2: -2], "test": good[-2:-1]}
    for split, names in splits.items():
        with open(os.path.join(folder, f"Flickr_8k.{split}Images.txt"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(names))
    return {"expected": expected, "good": good, "captioned": captioned, "splits": splits,
            "uncaptioned": good[-1], "ambiguous": [good[0], f"zz_copy/{good[0]}"],
            "stored": good[1:]}


def _records(folder: str) -> list:
    """The serialized records a features folder's manifest lists (its readers read nothing else)."""
    written = manifest.read(folder)
    local = tempfile.mkdtemp()
    paths = []
    for split in schema.SPLITS:
        for number, path in enumerate(manifest.shard_files(written, folder, split)):
            paths.append(os.path.join(local, f"{split}-{number}.tfrecord"))
            storage.copy_file(path, paths[-1])
    return [bytes(r.numpy()) for path in paths for r in tf.data.TFRecordDataset(path)]


def _dead_letters(folder: str) -> list:
    written = manifest.read(folder)
    return [json.loads(line) for name in written["dead_letter_files"]
            for line in storage.read_text(storage.join(folder, name)).splitlines()]


def _run(folder: str, output: str, *flags: str, images: str = None) -> dict:
    return extract_features.run([
        "--config", "local", "--images", images or os.path.join(folder, "images", "**"),
        "--captions", os.path.join(folder, "captions.txt"), "--splits", folder, "--output", output, *flags])


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
    dead = _dead_letters(output)
    assert sorted(r["image_id"] for r in records) == data["stored"]
    bad = {name: reason for name, reason in data["expected"].items() if reason}
    decoded = {d["image_id"]: d for d in dead if d["stage"] != "join"}
    assert sorted(decoded) == sorted(bad)
    for name, reason in bad.items():
        assert reason in decoded[name]["reason"], (name, decoded[name])
    ambiguous = sorted(d["image_id"] for d in dead if d["stage"] == "join")
    assert ambiguous == data["ambiguous"]  # both images of the shared file name, each naming both paths
    assert all(data["ambiguous"][1] in d["reason"] for d in dead if d["stage"] == "join")
    assert written["images_matched"] == len(data["expected"]) + 1
    run = written["this_run"]
    assert run["records_written"] + run["dead_letters"] + run["skipped_existing"] == run["images_matched"]
    assert sum(written["counts"].values()) == run["records_written"] and written["dead_letters"] == len(dead)


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
    first = records[data["captioned"][1]]
    assert first["raw_captions"] == ["A dog runs on the grass 1.", "Two dogs, playing!"]
    assert first["captions"] == ["a dog runs on the grass", "two dogs playing"]  # text.cleaning keep_articles
    assert first["image_path"].endswith(os.path.join("images", data["captioned"][1]))
    assert written["counts"] == {split: sum(1 for r in records.values() if r["split"] == split)
                                 for split in schema.SPLITS}
    assert written["captions_without_images"] == {"count": 1, "examples": ["missing_image.jpg"]}
    assert written["this_run"]["caption_lines_refused"] == {"count": 1, "examples": ["a line without a tab"]}


def test_vocabulary_counts_train_captions_only(zoo_run):
    data, _, output, written = zoo_run
    train = [c for r in map(schema.parse_example_py, _records(output)) if r["split"] == "train" for c in r["captions"]]
    expected = text.vocabulary_lines(text.count_words(train), min_count=1)
    vocabulary = open(os.path.join(output, VOCABULARY_FILE), encoding="utf-8").read().splitlines()
    assert vocabulary == expected and len(vocabulary) == written["vocabulary"]["size"] > 0


def test_running_twice_gives_the_same_records(zoo_run):
    _, folder, output, _ = zoo_run
    again = os.path.join(folder, "features-again")
    _run(folder, again, "--runner=FnApiRunner")
    assert sorted(_records(again)) == sorted(_records(output))
    first, second = (manifest.read(path) for path in (output, again))
    assert first["counts"] == second["counts"] and first["this_run"] == second["this_run"]


def test_a_listing_file_gives_the_records_of_the_glob(zoo_run, tmp_path):
    data, folder, output, _ = zoo_run
    images = os.path.join(folder, "images")
    listing = tmp_path / "photos.csv"
    names = sorted(data["expected"]) + [f"zz_copy/{data['good'][0]}"]
    listing.write_text("path\n" + "".join(f"{os.path.join(images, n)}\n" for n in names), encoding="utf-8")
    listed = extract_features.run(["--config", "local", "--image_list", str(listing), "--captions",
                                   os.path.join(folder, "captions.txt"), "--splits", folder,
                                   "--output", str(tmp_path / "features"), "--runner=FnApiRunner"])
    by_id = {r["image_path"]: r for r in map(schema.parse_example_py, _records(output))}
    by_listing = {r["image_path"]: r for r in map(schema.parse_example_py, _records(str(tmp_path / "features")))}
    assert sorted(by_listing) == sorted(by_id)  # the same images, with ids as listed (full paths here)
    for path, record in by_listing.items():
        assert record["raw_captions"] == by_id[path]["raw_captions"] and record["split"] == by_id[path]["split"]
        assert record["pooled"] == by_id[path]["pooled"] and record["image_id"] == path
    assert listed["this_run"]["images_matched"] == manifest.read(output)["this_run"]["images_matched"]


def test_skip_existing_extracts_only_new_images_and_merges_the_manifest(zoo_run, tmp_path):
    data, folder, output, full = zoo_run
    first_half = str(tmp_path / "first")
    _run(folder, first_half, "--runner=FnApiRunner", images=os.path.join(folder, "images", "[a-m]*"))
    merged = _run(folder, str(tmp_path / "merged"), "--skip_existing", first_half, "--runner=FnApiRunner")
    earlier = manifest.read(first_half)["this_run"]["records_written"]
    assert 0 < earlier < full["this_run"]["records_written"]
    assert merged["this_run"]["skipped_existing"] == earlier
    assert merged["this_run"]["records_written"] == full["this_run"]["records_written"] - earlier
    assert merged["counts"] == full["counts"] and merged["merged_from"] == [first_half]
    assert sorted(_records(str(tmp_path / "merged"))) == sorted(_records(output))
    assert open(os.path.join(tmp_path, "merged", VOCABULARY_FILE)).read() == \
        open(os.path.join(output, VOCABULARY_FILE)).read()  # word counts added up exactly


def test_an_inference_set_keeps_both_images_that_share_a_file_name(tmp_path):
    for folder in ("2019", "2020"):
        (tmp_path / "photos" / folder).mkdir(parents=True)
        Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "photos" / folder / "IMG_0001.jpg")
    written = extract_features.run(["--config", "local", "--images", str(tmp_path / "photos" / "**"),
                                    "--output", str(tmp_path / "features"), "--runner=FnApiRunner"])
    ids = sorted(schema.parse_example_py(r)["image_id"] for r in _records(str(tmp_path / "features")))
    assert ids == ["2019/IMG_0001.jpg", "2020/IMG_0001.jpg"] and written["counts"]["unsplit"] == 2


def test_gs_paths_with_two_worker_processes(tmp_path, gcs_folder):
    """Images read from and shards written to gs:// on the emulator, by DirectRunner's worker subprocesses."""
    data = _write_dataset(str(tmp_path))
    storage.copy_folder_from_local(str(tmp_path), gcs_folder)
    written = extract_features.run([
        "--config", "local", "--images", f"{gcs_folder}/images/**", "--captions", f"{gcs_folder}/captions.txt",
        "--splits", gcs_folder, "--output", f"{gcs_folder}/features", "--runner=DirectRunner",
        "--direct_num_workers=2", "--direct_running_mode=multi_processing", "--encoder_threads=1"])
    records = [schema.parse_example_py(r) for r in _records(f"{gcs_folder}/features")]
    assert sorted(r["image_id"] for r in records) == data["stored"]
    assert all(r["image_path"].startswith(gcs_folder) for r in records)
    assert sum(written["counts"].values()) + written["dead_letters"] == written["images_matched"]


def test_missing_images_fail_before_the_pipeline_with_the_pattern_named(tmp_path):
    with pytest.raises(InputError, match="nothing-here.*matches no file"):
        extract_features.run(["--images", str(tmp_path / "nothing-here" / "*.jpg"),
                              "--output", str(tmp_path / "out"), "--runner=FnApiRunner"])
    assert not os.path.exists(tmp_path / "out" / MANIFEST_FILE)


def test_real_flickr8k_features_equal_a_direct_tflite_invoke(tmp_path, shared_dir, mobilenet_v1_tflite):
    flickr = os.path.join(shared_dir, "data", "flickr8k")
    names = sorted(os.listdir(os.path.join(flickr, "images")))[:20]
    for name in names:
        os.symlink(os.path.join(flickr, "images", name), tmp_path / name)
    output = str(tmp_path / "features")
    written = extract_features.run([
        "--config", "flickr8k", "--set", f"extract.encoder={mobilenet_v1_tflite}", "--set",
        "extract.float_encoder=false", "--images", str(tmp_path / "*.jpg"), "--captions",
        os.path.join(flickr, "Flickr8k.token.txt"), "--splits", flickr, "--output", output, "--runner=FnApiRunner"])
    assert written["features"]["pooled"]["shape"] == [1024] and written["features"]["pooled"]["dtype"] == "uint8"
    assert written["features"]["spatial"]["shape"] == [7, 7, 1024]
    interpreter = tf.lite.Interpreter(model_path=mobilenet_v1_tflite)
    interpreter.allocate_tensors()
    records = [schema.parse_example_py(r) for r in _records(output)]
    assert sorted(r["image_id"] for r in records) == names
    for record in records:
        pixels = np.asarray(Image.open(os.path.join(flickr, "images", record["image_id"])).convert("RGB"))
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels[None])
        interpreter.invoke()
        direct = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).reshape(-1)
        np.testing.assert_array_equal(schema.array_from_bytes(record["pooled"], written["features"]["pooled"]), direct)
        assert len(record["raw_captions"]) == 5


def test_the_float_encoder_keeps_its_rebuild_and_the_images_for_fine_tuning(tmp_path, shared_dir,
                                                                             mobilenet_v1_tflite):
    """extract.float_encoder + extract.keep_images: the features folder holds the encoder it was made with and
    the JPEGs it saw; their features agree with the TFLite's (cosine) as the rebuild does."""
    flickr = os.path.join(shared_dir, "data", "flickr8k")
    names = sorted(os.listdir(os.path.join(flickr, "images")))[:6]
    for name in names:
        os.symlink(os.path.join(flickr, "images", name), tmp_path / name)
    output = str(tmp_path / "features")
    flags = ["--config", "flickr8k", "--set", f"extract.encoder={mobilenet_v1_tflite}", "--set",
             "extract.float_encoder=true", "--set", "extract.keep_images=true", "--images", str(tmp_path / "*.jpg"),
             "--output", output, "--runner=FnApiRunner"]
    written = extract_features.run(flags)
    encoder_file = os.path.join(output, "encoder", "mobilenet_v1_1.0_224_quant_embedding_extractor.keras")
    assert written["encoder"]["source"] == encoder_file and os.path.exists(encoder_file)
    assert written["features"]["spatial"] == {"shape": [7, 7, 1024], "dtype": "float16", "scale": None,
                                              "zero_point": 0}
    assert written["images"] == {"kept": True, "format": "jpeg", "size": [224, 224], "quality": 90}
    records = [schema.parse_example_py(r) for r in _records(output)]
    sizes = [len(r["image_jpeg"]) for r in records]
    assert sorted(r["image_id"] for r in records) == names and 5_000 < sum(sizes) / len(sizes) < 40_000
    tflite = encoders.load_encoder(mobilenet_v1_tflite, spatial=True)
    info = tflite.feature_info()["spatial"]
    for record in records:
        pixels = np.asarray(Image.open(os.path.join(flickr, "images", record["image_id"])).convert("RGB"))
        kept = np.asarray(Image.open(io.BytesIO(record["image_jpeg"])))
        assert kept.shape == pixels.shape and np.abs(kept.astype(int) - pixels).mean() < 8  # JPEG q90 of it
        stored = schema.array_from_bytes(record["spatial"], written["features"]["spatial"]).astype(np.float64)
        quantized = tflite.encode(pixels[None])["spatial"][0].astype(np.float64) * info["scale"]
        assert (stored * quantized).sum() / np.linalg.norm(stored) / np.linalg.norm(quantized) > 0.98
    with pytest.raises(UsageError, match="extract.float_encoder rebuilds a .tflite MobileNet"):
        extract_features.run(["--config", "local", "--set", "extract.float_encoder=true", "--images",
                              str(tmp_path / "*.jpg"), "--output", str(tmp_path / "refused")])


def test_a_second_smaller_extraction_into_the_same_output_is_all_its_readers_see(tmp_path):
    """--overwrite replaces a finished run; a stray shard of some other run is never read; counts match."""
    data = tmp_path / "data"
    demo_data.generate(str(data), num_images=60)
    output = str(tmp_path / "features")
    first = _run(str(data), output, "--runner=FnApiRunner", images=str(data / "images" / "*"))
    with pytest.raises(OutputError, match="already holds a finished extraction.*--overwrite"):
        _run(str(data), output, "--runner=FnApiRunner", images=str(data / "images" / "*"))
    second = _run(str(data), output, "--overwrite", "--runner=FnApiRunner", images=str(data / "images" / "001*"))
    stray = os.path.join(output, "train", "records-00000-of-00009.tfrecord")  # e.g. left by a killed run
    shutil.copy(manifest.shard_files(second, output, "train")[0], stray)
    assert sum(first["counts"].values()) == 60 and sum(second["counts"].values()) == 10
    folder = features_folder.open_features(output, config.TrainConfig(), str(tmp_path / "cache"))
    counts = {split: data_lib.CaptionData(folder, 16).count(split).images for split in ("train", "test")}
    assert counts == {"train": second["counts"]["train"], "test": second["counts"]["test"]}
    summary = caption_and_score.run(["--model", LEGACY_EXPORT, "--features", output, "--split", "train",
                                     "--output", str(tmp_path / "captions"), "--runner=FnApiRunner"])
    assert summary["counts"]["captioned"] == summary["counts"]["images_matched"] == second["counts"]["train"]


def test_a_karpathy_split_file_decides_the_splits_and_gives_coco_ids(tmp_path):
    data = str(tmp_path / "data")
    demo_data.generate(data, num_images=12)
    captions = caption_files.read_captions(os.path.join(data, "captions.txt"))
    lists = {split: caption_files.read_split_ids(os.path.join(data, name)) for split, name in SPLIT_FILES.items()}
    karpathy_split = {"train": "restval", "dev": "val", "test": "test"}
    splits = {name: karpathy_split[split] for split, names in lists.items() for name in names}
    ids = {name: 500 + number for number, name in enumerate(sorted(captions))}
    karpathy = field_formats.write_karpathy(str(tmp_path / "dataset_coco.json"), captions, splits, ids, "coco")
    images = os.path.join(data, "images", "*")
    with pytest.raises(UsageError, match="Karpathy split file.*leave --splits out"):
        extract_features.run(["--config", "local", "--images", images, "--captions", karpathy, "--splits", data,
                              "--output", str(tmp_path / "refused")])
    written = extract_features.run(["--config", "local", "--images", images, "--captions", karpathy,
                                    "--output", str(tmp_path / "features"), "--runner=FnApiRunner"])
    records = [schema.parse_example_py(r) for r in _records(str(tmp_path / "features"))]
    assert {r["image_id"]: r["split"] for r in records} == {
        name: split for split, names in lists.items() for name in names}
    assert {r["image_id"]: r["coco_id"] for r in records} == ids
    assert {r["image_id"]: sorted(r["raw_captions"]) for r in records} == {n: sorted(c) for n, c in captions.items()}
    assert written["counts"] == {split: len(lists.get(split, [])) for split in schema.SPLITS}


def test_a_keras_file_encoder_extracts_its_float_map(tmp_path):
    """A `.keras` encoder (preprocessing inside, as from_tflite writes them) through the pipeline."""
    pixels = keras.Input((32, 32, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255, name="preprocess")(pixels)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="block1_conv")(x)
    path = str(tmp_path / "tiny.keras")
    keras.Model(pixels, x).save(path)
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(3)
    for number in range(5):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{number}.png")
    written = extract_features.run(["--config", "local", "--images", str(tmp_path / "images" / "*.png"),
                                    "--encoder", path, "--output", str(tmp_path / "features"), "--runner=FnApiRunner"])
    encoder = encoders.load_encoder(path, spatial=True)
    assert written["encoder"] == encoder.identity and written["encoder"]["preprocessing"].startswith(
        "inside the model: Rescaling(scale=0.00392")
    assert written["features"]["spatial"] == {"shape": [16, 16, 6], "dtype": "float16", "scale": None,
                                              "zero_point": 0}
    records = {r["image_id"]: r for r in map(schema.parse_example_py, _records(str(tmp_path / "features")))}
    assert sorted(records) == [f"{number}.png" for number in range(5)]
    for image_id, record in records.items():
        expected = encoder.encode(np.asarray(Image.open(tmp_path / "images" / image_id))[None])
        for name in ("pooled", "spatial"):
            stored = schema.array_from_bytes(record[name], written["features"][name])
            assert stored.dtype == np.float16
            np.testing.assert_array_equal(stored, expected[name][0])
