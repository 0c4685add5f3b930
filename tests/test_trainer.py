"""The trainer stage end to end on a synthetic features folder whose captions follow from its features."""
import json
from collections import Counter
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from captioner import bundle, schema, storage
from captioner import manifest as manifest_lib
from captioner.decoder import search
from captioner.decoder.decoding import Decoding
from captioner.errors import TrainingFailed
from captioner.layout import BUNDLE_FILE, BUNDLE_VOCABULARY_FILE, EVAL_FILE, MODEL_FILE
from captioner.text import PAD_ID
from tests.kill import ENV, kill_after_backup
from tests.synthetic_features import overrides, thumbnail_scenes, tiny_config, write_synthetic_features
from trainer import data, export, features_folder, job, task, training
from trainer.job_folder import BACKUP, BACKUP_METADATA, HISTORY, JobFolder

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(synthetic, tmp_path_factory):
    job_dir = str(tmp_path_factory.mktemp("job"))
    result = job.run(tiny_config(), synthetic, job_dir, devices=["/cpu:0"], eval_split="test", verbose=0)
    return result


@pytest.fixture(scope="module")
def test_split(trained, synthetic):
    """Stored (uint8) and dequantized test features of the synthetic set, with the manifest info."""
    folder = features_folder.open_features(synthetic, tiny_config().train, cache_dir="unused")
    stored = np.concatenate([arrays for _, arrays, _ in data.CaptionData(folder, 12).images("test", 64)])
    return stored, schema.dequantize(stored, folder.info), folder


@pytest.mark.slow
def test_training_reaches_high_bleu_on_held_out_images(trained):
    with open(os.path.join(trained.job_dir, EVAL_FILE)) as handle:
        evaluation = json.load(handle)
    losses = [e["loss"] for e in trained.history["epochs"]]
    print(f"\nlosses {[round(x, 4) for x in losses]}, best val_loss {trained.summary['best_val_loss']:.4f}, "
          f"test BLEU x100 {evaluation['bleu_x100']}")
    assert evaluation["split"] == "test" and evaluation["images"] == 24
    assert evaluation["bleu"]["bleu4"] >= 0.9
    assert losses[-1] < losses[0] / 3
    assert trained.summary["epochs_run"] == 6 and trained.summary["replicas"] == 1


@pytest.mark.slow
def test_beam_one_is_greedy_and_beam_search_scores_at_least_greedy(trained, test_split):
    _, features, folder = test_split
    decoder = bundle.Captioner.load(trained.export_dir).decoder
    greedy_ids, greedy_scores = decoder.greedy(features, max_length=12)
    beam1_ids, beam1_scores = decoder.beam(features, beam_size=1, max_length=12, length_penalty=0.0)
    np.testing.assert_array_equal(greedy_ids, beam1_ids)
    np.testing.assert_array_equal(greedy_scores, beam1_scores)
    for beam_size in (2, 4):
        _, beam_scores = decoder.beam(features, beam_size=beam_size, max_length=12, length_penalty=0.0)
        assert np.all(beam_scores >= greedy_scores - 1e-5), (beam_size, beam_scores - greedy_scores)
    # the length penalty and a short max_length change the search, not its shape
    ids, scores = decoder.beam(features, beam_size=3, max_length=3, length_penalty=0.7)
    assert ids.shape == (len(features), 5) and np.all(np.isfinite(scores))
    assert all(len(search.ids_to_words(row, folder.tokens)) <= 3 for row in ids)


