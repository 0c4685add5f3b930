"""Distributed training: the strategy, the masked caption loss, the schedule, the callbacks and `fit`.

Fault tolerance is Keras's: `BackupAndRestore` in job_dir/backup resumes an
interrupted `fit` at the last finished epoch; the best weights by dev loss
are kept apart (ModelCheckpoint) and restored before export. When the job dir
is gs://, everything is written to a local folder and mirrored to the bucket
after every epoch (TensorFlow's own gs:// ignores the emulator and needs a
plugin that breaks TF 2.21), and a restarted job first brings the backup down.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import sys
import time
from typing import List, Mapping, Optional, Sequence

import keras
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems

from captioner import storage

log = logging.getLogger("trainer")

BACKUP = "backup"
BACKUP_METADATA = "training_metadata.json"
BEST_WEIGHTS = os.path.join("checkpoints", "best.weights.h5")
HISTORY = "history.json"
LOGS = "logs"


# --- strategy -----------------------------------------------------------------------------------
def ensure_logical_cpus(devices: Optional[Sequence[str]]) -> None:
    """Splits the CPU into as many logical devices as `devices` names (/cpu:1 needs two), for CPU tests.

    Only possible before TensorFlow runs its first op; a process that already
    has enough logical CPUs (e.g. tests/conftest.py made two) is left alone.
    """
    wanted = [int(d.rsplit(":", 1)[1]) for d in devices or () if "cpu:" in d.lower()]
    if not wanted:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    have = len(tf.config.get_logical_device_configuration(cpu) or [None])
    if max(wanted) < have:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(max(wanted) + 1)])
    except RuntimeError as error:
        raise RuntimeError(f"--devices {','.join(devices)} needs {max(wanted) + 1} logical CPUs, but TensorFlow "
                           "was already initialised with fewer; pass --devices at process start") from error


def make_strategy(kind: str, devices: Optional[Sequence[str]] = None) -> tf.distribute.Strategy:
    """`mirrored`: MirroredStrategy over `devices` or every visible GPU (the CPU when there is none);
    `default`: the no-op default strategy (one device)."""
    if kind == "mirrored":
        ensure_logical_cpus(devices)
        gpus = tf.config.list_physical_devices("GPU")
        cpu_only = all("gpu" not in d.lower() for d in devices) if devices else not gpus
        # On CPUs, reduce through one device: the default collective all-reduce keys its ops per process,
        # so a second MirroredStrategy in the same process (tests, notebooks) collides with the first.
        cross_device_ops = tf.distribute.ReductionToOneDevice() if cpu_only else None
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None,
                                              cross_device_ops=cross_device_ops)
    if kind == "default":
        if devices:
            log.warning("--devices is ignored with train.strategy=default (one device)")
        return tf.distribute.get_strategy()
    raise ValueError(f"train.strategy={kind!r} is not one of mirrored, default")


def strategy_devices(strategy: tf.distribute.Strategy) -> List[str]:
    return list(getattr(strategy.extended, "worker_devices", None) or ["default device"])


# --- loss and optimizer -------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="captioner")
class CaptionLoss(keras.losses.Loss):
    """Cross-entropy of the next word, summed over each caption's real tokens (PAD targets masked out).

    Each caption's sum is divided by a constant, the train split's mean tokens
    per caption, so the value reads as cross-entropy per token while every
    token weighs the same (maximum likelihood) and the batch mean is exactly
    the same whether a global batch runs on one replica or is split over many.
    Label smoothing spreads `label_smoothing` of the target mass uniformly.
    """

    def __init__(self, tokens_per_caption: float = 1.0, label_smoothing: float = 0.0,
                 name: str = "caption_loss", **kwargs):
        kwargs.setdefault("reduction", "sum_over_batch_size")
        super().__init__(name=name, **kwargs)
        self.tokens_per_caption = float(tokens_per_caption)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, "int32")
        log_probs = keras.ops.log_softmax(keras.ops.cast(y_pred, "float32"), axis=-1)
        nll = -keras.ops.squeeze(keras.ops.take_along_axis(log_probs, y_true[..., None], axis=-1), axis=-1)
        if self.label_smoothing:
            nll = (1.0 - self.label_smoothing) * nll - self.label_smoothing * keras.ops.mean(log_probs, axis=-1)
        mask = keras.ops.cast(keras.ops.not_equal(y_true, 0), "float32")
        return keras.ops.sum(nll * mask, axis=-1) / self.tokens_per_caption

    def get_config(self):
        config = super().get_config()
        config.update(tokens_per_caption=self.tokens_per_caption, label_smoothing=self.label_smoothing)
        return config


def learning_rate(train_cfg: Mapping, steps_per_epoch: int):
    """A float (constant) or a cosine decay over all steps after `warmup_epochs` of linear warmup."""
    base, kind = float(train_cfg["learning_rate"]), train_cfg.get("lr_schedule", "constant")
    if kind == "constant":
        return base
    if kind != "cosine":
        raise ValueError(f"train.lr_schedule={kind!r} is not one of constant, cosine")
    total = max(1, int(train_cfg["epochs"]) * steps_per_epoch)
    warmup = min(int(float(train_cfg.get("warmup_epochs", 0)) * steps_per_epoch), total - 1)
    if warmup <= 0:
        return keras.optimizers.schedules.CosineDecay(base, decay_steps=total)
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=total - warmup, warmup_target=base,
                                                  warmup_steps=warmup)


def compile_model(model: keras.Model, train_cfg: Mapping, steps_per_epoch: int, tokens_per_caption: float) -> None:
    """Adam + CaptionLoss; call inside `strategy.scope()`."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate(train_cfg, steps_per_epoch)),
                  loss=CaptionLoss(tokens_per_caption, train_cfg.get("label_smoothing", 0.0)),
                  jit_compile=False)


