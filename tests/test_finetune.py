"""Fine-tuning the encoder with the decoder on the kept images: trained, resumed, exported, and captioned with."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from captioner import bundle, manifest
from captioner.decoder.decoding import Decoding
from captioner.encoders import EncoderError
from captioner.layout import BUNDLE_FILE, FINE_TUNED_ENCODER_FILE
from captioner.manifest import ManifestError
from pipelines import caption_and_score
from tests.conftest import PROJECT_ROOT
from tests.kill import ENV, kill_after_backup
from tests.synthetic_features import (overrides, thumbnail_scenes, tiny_config, tiny_keras_encoder,
                                      write_synthetic_features)
from trainer import features_folder, finetune, job
from trainer.job_folder import ENCODER_FINETUNING, FINETUNE_ENCODER, HISTORY

pytestmark = pytest.mark.slow  # each test trains


def _config(**train):
    values = dict(epochs=8, finetune_encoder_epochs=2, finetune_encoder_blocks=2, encoder_learning_rate=1e-3,
                  finetune_learning_rate=3e-3, early_stopping_patience=0)
    return tiny_config(**{**values, **train})


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """Thumbnail scenes encoded by a tiny random `.keras` CNN, the records keeping their images."""
    folder = tmp_path_factory.mktemp("finetune")
    encoder = tiny_keras_encoder(str(folder / "encoder.keras"))
    features = str(folder / "features")
    write_synthetic_features(features, 192, 24, 12, encoder=encoder, keep_images=True)
    return features, encoder


@pytest.fixture(scope="module")
def tuned(kept, tmp_path_factory):
    """One job, on two replicas (MirroredStrategy over two logical CPUs), with its encoder fine-tuned."""
    features, _ = kept
    job_dir = str(tmp_path_factory.mktemp("job") / "job")
    return job.run(_config(), features, job_dir, devices=["/cpu:0", "/cpu:1"], verbose=0)


def test_the_top_blocks_train_the_rest_stay_and_the_bundle_carries_the_encoder(kept, tuned):
    features, encoder_path = kept
    assert tuned.summary["replicas"] == 2 and tuned.summary["encoder_finetune_epochs_run"] == 2
    assert tuned.summary["bleu"]["bleu4"] > 0.8  # scored from the images, through the exported encoder
    # from the cross-entropy model, training the CNN too lowers the dev loss further (0.24 -> 0.20 when written)
    assert tuned.summary["encoder_finetune_best_val_loss"] < 0.95 * tuned.summary["best_val_loss"]
    before = {layer.name: layer.get_weights() for layer in keras.saving.load_model(encoder_path).layers}
    exported = os.path.join(tuned.export_dir, "encoder", FINE_TUNED_ENCODER_FILE)
    after = {layer.name: layer.get_weights() for layer in keras.saving.load_model(exported, safe_mode=True).layers}
    assert all(np.array_equal(a, b) for a, b in zip(before["block0_conv"], after["block0_conv"]))  # frozen
    for name in ("block1_conv", "block2_conv"):  # the top 2 blocks trained
        assert not np.array_equal(before[name][0], after[name][0])

    info = bundle.read_info(tuned.export_dir)
    original = manifest.read(features)["encoder"]
    assert info["encoder"]["finetuned_from"]["weights_sha256"] == original["weights_sha256"]
    assert info["encoder"]["weights_sha256"] != original["weights_sha256"]
    assert f"encoder/{FINE_TUNED_ENCODER_FILE}" in info["checksums"]
    captioner = bundle.Captioner.load(tuned.export_dir)
    images, _ = thumbnail_scenes(6, seed=21)
    decoding = Decoding(2, 0.0, 16)
    from_images = captioner.caption_images(images, decoding)
    assert from_images == captioner.caption_features(captioner.encoder.encode(images), decoding)
    with pytest.raises(ManifestError, match="fine-tuned its encoder.*caption from the images"):
        manifest.check_compatible(manifest.read(features), info["encoder"], info["features"], source=features)


def test_the_caption_job_captions_images_through_the_bundles_encoder(kept, tuned, tmp_path):
    images, _ = thumbnail_scenes(5, seed=31)
    folder = tmp_path / "images"
    folder.mkdir()
    for number, image in enumerate(images):
        Image.fromarray(image).save(folder / f"scene{number}.png")
    summary = caption_and_score.run(["--config", "local", "--model", tuned.export_dir, "--images",
                                     str(folder / "*.png"), "--output", str(tmp_path / "out"), "--runner=FnApiRunner",
                                     "--set", "caption.beam_size=2", "--set", "caption.length_penalty=0"])
    assert summary["counts"]["captioned"] == 5
    rows = {}
    for path in (tmp_path / "out").glob("captions-*.jsonl"):
        rows.update({row["image_id"]: row["caption"] for row in map(json.loads, path.read_text().splitlines())})
    expected = bundle.Captioner.load(tuned.export_dir).caption_images(images, Decoding(2, 0.0, 16))
    assert [rows[f"scene{n}.png"] for n in range(5)] == [caption for caption, _ in expected]
    with pytest.raises(ManifestError, match="re-extract the features with the model's encoder"):
        caption_and_score.run(["--config", "local", "--model", tuned.export_dir, "--features", kept[0],
                               "--output", str(tmp_path / "refused"), "--runner=FnApiRunner"])


def test_without_kept_images_or_with_a_frozen_encoder_the_job_stops_before_any_work(kept, tmp_path):
    plain = str(tmp_path / "plain")
    write_synthetic_features(plain, 12, 3, 3, encoder=kept[1])
    with pytest.raises(ManifestError, match="keep none: re-extract with --set extract.keep_images=true"):
        job.run(_config(), plain, str(tmp_path / "job"), verbose=0)
    assert not os.path.exists(os.path.join(tmp_path, "job", HISTORY))
    thumbnails = str(tmp_path / "thumbnails")
    write_synthetic_features(thumbnails, 12, 3, 3, encoder="thumbnail", keep_images=True)
    folder = features_folder.open_features(thumbnails, _config().train, cache_dir="unused")
    with pytest.raises(EncoderError, match="needs a trainable encoder.*from_tflite"):
        finetune.check_inputs(folder, _config().train)


def test_a_killed_fine_tuning_resumes_where_its_backup_is(kept, tmp_path):
    features, _ = kept
    job_dir = str(tmp_path / "job")
    config = _config(epochs=1, finetune_encoder_epochs=4, self_critical_epochs=1, self_critical_samples=2)
    command = [sys.executable, "-m", "trainer.task", "--features", features, "--job_dir", job_dir,
               "--eval_split", "none", "--verbose", "2", *overrides(config)]
    killed_at = kill_after_backup(command, os.path.join(job_dir, ENCODER_FINETUNING.backup_metadata),
                                  str(tmp_path / "first.log"), 240)
    assert 1 <= killed_at < 4 and not os.path.exists(os.path.join(job_dir, FINETUNE_ENCODER))

    second = subprocess.run(command, cwd=PROJECT_ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "the cross-entropy epochs finished in an earlier run" in second.stdout
    assert f"encoder fine-tuning: resuming from the backup of epoch {killed_at} of 4" in second.stdout
    with open(os.path.join(job_dir, HISTORY)) as handle:
        assert len(json.load(handle)["runs"]) == 1  # the cross-entropy phase ran once
    with open(os.path.join(job_dir, ENCODER_FINETUNING.history)) as handle:
        tuned = json.load(handle)
    assert [r["initial_epoch"] for r in tuned["runs"]] == [0, killed_at]
    assert [e["epoch"] for e in tuned["epochs"]] == [1, 2, 3, 4]
    with open(os.path.join(job_dir, "export", BUNDLE_FILE)) as handle:
        assert "finetuned_from" in json.load(handle)["encoder"]


def test_two_workers_fine_tune_the_encoder_and_only_the_chief_exports_it(kept, tmp_path):
    """train.strategy=multi_worker: the custom loop runs the fine-tuning phase too, then self-critical epochs."""
    from tests.test_multi_worker import _logs, _workers
    from trainer import local_cluster
    features, _ = kept
    job_dir, log_dir = str(tmp_path / "job"), tmp_path / "logs"
    config = _config(epochs=2, finetune_encoder_epochs=1, self_critical_epochs=1, self_critical_samples=2,
                     batch_size=8, strategy="multi_worker")
    processes = _workers(config, features, job_dir, log_dir, "--eval_split", "dev")
    assert local_cluster.wait(processes) == 0, _logs(log_dir)[0][-3000:]
    chief, worker = _logs(log_dir)
    assert "encoder fine-tuning: 1 epochs on the kept images" in chief and "in 2 worker(s)" in chief
    assert "worker 1 of 2: done; the chief exports" in worker
    with open(os.path.join(job_dir, ENCODER_FINETUNING.history)) as handle:
        assert [e["epoch"] for e in json.load(handle)["epochs"]] == [1]
    with open(os.path.join(job_dir, "export", BUNDLE_FILE)) as handle:
        assert "finetuned_from" in json.load(handle)["encoder"]
    assert os.path.exists(os.path.join(job_dir, "export", "encoder", FINE_TUNED_ENCODER_FILE))


def test_a_damaged_bundle_file_is_refused_before_the_job(tuned, tmp_path):
    import shutil
    from captioner.bundle import BundleError
    for damaged in ("decoder.keras", f"encoder/{FINE_TUNED_ENCODER_FILE}"):
        export = tmp_path / damaged.replace("/", "_")
        shutil.copytree(tuned.export_dir, export)
        with open(export / damaged, "r+b") as handle:  # one byte flipped in the middle
            handle.seek(500)
            byte = handle.read(1)
            handle.seek(500)
            handle.write(bytes([byte[0] ^ 0xFF]))
        with pytest.raises(BundleError, match=f"{damaged} is missing or does not match bundle.json"):
            caption_and_score.run(["--config", "local", "--model", str(export), "--images",
                                   str(tmp_path / "none" / "*.png"), "--output", str(tmp_path / "out")])