@pytest.mark.slow
def test_export_loads_safely_and_captions_as_before_export(trained, test_split, tmp_path):
    stored, features, folder = test_split
    before_ids, before_scores = search.SequenceDecoder(trained.model, len(folder.tokens)).greedy(features, 12)
    before = [" ".join(search.ids_to_words(row, folder.tokens)) for row in before_ids]

    captioner = bundle.Captioner.load(trained.export_dir)
    after = captioner.caption_features({"spatial": stored, "pooled": None}, Decoding(1, 0.0, 12))
    assert [c for c, _ in after] == before
    np.testing.assert_allclose([s for _, s in after], before_scores, rtol=1e-5, atol=1e-5)
    assert all(c.split()[-2:-1] == ["the"] for c in before)  # "... on the <place>"
    beam = captioner.caption_features({"spatial": stored}, Decoding(3, 0.7, 12))
    assert len(beam) == len(stored)

    assert captioner.identity["decoder"] == "attention"
    assert captioner.identity["encoder"]["name"] == "synthetic"
    assert captioner.feature_info == {"spatial": folder.info}
    loaded = keras.saving.load_model(os.path.join(trained.export_dir, MODEL_FILE), safe_mode=True)
    assert loaded.output_shape[-1] == len(folder.tokens)
    with open(os.path.join(trained.export_dir, BUNDLE_FILE)) as handle:
        info = json.load(handle)
    assert info["schema_version"] == schema.SCHEMA_VERSION and info["consumes"] == ["spatial"]
    assert info["max_length"] == 12 and info["encoder"]["name"] == "synthetic"
    with open(os.path.join(trained.export_dir, BUNDLE_VOCABULARY_FILE)) as handle:
        assert [line.split("\t")[0] for line in handle.read().splitlines()] == folder.tokens
    assert not [f for f in os.listdir(trained.export_dir) if f.endswith((".pkl", ".pickle"))]

    # an encoder named by file path travels with the bundle
    encoder_file = tmp_path / "tiny_encoder.tflite"
    encoder_file.write_bytes(b"not really a model")
    moved = features_folder.FeaturesFolder(folder.source, folder.folder, dict(folder.manifest), folder.tokens,
                                           folder.feature)
    moved.manifest["encoder"] = dict(folder.manifest["encoder"], source=str(encoder_file))
    export_dir = export.export(trained.model, str(tmp_path / "export"), tiny_config(), moved)
    assert (tmp_path / "export" / "encoder" / "tiny_encoder.tflite").read_bytes() == b"not really a model"
    with open(os.path.join(export_dir, BUNDLE_FILE)) as handle:
        assert json.load(handle)["encoder_files"] == {"source": "encoder/tiny_encoder.tflite"}


@pytest.mark.slow
def test_mixed_bfloat16_learns_and_exports_a_float32_bundle_that_captions_the_same(synthetic, test_split, tmp_path):
    stored, features, folder = test_split
    config = tiny_config(mixed_precision="mixed_bfloat16", xla=True)
    result = job.run(config, synthetic, str(tmp_path / "job"), devices=["/cpu:0"], eval_split="test", verbose=0)
    losses = [e["loss"] for e in result.history["epochs"]]
    assert losses[-1] < losses[0] / 3 and result.summary["bleu"]["bleu4"] >= 0.9
    computes = {layer.compute_dtype for layer in result.model.layers if layer.weights}
    assert "bfloat16" in computes and result.model.get_layer("logits").compute_dtype == "float32"
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the policy does not leak past the build
    before_ids, before_scores = search.SequenceDecoder(result.model, len(folder.tokens)).greedy(features, 12)
    captioner = bundle.Captioner.load(result.export_dir)
    assert {layer.compute_dtype for layer in captioner.model.layers if layer.weights} == {"float32"}
    # what the export must preserve: the weights, exactly; the captions themselves may differ where bfloat16
    # rounding flips a near-tie, so the float32 bundle's log-probabilities of the same captions must be close
    for trained, exported in zip(result.model.get_weights(), captioner.model.get_weights()):
        np.testing.assert_array_equal(trained, exported)
    log_probs = tf.nn.log_softmax(captioner.model({"features": features, "tokens": before_ids[:, :-1]})).numpy()
    picked = np.take_along_axis(log_probs, before_ids[:, 1:, None], axis=-1)[..., 0]
    exported_scores = (picked * (before_ids[:, 1:] != PAD_ID)).sum(axis=1)
    np.testing.assert_allclose(exported_scores, before_scores, atol=0.1)  # bfloat16: ~3 significant digits


