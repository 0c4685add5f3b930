"""Cross-entropy training: the masked caption loss, the schedule and a resumable `fit` (Keras's, or the
multi-worker CustomLoop with the same callbacks).

Fault tolerance is Keras's: `BackupAndRestore` in job_dir/backup resumes an
interrupted `fit` at the last finished epoch; the best weights by dev loss are
kept apart (ModelCheckpoint) and restored before export. The job dir is seen
through a `JobFolder`, which mirrors a gs:// one after every epoch.
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
import warnings
from typing import Iterator, Mapping, Optional

import keras

from captioner.errors import TrainingFailed
from trainer import callbacks
from trainer.distributed.custom_loop import CustomLoop
from trainer.job_folder import CROSS_ENTROPY, JobFolder, Phase

log = logging.getLogger("trainer")

@keras.saving.register_keras_serializable(package="captioner")
class CaptionLoss(keras.losses.Loss):
    """Cross-entropy of the next word, summed over each row's real tokens (PAD targets masked out).

    A row is one caption [T] or an image's C captions [C, T] (trainer/grouped.py). Each row's sum is divided
    by a constant, the train split's mean tokens per caption times C, so the value reads as cross-entropy
    per token while every token weighs the same (maximum likelihood) and the batch mean is exactly the same
    whether a global batch runs on one replica or is split over many.
    Label smoothing spreads `label_smoothing` of the target mass uniformly.
    """

    def __init__(self, tokens_per_caption: float = 1.0, label_smoothing: float = 0.0, captions_per_row: int = 1,
                 name: str = "caption_loss", **kwargs):
        kwargs.setdefault("reduction", "sum_over_batch_size")
        super().__init__(name=name, **kwargs)
        self.tokens_per_caption = float(tokens_per_caption)
        self.label_smoothing = float(label_smoothing)
        self.captions_per_row = int(captions_per_row)

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, "int32")
        log_probs = keras.ops.log_softmax(keras.ops.cast(y_pred, "float32"), axis=-1)
        nll = -keras.ops.squeeze(keras.ops.take_along_axis(log_probs, y_true[..., None], axis=-1), axis=-1)
        if self.label_smoothing:
            nll = (1.0 - self.label_smoothing) * nll - self.label_smoothing * keras.ops.mean(log_probs, axis=-1)
        mask = keras.ops.cast(keras.ops.not_equal(y_true, 0), "float32")
        per_row = keras.ops.sum(nll * mask, axis=tuple(range(1, len(nll.shape))))
        return per_row / (self.tokens_per_caption * self.captions_per_row)

    def get_config(self):
        config = super().get_config()
        config.update(tokens_per_caption=self.tokens_per_caption, label_smoothing=self.label_smoothing,
                      captions_per_row=self.captions_per_row)
        return config


def learning_rate(train_cfg, steps_per_epoch: int):
    """A float (constant) or a cosine decay over all steps after `warmup_epochs` of linear warmup."""
    if train_cfg.lr_schedule == "constant":
        return train_cfg.learning_rate
    total = max(1, train_cfg.epochs * steps_per_epoch)
    warmup = min(int(train_cfg.warmup_epochs * steps_per_epoch), total - 1)
    if warmup <= 0:
        return keras.optimizers.schedules.CosineDecay(train_cfg.learning_rate, decay_steps=total)
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=total - warmup,
                                                  warmup_target=train_cfg.learning_rate, warmup_steps=warmup)


@contextlib.contextmanager
def precision(train_cfg) -> Iterator[str]:
    """Builds layers under `train.mixed_precision` (Keras captures the policy per layer), then restores float32.

    Variables stay float32 under both mixed policies; the "logits" layer and CaptionLoss compute in float32.
    """
    policy = "float32" if train_cfg.mixed_precision == "none" else train_cfg.mixed_precision
    previous = keras.mixed_precision.dtype_policy().name
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def compile_model(model: keras.Model, train_cfg, steps_per_epoch: int, tokens_per_caption: float,
                  captions_per_row: int = 1) -> None:
    """Adam + CaptionLoss from a config.TrainConfig; call inside `strategy.scope()`.

    Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer (dynamic loss scaling) itself.
    """
    model.compile(optimizer=keras.optimizers.Adam(learning_rate(train_cfg, steps_per_epoch)),
                  loss=CaptionLoss(tokens_per_caption, train_cfg.label_smoothing, captions_per_row),
                  jit_compile=bool(train_cfg.xla))


def fit(model: keras.Model, train_ds, val_ds, train_cfg, folder: JobFolder, run_info: Optional[Mapping] = None,
        verbose: Optional[int] = None, loop: Optional[CustomLoop] = None, steps: int = 0,
        phase: Phase = CROSS_ENTROPY, epochs: Optional[int] = None) -> dict:
    """Runs (or resumes) `model.fit` for `epochs` (train.epochs) with the job's callbacks writing where `phase`
    says, or `loop.fit` (multi-worker: distributed datasets, `steps` per epoch) with the same ones; returns the
    phase's history.json content."""
    epochs = epochs or train_cfg.epochs
    initial_epoch = folder.backup_epoch(phase)
    if initial_epoch:
        log.info("%s: resuming from the backup of epoch %d of %d", phase.name, initial_epoch, epochs)
    else:
        folder.remove(phase.best_weights)
        folder.remove(phase.history)
    monitor = "val_loss" if val_ds is not None else "loss"
    past = [e[monitor] for e in folder.read_json(phase.history, callbacks.empty_history())["epochs"]
            if initial_epoch and e["epoch"] <= initial_epoch and monitor in e]
    # Order matters at each epoch end: the history and the best checkpoint first, then the backup (the
    # commit point a restart resumes from; later epochs in history.json are dropped then), then the sync.
    job_callbacks = [
        callbacks.DiskSpace(folder),
        keras.callbacks.TerminateOnNaN(),
        callbacks.HistoryFile(folder, initial_epoch, dict(run_info or {}), phase.history),
        callbacks.tensorboard_callback(folder.path(phase.logs)),
        keras.callbacks.ModelCheckpoint(folder.path(phase.best_weights), monitor=monitor, save_best_only=True,
                                        save_weights_only=True, initial_value_threshold=min(past) if past else None),
    ]
    if train_cfg.early_stopping_patience:
        job_callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=train_cfg.early_stopping_patience))
    # kept when training ends: a re-run with more epochs goes on from it (trainer/job.py skips a finished phase)
    job_callbacks.append(keras.callbacks.BackupAndRestore(folder.path(phase.backup), delete_checkpoint=False))
    if folder.remote:
        job_callbacks.append(callbacks.SyncToRemote(folder))
    if loop is None:
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=job_callbacks,
                  verbose=verbosity(verbose), shuffle=False)  # tf.data shuffles (seeded); Keras warns when asked to
    else:
        loop.fit(train_ds, val_ds, epochs, initial_epoch, steps, job_callbacks, verbosity(verbose))
    history = folder.read_json(phase.history, callbacks.empty_history())
    last = history["epochs"][-1] if history["epochs"] else {}
    if not math.isfinite(last.get("loss", 0.0)):  # TerminateOnNaN stopped it: a model of NaNs is not a result
        raise TrainingFailed(f"{phase.name}: the loss became {last['loss']} in epoch {last['epoch']}, so training "
                             f"stopped and nothing was exported; lower the learning rate (train.learning_rate="
                             f"{train_cfg.learning_rate}) and start the job again with --overwrite")
    return history


def verbosity(verbose: Optional[int]) -> int:
    """Keras's progress setting: as given, else a live bar on a terminal and one line per epoch in a log file."""
    if verbose is None:
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)


def restore_best(model: keras.Model, folder: JobFolder, phase: Phase = CROSS_ENTROPY) -> Optional[str]:
    """Loads `phase`'s best checkpoint (by dev loss) into `model`; returns its path, or None when there is none."""
    if not folder.exists(phase.best_weights):
        log.warning("no best %s checkpoint in %s: going on with the last weights", phase.name, folder.job_dir)
        return None
    with warnings.catch_warnings():  # a model not trained in this process has no optimizer state to load: none needed
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(folder.path(phase.best_weights))
    return folder.path(phase.best_weights)


def lowest_loss_epoch(history: Mapping) -> Optional[dict]:
    """The cross-entropy epoch with the lowest dev loss (the training loss when there is no dev split)."""
    def loss(epoch: Mapping) -> float:
        return epoch["val_loss"] if "val_loss" in epoch else epoch["loss"]

    epochs = [e for e in history["epochs"] if math.isfinite(loss(e))]
    return min(epochs, key=loss) if epochs else None
