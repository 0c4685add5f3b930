"""Ctrl-C, SIGTERM and SIGKILL on real processes of every stage, and the README's recovery (run it again).

A signalled run ends with one line, exit 130 (SIGINT) or 143 (SIGTERM), no process of its session left
running and no marker; a killed one leaves at most Beam's temporary folders, which the next run removes. After
kills at several points, the same command gives what one clean run gives: every image once, nothing lost.
"""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from captioner import bundle, output_folder, schema, storage
from captioner import manifest as manifest_lib
from captioner.layout import BLEU_JSON, BUNDLE_FILE, CAPTION_FILES, FEATURES_FILES, MANIFEST_FILE
from pipelines import caption_and_score, extract_features
from pipelines.caption import outputs
from tests.conftest import PROJECT_ROOT
from tests.kill import backed_up_epoch, signal_when
from tests.synthetic_features import overrides, tiny_config
from tests.test_captioning import trained_demo
from trainer.job_folder import HISTORY, SELF_CRITICAL_HISTORY

pytestmark = pytest.mark.slow
PYTHON = [sys.executable, "-m"]
MULTI_PROCESS = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
IN_PROCESS = ["--runner=FnApiRunner"]
CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(demo data folder, a trained bundle) from 120 generated scenes."""
    return trained_demo(tmp_path_factory, "interrupts", 120)


def _caption_flags(demo, output: str) -> list:
    data, export = demo
    return ["--config", "local", "--set", "caption.meteor=false", "--model", export, "--images",
            os.path.join(data, "images", "*"), "--references", os.path.join(data, "captions.txt"), "--output", output]


def _extract_flags(demo, output: str) -> list:
    data, _ = demo
    return ["--config", "local", "--images", os.path.join(data, "images", "*"), "--captions",
            os.path.join(data, "captions.txt"), "--splits", data, "--output", output]


def _beam_temp(output: str) -> list:
    return glob.glob(os.path.join(output, "beam-temp-*")) + glob.glob(os.path.join(output, "*", "beam-temp-*"))


def _assert_one_line_and_nothing_left(code: int, log: str, left: list, sent: int) -> None:
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert code == CODES[sent], log[-3000:]
    assert len(errors) == 1 and errors[0].startswith(
        "error: interrupted (Ctrl-C)" if sent == signal.SIGINT else "error: terminated (SIGTERM)"), log[-3000:]
    assert "Traceback" not in log and "terminate called" not in log, log[-3000:]
    assert left == [], f"processes left running: {left}"


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_the_caption_job_with_worker_processes_stops_with_one_line(demo, tmp_path, sent):
    output = str(tmp_path / "captions")
    code, log, left = signal_when(PYTHON + ["pipelines.caption_and_score", *_caption_flags(demo, output),
                                            *MULTI_PROCESS],
                                  lambda log: "loading the captioner bundle" in log, sent, str(tmp_path / "log"), 180)
    _assert_one_line_and_nothing_left(code, log, left, sent)
    assert not os.path.exists(os.path.join(output, BLEU_JSON))


def test_extraction_with_worker_processes_stops_with_one_line(demo, tmp_path):
    output = str(tmp_path / "features")
    code, log, left = signal_when(PYTHON + ["pipelines.extract_features", *_extract_flags(demo, output),
                                            *MULTI_PROCESS],
                                  lambda _: bool(_beam_temp(output)), signal.SIGTERM, str(tmp_path / "log"), 180)
    _assert_one_line_and_nothing_left(code, log, left, signal.SIGTERM)
    assert not os.path.exists(os.path.join(output, MANIFEST_FILE))


def test_the_trainer_and_the_chained_stages_stop_with_one_line_and_pass_the_signal_on(demo, tmp_path):
    data, export = demo
    features = os.path.join(os.path.dirname(os.path.dirname(export)), "features")
    job_dir = str(tmp_path / "job")
    code, log, left = signal_when(
        PYTHON + ["trainer.task", "--config", "local", "--set", "train.epochs=50", "--features", features,
                  "--job_dir", job_dir, "--verbose", "2"],
        lambda _: backed_up_epoch(os.path.join(job_dir, "backup", "training_metadata.json")) >= 1,
        signal.SIGINT, str(tmp_path / "trainer.log"), 300)
    _assert_one_line_and_nothing_left(code, log, left, signal.SIGINT)
    assert not os.path.exists(os.path.join(job_dir, "export"))
    # the chained stages: SIGTERM to the parent alone reaches the stage it runs (the trainer here)
    code, log, left = signal_when(
        PYTHON + ["tools.end_to_end", "--data", data, "--workdir", str(tmp_path / "chained"), "--set",
                  "train.epochs=50", "--workers", "1"],
        lambda log: "Epoch 1/50" in log, signal.SIGTERM, str(tmp_path / "chained.log"), 300)
    assert code == 143 and left == [], log[-3000:]
    assert log.count("error: terminated (SIGTERM)") == 2 and "Traceback" not in log, log[-3000:]


def _rows_by_id(output: str) -> dict:
    rows = [json.loads(line) for path in outputs.caption_files(output)
            for line in storage.read_text(path).splitlines()]
    by_id = {row["image_id"]: row for row in rows}
    assert len(by_id) == len(rows), "an image captioned twice"
    return by_id


def test_caption_runs_killed_at_three_points_then_run_again_equal_a_clean_run(demo, tmp_path):
    clean, output = str(tmp_path / "clean"), str(tmp_path / "killed")
    caption_and_score.run(_caption_flags(demo, clean) + IN_PROCESS)
    command = PYTHON + ["pipelines.caption_and_score", *_caption_flags(demo, output), *IN_PROCESS]
    finished = os.path.join(output, BLEU_JSON)
    points = {"matching": lambda _: bool(_beam_temp(output)),
              "inference": lambda log: "loading the captioner bundle" in log,
              "final writes": lambda _: bool(glob.glob(os.path.join(output, "captions-*-of-*")))}
    for point, ready in points.items():
        code, log, _ = signal_when(command, ready, signal.SIGKILL, str(tmp_path / f"{point}.log"), 300)
        assert code == -signal.SIGKILL and not os.path.exists(finished), (point, log[-2000:])
    assert _beam_temp(output), "the kills left Beam's temporary folders"
    caption_and_score.run(_caption_flags(demo, output) + IN_PROCESS)  # the README's recovery: the same command
    assert _beam_temp(output) == []
    with open(finished) as handle, open(os.path.join(clean, BLEU_JSON)) as clean_handle:
        recovered, expected = json.load(handle), json.load(clean_handle)
    assert recovered["counts"] == expected["counts"] and recovered["counts"]["captioned"] == 120
    rows, clean_rows = _rows_by_id(output), _rows_by_id(clean)
    assert sorted(rows) == sorted(clean_rows)
    np.testing.assert_allclose([rows[i]["log_prob"] for i in sorted(rows)],
                               [clean_rows[i]["log_prob"] for i in sorted(rows)], rtol=1e-4, atol=1e-4)


def _records(output: str) -> dict:
    with open(os.path.join(output, MANIFEST_FILE)) as handle:
        manifest = json.load(handle)
    records = [schema.parse_example_py(record) for split in schema.SPLITS
               for path in manifest_lib.shard_files(manifest, output, split) for record in _read_tfrecords(path)]
    by_id = {record["image_id"]: record for record in records}
    assert len(by_id) == len(records), "an image written twice"
    return by_id


def _read_tfrecords(path: str):
    import tensorflow as tf
    return [record.numpy() for record in tf.data.TFRecordDataset(path)]


def test_extractions_killed_at_three_points_then_run_again_equal_a_clean_run(demo, tmp_path):
    clean, output = str(tmp_path / "clean"), str(tmp_path / "killed")
    extract_features.run(_extract_flags(demo, clean) + IN_PROCESS)
    command = PYTHON + ["pipelines.extract_features", *_extract_flags(demo, output), *IN_PROCESS]
    points = {"matching": lambda _: bool(_beam_temp(output)),
              "inference": lambda log: "loading encoder" in log,
              "final writes": lambda _: bool(glob.glob(os.path.join(output, "*", "records-*-of-*")))}
    for point, ready in points.items():
        code, log, _ = signal_when(command, ready, signal.SIGKILL, str(tmp_path / f"{point}.log"), 300)
        assert code == -signal.SIGKILL and not os.path.exists(os.path.join(output, MANIFEST_FILE)), log[-2000:]
    extract_features.run(_extract_flags(demo, output) + IN_PROCESS)
    assert _beam_temp(output) == []
    records, clean_records = _records(output), _records(clean)
    assert sorted(records) == sorted(clean_records) and len(records) == 120
    for image_id, record in records.items():
        assert record == clean_records[image_id], image_id


def _json_or_none(path: str):
    try:
        return json.loads(storage.read_text(path))
    except Exception:  # noqa: BLE001 - not there yet, or half written
        return None


@pytest.mark.parametrize("where", ["local", "gs"])
def test_a_trainer_killed_in_self_critical_epochs_and_in_export_goes_on_and_exports_a_whole_bundle(
        synthetic, tmp_path, request, where):
    job_dir = str(tmp_path / "job") if where == "local" else request.getfixturevalue("gcs_folder") + "/job"
    config = tiny_config(epochs=2, self_critical_epochs=4)
    command = PYTHON + ["trainer.task", "--features", synthetic, "--job_dir", job_dir, "--eval_split", "none",
                        "--verbose", "0", *overrides(config)]
    scst = storage.join(job_dir, SELF_CRITICAL_HISTORY)
    points = {"self-critical": lambda _: len((_json_or_none(scst) or {}).get("epochs", [])) >= 2,
              "export": lambda _: bool(storage.match(storage.join(job_dir, "export", "*")))}
    for point, ready in points.items():
        code, log, _ = signal_when(command, ready, signal.SIGKILL, str(tmp_path / f"{point}.log"), 300)
        assert code == -signal.SIGKILL, (point, log[-2000:])
    last = subprocess.run(command, cwd=PROJECT_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert last.returncode == 0, last.stdout[-3000:]
    assert "the cross-entropy epochs finished in an earlier run" in last.stdout
    assert len(_json_or_none(storage.join(job_dir, HISTORY))["runs"]) == 1  # trained once, never again
    assert [epoch["epoch"] for epoch in _json_or_none(scst)["epochs"]] == [0, 1, 2, 3, 4]
    export = storage.join(job_dir, "export")
    bundle.check_files(export, _json_or_none(storage.join(export, BUNDLE_FILE)))  # every file whole
    assert len(bundle.Captioner.load(export).tokens) > 4  # the model and its vocabulary load


@pytest.mark.parametrize("where", ["local", "gs"])
def test_the_next_run_removes_beam_temp_folders_of_its_own_sinks_and_nothing_else(tmp_path, request, where):
    folder = str(tmp_path) if where == "local" else request.getfixturevalue("gcs_folder")
    uuid_hex = "1edbcf5cf1e011f1b82e02fc00000001"
    left = [f"beam-temp-captions-{uuid_hex}/part-0", f"beam-temp-dead_letter-{uuid_hex}/part-0",
            f"train/beam-temp-records-{uuid_hex}/part-0"]
    kept = [f"beam-temp-photos-{uuid_hex}/mine.jpg", "beam-temp-captions-notes/mine.txt", "captions.txt"]
    for name in left + kept:
        storage.write_text(storage.join(folder, name), "x")
    if where == "local":
        os.makedirs(os.path.join(folder, f"beam-temp-coco_results-{uuid_hex}"))  # Beam makes them empty first
    output_folder.prepare(folder, BLEU_JSON, outputs.listed_files, CAPTION_FILES, False, "caption run")
    output_folder.prepare(folder, MANIFEST_FILE, manifest_lib.listed_files, FEATURES_FILES, False, "extraction")
    assert [name for name in left + kept if storage.exists(storage.join(folder, name))] == kept
    assert not glob.glob(os.path.join(folder, "beam-temp-coco_results-*"))