# --- job folder, history and gs:// sync ----------------------------------------------------------
def backup_epoch(local_job: str) -> int:
    """The epoch a backup in `local_job` resumes from (0: no backup)."""
    path = os.path.join(local_job, BACKUP, BACKUP_METADATA)
    if not os.path.exists(path):
        return 0
    with open(path) as handle:
        return int(json.load(handle).get("epoch", 0))


def fetch_remote_job(remote: str, local_job: str, progress_files: Sequence[str] = ()) -> int:
    """Brings a gs:// job folder down when it holds a backup or one of `progress_files` (relative paths of
    later phases' progress), so that resume works; returns the backup's epoch."""
    for relative in (os.path.join(BACKUP, BACKUP_METADATA), *progress_files):
        if storage.exists(storage.join(remote, *relative.split(os.sep))):
            log.info("found %s in %s: copying the job folder down to resume", relative, remote)
            storage.copy_folder_to_local(remote, local_job)
            break
    return backup_epoch(local_job)


def sync_job(local_job: str, remote: Optional[str]) -> None:
    """Mirrors the local job folder to `remote`; backup files deleted locally are deleted there too."""
    if not remote:
        return
    storage.copy_folder_from_local(local_job, remote)
    local_backup, remote_backup = os.path.join(local_job, BACKUP), storage.join(remote, BACKUP)
    stale = [path for path in storage.match(storage.join(remote_backup, "**"))
             if not os.path.exists(os.path.join(local_backup, path[len(remote_backup) + 1:]))]
    if stale:
        FileSystems.delete(stale)


def read_history(local_job: str) -> dict:
    path = os.path.join(local_job, HISTORY)
    if os.path.exists(path):
        with open(path) as handle:
            return json.load(handle)
    return {"runs": [], "epochs": []}


