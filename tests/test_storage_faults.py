"""Every stage on gs:// through storage faults (tests/fault_proxy.py in front of the GCS emulator) writes what a
fault-free run writes: the client libraries' retries carry the run, and nothing is lost or doubled.

The features are compared byte for byte, the training by what it read and wrote (one run, every epoch, a whole
bundle), the captions by image and count."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from urllib.parse import urlparse

import numpy as np
import pytest

from captioner import bundle, schema, storage
from captioner import manifest as manifest_lib
from captioner.layout import BLEU_JSON, BUNDLE_FILE
from pipelines import caption_and_score, extract_features
from pipelines.caption import outputs
from tests.conftest import PROJECT_ROOT
from tests.fault_proxy import FaultProxy
from tests.test_captioning import TINY_TRAINING
from tools import demo_data
from trainer import task

pytestmark = pytest.mark.slow
FAULTS = {503: 0.08, 429: 0.04, "reset": 0.03}  # of every request: about one in seven fails
BEAM = "--runner=FnApiRunner"


def _stage_flags(folder: str) -> dict:
    data = f"{folder}/data"
    return {
        "pipelines.extract_features": ["--config", "local", "--images", f"{data}/images/*", "--captions",
                                       f"{data}/captions.txt", "--splits", data, "--output", f"{folder}/features",
                                       BEAM],
        "trainer.task": ["--config", "local", *TINY_TRAINING, "--set", "train.epochs=1", "--features",
                         f"{folder}/features", "--job_dir", f"{folder}/job", "--eval_split", "none",
                         "--devices", "/cpu:0,/cpu:1", "--verbose", "0"],
        "pipelines.caption_and_score": ["--config", "local", "--set", "caption.meteor=false", "--model",
                                        f"{folder}/job/export", "--images", f"{data}/images/*", "--references",
                                        f"{data}/captions.txt", "--output", f"{folder}/captions", BEAM],
    }


def _records(folder: str) -> dict:
    written = json.loads(storage.read_text(f"{folder}/features/manifest.json"))
    records = [schema.parse_example_py(record) for split in schema.SPLITS
               for path in manifest_lib.shard_files(written, f"{folder}/features", split)
               for record in _tfrecords(path)]
    assert len({r["image_id"] for r in records}) == len(records)
    return {r["image_id"]: r for r in records}


def _tfrecords(path: str):
    """The records of a shard on gs:// (TensorFlow's own GCS client does not know the emulator)."""
    from apache_beam.io.tfrecordio import _TFRecordUtil
    stream, records = io.BytesIO(storage.read_bytes(path)), []
    while (record := _TFRecordUtil.read_record(stream)) is not None:
        records.append(record)
    return records


def _rows(folder: str) -> dict:
    rows = [json.loads(line) for path in outputs.caption_files(f"{folder}/captions")
            for line in storage.read_text(path).splitlines()]
    assert len({r["image_id"] for r in rows}) == len(rows)
    return {r["image_id"]: r for r in rows}


def test_every_stage_through_storage_faults_writes_what_a_fault_free_run_writes(gcs_emulator, tmp_path):
    base = f"gs://{gcs_emulator}/{uuid.uuid4().hex[:10]}"
    demo_data.generate(str(tmp_path / "data"), num_images=30)
    for run in ("clean", "faulty"):
        storage.copy_folder_from_local(str(tmp_path / "data"), f"{base}/{run}/data")
    clean = _stage_flags(f"{base}/clean")  # in this process, straight to the emulator
    extract_features.run(clean["pipelines.extract_features"])
    assert task.main(clean["trainer.task"]) == 0
    caption_and_score.run(clean["pipelines.caption_and_score"])

    emulator = urlparse(os.environ["STORAGE_EMULATOR_HOST"])
    with FaultProxy((emulator.hostname, emulator.port), FAULTS, seed=7) as proxy:
        env = dict(os.environ, STORAGE_EMULATOR_HOST=proxy.endpoint, TF_CPP_MIN_LOG_LEVEL="2")
        for module, flags in _stage_flags(f"{base}/faulty").items():
            run = subprocess.run([sys.executable, "-m", module, *flags], cwd=PROJECT_ROOT, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
            assert run.returncode == 0, (module, proxy.counts, run.stdout[-3000:])
        print(f"\nthrough the proxy: {proxy.counts}")
        assert all(proxy.counts[fault] >= 5 for fault in FAULTS), proxy.counts
        proxy.faults = {}  # the emulator's media links name the proxy for what was written through it
        _assert_equal_runs(base)


def _assert_equal_runs(base: str) -> None:
    records, clean_records = _records(f"{base}/faulty"), _records(f"{base}/clean")
    assert sorted(records) == sorted(clean_records) and len(records) == 30
    for image_id, record in records.items():  # the same record, but for where its image was
        assert record["image_path"] == clean_records[image_id]["image_path"].replace("/clean/", "/faulty/")
        assert {**record, "image_path": None} == {**clean_records[image_id], "image_path": None}, image_id
    # training reads what it read without faults (its result in another process may differ in the last digits)
    history, clean_history = (json.loads(storage.read_text(f"{base}/{run}/job/history.json"))
                              for run in ("faulty", "clean"))
    assert len(history["runs"]) == 1 and [e["epoch"] for e in history["epochs"]] == [1]
    assert history["runs"][0]["train_examples"] == clean_history["runs"][0]["train_examples"]
    export = f"{base}/faulty/job/export"
    bundle.check_files(export, json.loads(storage.read_text(f"{export}/{BUNDLE_FILE}")))
    summary, clean_summary = (json.loads(storage.read_text(f"{base}/{run}/captions/{BLEU_JSON}"))
                              for run in ("faulty", "clean"))
    assert summary["counts"] == clean_summary["counts"] and summary["counts"]["captioned"] == 30
    rows, clean_rows = _rows(f"{base}/faulty"), _rows(f"{base}/clean")
    assert sorted(rows) == sorted(clean_rows) and all(np.isfinite(r["log_prob"]) for r in rows.values())