def _epoch(caption_data, counts):
    batches = list(caption_data.examples("train", 16, counts, training=True, shuffle_buffer=64).as_numpy_iterator())
    return [(inputs["tokens"], targets) for inputs, targets in batches]


def _captions(epoch):
    """Every caption of an epoch's rows (tokens then the last target), PAD stripped."""
    return sorted(tuple(np.trim_zeros(np.append(t[i, j], y[i, j, -1]), "b")) for t, y in epoch
                  for i in range(len(t)) for j in range(t.shape[1]) if t[i, j, 0] != PAD_ID)


def test_length_sorted_batches_hold_the_same_examples_with_less_padding(synthetic):
    folder = features_folder.open_features(synthetic, tiny_config().train, cache_dir="unused")
    # one caption per row: the synthetic images' longest captions are all alike, single captions are not
    plain, sorted_ = (data.CaptionData(folder, 12, seed=3, sort_window_batches=w, captions_per_row=1) for w in (0, 4))
    counts = plain.count("train")
    epochs = {"plain": _epoch(plain, counts), "sorted": _epoch(sorted_, counts)}
    rows = {name: _captions(epoch) for name, epoch in epochs.items()}
    assert len(epochs["sorted"]) == len(epochs["plain"]) == counts.examples // 16 == counts.rows(1) // 16
    # the same (image, caption) examples in another order, but for the < 16 each order leaves in its last batch
    left_out = counts.examples % 16
    assert sum((Counter(rows["sorted"]) - Counter(rows["plain"])).values()) <= left_out
    for tokens, targets in epochs["sorted"] + epochs["plain"]:
        assert (targets[..., -1] != PAD_ID).any()  # each batch is cut to its longest caption
    cells = {name: sum(t.size for t, _ in epoch) for name, epoch in epochs.items()}
    assert cells["sorted"] < cells["plain"]


def test_rows_hold_an_images_captions_and_its_counts_choose_how_many(synthetic):
    folder = features_folder.open_features(synthetic, tiny_config().train, cache_dir="unused")
    caption_data = data.CaptionData(folder, 12, captions_per_row=3)
    counts = caption_data.count("train")
    assert counts.captions_per_row == 3 and counts.rows(3) == counts.images == 120 and counts.rows(2) == 240
    batches = list(caption_data.examples("train", 16, counts, training=False).as_numpy_iterator())
    assert len(batches) == 120 // 16 and batches[0][0]["tokens"].shape[:2] == (16, 3)
    assert batches[0][0]["features"].shape == (16, 2, 2, 12)
    seven = tf.constant(["w%d" % i for i in range(7)])
    rows = data.CaptionData(folder, 12, captions_per_row=3).caption_rows(seven).numpy()
    assert rows.shape == (3, 3, 14) and (rows[2, 1:] == PAD_ID).all() and (rows[2, 0] != PAD_ID).any()


def test_caption_loss_masks_padding_and_is_per_token():
    loss = training.CaptionLoss(tokens_per_caption=2.0)
    logits = np.zeros((1, 3, 4), "float32")  # uniform: log 4 per token
    per_token = loss(np.array([[2, 3, 0]]), logits)
    np.testing.assert_allclose(float(per_token), np.log(4.0), rtol=1e-6)  # two real tokens / 2.0


@pytest.mark.slow
def test_one_and_two_replicas_reach_the_same_loss(synthetic, tmp_path):
    histories = {}
    for devices, per_replica in ((["/cpu:0"], 12), (["/cpu:0", "/cpu:1"], 6)):  # captions: 4 or 2 images of 3
        config = tiny_config(epochs=2, batch_size=per_replica, dropout=0.0)
        result = job.run(config, synthetic, str(tmp_path / str(len(devices))), devices=devices,
                         eval_split="none", verbose=0)
        assert result.summary["replicas"] == len(devices) and result.summary["global_batch"] == 4
        histories[len(devices)] = result.history["epochs"]
    one, two = ([[e["loss"], e["val_loss"]] for e in histories[n]] for n in (1, 2))
    print(f"\n1 replica {one}\n2 replicas {two}")
    np.testing.assert_allclose(two, one, rtol=1e-3)