class HistoryFile(keras.callbacks.Callback):
    """job_dir/history.json: one entry per run (where it started) and per finished epoch, rewritten each epoch."""

    def __init__(self, local_job: str, initial_epoch: int, run_info: Mapping):
        super().__init__()
        self.path = os.path.join(local_job, HISTORY)
        self.history = read_history(local_job) if initial_epoch else {"runs": [], "epochs": []}
        self.history["epochs"] = [e for e in self.history["epochs"] if e["epoch"] <= initial_epoch]
        self.history["runs"].append({"run": len(self.history["runs"]) + 1, "initial_epoch": initial_epoch,
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%S"), **run_info})
        self._started = time.time()

    def on_train_begin(self, logs=None):
        self._write()

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": epoch + 1, "run": self.history["runs"][-1]["run"],
                 "seconds": round(time.time() - self._started, 3)}
        entry.update({k: float(v) for k, v in (logs or {}).items()})
        entry.setdefault("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        self.history["epochs"].append(entry)
        self._write()

    def _write(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".tmp", "w") as handle:
            json.dump(self.history, handle, indent=1)
        os.replace(self.path + ".tmp", self.path)


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

    def __init__(self, local_job: str, remote: str):
        super().__init__()
        self.local_job, self.remote = local_job, remote

    def on_epoch_end(self, epoch, logs=None):
        started = time.time()
        sync_job(self.local_job, self.remote)
        log.info("epoch %d synced to %s in %.1f s", epoch + 1, self.remote, time.time() - started)


# --- fit ------------------------------------------------------------------------------------------
def fit(model: keras.Model, train_ds, val_ds, train_cfg: Mapping, local_job: str,
        remote: Optional[str] = None, run_info: Optional[Mapping] = None, verbose: Optional[int] = None) -> dict:
    """Runs (or resumes) `model.fit` with the job's callbacks; returns history.json's content."""
    initial_epoch = backup_epoch(local_job)
    epochs = int(train_cfg["epochs"])
    if initial_epoch:
        log.info("resuming from the backup of epoch %d of %d", initial_epoch, epochs)
    else:
        for stale in (os.path.join(local_job, BEST_WEIGHTS), os.path.join(local_job, HISTORY)):
            if os.path.exists(stale):
                os.remove(stale)
    monitor = "val_loss" if val_ds is not None else "loss"
    past = [e[monitor] for e in read_history(local_job)["epochs"]
            if initial_epoch and e["epoch"] <= initial_epoch and monitor in e]
    os.makedirs(os.path.join(local_job, os.path.dirname(BEST_WEIGHTS)), exist_ok=True)
    # Order matters at each epoch end: the history and the best checkpoint first, then the backup (the
    # commit point a restart resumes from; later epochs in history.json are dropped then), then the sync.
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        HistoryFile(local_job, initial_epoch, dict(run_info or {})),
        tensorboard_callback(os.path.join(local_job, LOGS)),
        keras.callbacks.ModelCheckpoint(os.path.join(local_job, BEST_WEIGHTS), monitor=monitor,
                                        save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=min(past) if past else None),
    ]
    patience = train_cfg.get("early_stopping_patience")
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=int(patience)))
    callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(local_job, BACKUP)))
    if remote:
        callbacks.append(SyncToRemote(local_job, remote))
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=verbosity(verbose))
    return read_history(local_job)


def verbosity(verbose: Optional[int]) -> int:
    """Keras's progress setting: as given, else a live bar on a terminal and one line per epoch in a log file."""
    if verbose is None:
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)


def restore_best(model: keras.Model, local_job: str) -> Optional[str]:
    """Loads the best checkpoint (by dev loss) into `model`; returns its path, or None when there is none."""
    path = os.path.join(local_job, BEST_WEIGHTS)
    if not os.path.exists(path):
        log.warning("no best checkpoint in %s: exporting the last weights", local_job)
        return None
    model.load_weights(path)
    return path


def best_epoch(history: Mapping) -> Optional[dict]:
    epochs = [e for e in history.get("epochs", []) if math.isfinite(e.get("val_loss", e.get("loss", math.nan)))]
    if not epochs:
        return None
    return min(epochs, key=lambda e: e.get("val_loss", e.get("loss")))
