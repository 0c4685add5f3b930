"""The Keras callbacks a cross-entropy `fit` writes the job dir with: history, TensorBoard, gs:// sync."""
from __future__ import annotations

import importlib.util
import logging
import math
import os
import shutil
import time
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

from captioner.errors import OutputError
from trainer.job_folder import HISTORY, JobFolder

log = logging.getLogger("trainer")


def empty_history() -> dict:
    return {"runs": [], "epochs": []}


class HistoryFile(keras.callbacks.Callback):
    """job_dir/history.json (or a later phase's): one entry per run (where it started) and per finished epoch,
    rewritten each epoch."""

    def __init__(self, folder: JobFolder, initial_epoch: int, run_info: Mapping, relative: str = HISTORY):
        super().__init__()
        self.folder, self.relative = folder, relative
        self.history = folder.read_json(relative, empty_history()) if initial_epoch else empty_history()
        self.history["epochs"] = [e for e in self.history["epochs"] if e["epoch"] <= initial_epoch]
        self.history["runs"].append({"run": len(self.history["runs"]) + 1, "initial_epoch": initial_epoch,
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%S"), **run_info})
        self._started = time.time()

    def on_train_begin(self, logs=None):
        self.history.pop("finished", None)
        self.folder.write_json(self.relative, self.history)

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": epoch + 1, "run": self.history["runs"][-1]["run"],
                 "seconds": round(time.time() - self._started, 3)}
        entry.update({k: float(v) for k, v in (logs or {}).items()})
        entry.setdefault("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        self.history["epochs"].append(entry)
        self.folder.write_json(self.relative, self.history)

    def on_train_end(self, logs=None):
        """Marks the phase finished (a re-run goes on from it) unless it ended on a non-finite loss; says whether
        early stopping ended it (then more epochs would not help: a re-run does not train on)."""
        epochs = self.history["epochs"]
        if epochs and math.isfinite(epochs[-1].get("loss", math.nan)):
            self.history["finished"] = {"epochs": epochs[-1]["epoch"], "stopped_early": bool(self.model.stop_training)}
            self.folder.write_json(self.relative, self.history)


class EpochSummaries(keras.callbacks.Callback):
    """TensorBoard scalars per epoch (logs/train, logs/validation) without the tensorboard package.

    `tensorflow-cpu` 2.21 does not depend on tensorboard, and Keras's TensorBoard
    callback fails without it; `tf.summary.write` with the scalars plugin's
    metadata is in TensorFlow itself and writes event files TensorBoard reads.
    """

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writers = {}
        from tensorflow.core.framework import summary_pb2
        self._metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class=summary_pb2.DATA_CLASS_SCALAR)

    def _writer(self, name: str):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.log_dir, name))
        return self._writers[name]

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs.setdefault("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        for key, value in logs.items():
            name, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writer(name).as_default():
                tf.summary.write(f"epoch_{tag}", tf.constant(float(value)), step=epoch, metadata=self._metadata)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()


def tensorboard_callback(log_dir: str) -> keras.callbacks.Callback:
    """Keras's TensorBoard callback when the tensorboard package is installed, else EpochSummaries."""
    if importlib.util.find_spec("tensorboard") is not None:
        return keras.callbacks.TensorBoard(log_dir, write_graph=False, profile_batch=0)
    return EpochSummaries(log_dir)


class SyncToRemote(keras.callbacks.Callback):
    """After every epoch (after the backup is written), mirror the local job folder to gs://."""

    def __init__(self, folder: JobFolder):
        super().__init__()
        self.folder = folder

    def on_epoch_end(self, epoch, logs=None):
        started = time.time()
        self.folder.sync()
        log.info("epoch %d synced to %s in %.1f s", epoch + 1, self.folder.remote, time.time() - started)


SPACE_PER_WEIGHTS = 5  # a backup (weights and two Adam slots), the best weights, and room to spare
SPACE_MARGIN_BYTES = 16 << 20


def check_disk_space(folder: JobFolder, model: keras.Model) -> None:
    """Refuses to write checkpoints that cannot fit: HDF5 fails a write to a full disk halfway, leaving a file
    handle that crashes the process on exit (SIGSEGV), so the job stops before that with one line."""
    weights = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)  # no copies
    needed, free = SPACE_PER_WEIGHTS * weights + SPACE_MARGIN_BYTES, shutil.disk_usage(folder.local).free
    if free < needed:
        raise OutputError(f"{folder.local} has {free / 2**20:.1f} MiB free; this job's checkpoints need about "
                          f"{needed / 2**20:.0f} MiB; free some space (or use another --job_dir) and run the same "
                          "command again: it resumes from the last epoch")


class DiskSpace(keras.callbacks.Callback):
    """check_disk_space at the start and before each epoch's checkpoints (it comes first among the callbacks)."""

    def __init__(self, folder: JobFolder):
        super().__init__()
        self.folder = folder

    def on_train_begin(self, logs=None):
        check_disk_space(self.folder, self.model)

    def on_epoch_end(self, epoch, logs=None):
        check_disk_space(self.folder, self.model)