@pytest.mark.slow
def test_resumes_after_sigkill(synthetic, tmp_path):
    job_dir = str(tmp_path / "job")
    config = tiny_config(epochs=8, batch_size=8, early_stopping_patience=0)
    command = [sys.executable, "-m", "trainer.task", "--features", synthetic, "--job_dir", job_dir,
               "--eval_split", "none", "--devices", "/cpu:0,/cpu:1", *overrides(config)]
    metadata = os.path.join(job_dir, BACKUP_METADATA)
    killed_at = kill_after_backup(command, metadata, str(tmp_path / "first.log"), 150)
    assert 1 <= killed_at < 8
    assert not os.path.exists(os.path.join(job_dir, "export"))

    second = subprocess.run(command, cwd=PROJECT_ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=240)
    assert second.returncode == 0, second.stdout[-3000:]
    assert f"resuming from the backup of epoch {killed_at} of 8" in second.stdout
    with open(os.path.join(job_dir, HISTORY)) as handle:
        history = json.load(handle)
    assert [r["initial_epoch"] for r in history["runs"]] == [0, killed_at]
    assert [e["epoch"] for e in history["epochs"]] == list(range(1, 9))
    assert min(e["epoch"] for e in history["epochs"] if e["run"] == 2) == killed_at + 1
    assert history["runs"][1]["replicas"] == 2 and history["runs"][1]["global_batch"] == 4  # 2 images of 3 x 2
    assert os.path.exists(os.path.join(job_dir, "export", MODEL_FILE))
    with open(metadata) as handle:  # kept when training has finished: a re-run with more epochs goes on from it
        assert json.load(handle)["epoch"] == 8
    with open(os.path.join(job_dir, HISTORY)) as handle:
        assert json.load(handle)["finished"] == {"epochs": 8, "stopped_early": False}
    assert '"resumed_from_epoch": %d' % killed_at in second.stdout


@pytest.mark.slow
def test_gcs_features_and_job_dir(gcs_folder, tmp_path):
    features, job_dir = f"{gcs_folder}/features", f"{gcs_folder}/jobs/run1"
    write_synthetic_features(features, num_train=24, num_dev=8, num_test=8, encoder="thumbnail", num_shards=1)
    config = tiny_config(epochs=2, batch_size=8, max_length=8)
    result = job.run(config, features, job_dir, eval_split="test", verbose=0)
    for name in ("export/decoder.keras", "export/bundle.json", "export/vocabulary.txt", "history.json",
                 "eval.json", "checkpoints/best.weights.h5"):
        assert storage.exists(f"{job_dir}/{name}"), name
    assert storage.exists(f"{job_dir}/{BACKUP_METADATA}")  # mirrored there too: more epochs go on from it
    assert result.export_dir == f"{job_dir}/export"

    captioner = bundle.Captioner.load(result.export_dir)
    assert captioner.identity["encoder"]["name"] == "thumbnail"
    images, _ = thumbnail_scenes(5, seed=3)
    from_images = captioner.caption_images(images, Decoding(2, 0.0, 16))
    from_features = captioner.caption_features(captioner.encoder.encode(images), Decoding(2, 0.0, 16))
    assert from_images == from_features and len(from_images) == 5


def test_remote_backup_is_brought_down_and_mirrored(gcs_folder, tmp_path):
    folder = JobFolder(gcs_folder, str(tmp_path / "job"))
    folder.write_json(BACKUP_METADATA, {"epoch": 3, "batch": 0})
    with open(folder.path(os.path.join(BACKUP, "latest.weights.h5")), "wb") as handle:
        handle.write(b"weights")
    folder.write_json("history.json", {"runs": [], "epochs": []})
    folder.sync()
    again = JobFolder.open(gcs_folder, str(tmp_path / "again"))
    assert again.backup_epoch() == 3 and again.exists(HISTORY) and again.local != folder.local
    os.remove(folder.path(os.path.join(BACKUP, "latest.weights.h5")))
    folder.sync()
    assert storage.match(f"{gcs_folder}/{BACKUP}/**") == [f"{gcs_folder}/{BACKUP_METADATA}"]


