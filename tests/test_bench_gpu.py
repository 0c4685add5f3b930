"""`python -m bench.gpu --smoke`: its one table has every measurement, each a measured number or a reasoned n/a.

The benchmark is meant for a GPU lent only now and then, so CI runs it here, on the CPU, with tiny sizes: a
script that breaks would otherwise be found only when the GPU is there.
"""
import math
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf

from tests.conftest import PROJECT_ROOT, SHARED_DIR

TFLITE = os.path.join(SHARED_DIR, "models", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
STEP = ("s per step", "captions/s")
UNITS = {  # measurement -> its rows' units
    "extraction, float Keras encoder": ("images/s",),
    "extraction, TFLite encoder on the CPU": ("images/s",),
    "training step, transformer, float32": STEP,
    "training step, transformer, mixed_float16": STEP,
    "training step, attention LSTM, float32": STEP,
    "training step, transformer, MirroredStrategy": STEP,
    "training step, transformer + encoder fine-tuning": STEP,
    "captioning, greedy, stored features": ("captions/s",),
    "captioning, beam 3, stored features": ("captions/s",),
    "captioning, JPEG bytes end to end": ("captions/s",),
}


def _number(cell: str):
    try:
        return float(cell)
    except ValueError:
        return None


def _may_be_missing(measurement: str, gpus: list) -> bool:
    """Where n/a is allowed: mixed_float16 on a CPU, and the TFLite encoder without ../shared's file."""
    if measurement == "training step, transformer, mixed_float16":
        return not gpus
    return measurement == "extraction, TFLite encoder on the CPU" and not os.path.exists(TFLITE)


@pytest.mark.slow
def test_the_smoke_run_measures_every_row_and_names_the_device():
    run = subprocess.run([sys.executable, "-m", "bench.gpu", "--smoke"], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    heading = lines[0]
    gpus = tf.config.list_physical_devices("GPU")
    devices = [tf.config.experimental.get_device_details(gpu)["device_name"] for gpu in gpus]
    assert heading.startswith("## ") and f"TensorFlow {tf.__version__}" in heading
    assert all(name in heading for name in devices) if gpus else "CPU only (no GPU visible)" in heading
    assert "- command: `python -m bench.gpu --smoke`" in lines
    table = [line for line in lines if line.startswith("| ")][2:]  # after the header and its rule
    rows = [[cell.strip() for cell in line[2:-2].split(" | ")] for line in table]
    assert all(len(row) == 4 for row in rows), table
    assert sorted((row[0], row[3]) for row in rows) == sorted(
        (name, unit) for name, units in UNITS.items() for unit in units)
    for measurement, setting, value, unit in rows:
        number = _number(value)
        if number is None:
            assert _may_be_missing(measurement, gpus) and re.fullmatch(r"n/a[^:]*: \S.*", value), (measurement, value)
        else:
            assert math.isfinite(number) and number > 0, (measurement, unit, value)
    greedy = next(row for row in rows if row[0] == "captioning, greedy, stored features")
    assert "mean 20.0 words" in greedy[1], greedy  # END suppressed: every caption is as long as decoding allows