def test_a_remote_job_dir_without_progress_starts_from_an_empty_local_copy(gcs_folder, tmp_path):
    storage.write_text(f"{gcs_folder}/history.json", "{}")  # no backup, no self-critical history: nothing to resume
    stale = tmp_path / "work" / "job"
    stale.mkdir(parents=True)
    (stale / "leftover.txt").write_text("from an earlier run in the same --work_dir")
    folder = JobFolder.open(gcs_folder, str(tmp_path / "work"))
    assert os.listdir(folder.local) == [] and folder.backup_epoch() == 0
    assert folder.shown(BACKUP_METADATA) == f"{gcs_folder}/{BACKUP_METADATA}"


def test_refuses_wrong_schema_version_and_missing_spatial_features(tmp_path):
    pooled_only = str(tmp_path / "pooled_only")
    write_synthetic_features(pooled_only, num_train=8, num_dev=2, num_test=2, spatial=False)
    with pytest.raises(manifest_lib.ManifestError, match=r"train.features=spatial .* no 'spatial' features"):
        job.run(tiny_config(), pooled_only, str(tmp_path / "job1"), verbose=0)
    folder = features_folder.open_features(pooled_only, tiny_config(features="pooled").train, "unused")
    assert folder.feature == "pooled" and folder.shape == [12]

    manifest = json.loads((tmp_path / "pooled_only" / "manifest.json").read_text())
    manifest["schema_version"] = schema.SCHEMA_VERSION + 1
    (tmp_path / "pooled_only" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(manifest_lib.ManifestError, match="schema version"):
        job.run(tiny_config(features="pooled"), pooled_only, str(tmp_path / "job2"), verbose=0)


def test_refuses_a_manifest_whose_shape_does_not_match_the_records(tmp_path):
    folder = tmp_path / "features"
    write_synthetic_features(str(folder), num_train=8, num_dev=2, num_test=2)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["features"]["spatial"]["shape"] = [3, 3, 12]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(manifest_lib.ManifestError, match="different extractions"):
        features_folder.open_features(str(folder), tiny_config().train, "unused")


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        task.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    flags = [opt for action in task.build_parser()._actions for opt in action.option_strings]
    assert set(flags) >= {"--config", "--set", "--features", "--job_dir", "--eval_split", "--devices", "--work_dir"}
    for flag in flags:
        assert flag in text, flag


@pytest.mark.slow
def test_a_loss_that_becomes_nan_fails_the_job_and_exports_nothing(tmp_path):
    features = str(tmp_path / "features")
    write_synthetic_features(features, 60, 12, 12)
    config = tiny_config(epochs=3, learning_rate=1e30, lr_schedule="constant")
    with pytest.raises(TrainingFailed, match="the loss became nan in epoch 1.*lower the learning rate"):
        job.run(config, features, str(tmp_path / "job"), verbose=0, eval_split="none")
    assert not os.path.exists(tmp_path / "job" / "export")


def test_a_damaged_shard_stops_the_job_before_training_naming_it(tmp_path):
    features = str(tmp_path / "features")
    write_synthetic_features(features, 24, 6, 6)
    shard = sorted((tmp_path / "features" / "train").glob("records-*.tfrecord"))[1]
    data_bytes = bytearray(shard.read_bytes())
    data_bytes[len(data_bytes) // 2] ^= 0xFF  # one flipped byte: the record's CRC no longer holds
    shard.write_bytes(bytes(data_bytes))
    with pytest.raises(manifest_lib.ManifestError, match=f"fail their TFRecord checksums.*{shard.name}"):
        job.run(tiny_config(epochs=1), features, str(tmp_path / "job"), verbose=0, eval_split="none")
    assert not os.path.exists(tmp_path / "job" / "history.json")
