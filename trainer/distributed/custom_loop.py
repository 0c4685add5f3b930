"""The cross-entropy loop for MultiWorkerMirroredStrategy, where Keras's `fit` fails (keras-team/keras#20585).

It is `fit` by hand with everything else shared: the compiled model's loss, optimizer and schedule, and
the job's own Keras callbacks (history, TensorBoard, best weights, early stopping, TerminateOnNaN,
BackupAndRestore, the progress bar), driven through a CallbackList as `fit` drives them. Every worker
runs every callback on the same all-reduced numbers, so they all stop, save and restore alike; only
the chief's job folder is the job dir (trainer/job_folder.JobFolder.worker_copy).

    per step: each replica's batch -> per-caption loss (CaptionLoss) summed / global batch -> gradients
              -> the optimizer (which all-reduces them across every replica of every worker)
"""
from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional

import keras
import tensorflow as tf

log = logging.getLogger("trainer")


class CustomLoop:
    """Train and dev steps of one compiled model under a strategy, for global batches of `global_batch`."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy, global_batch: int, xla: bool = False):
        self.model, self.strategy, self.global_batch = model, strategy, int(global_batch)
        self.loss = model.loss  # the compiled CaptionLoss: its per-caption values, reduced here
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)  # in scope: its slots mirror the model's variables
        self._gradients = tf.function(self._replica_gradients, jit_compile=bool(xla), reduce_retracing=True)
        self._train = tf.function(self._train_step, reduce_retracing=True)
        self._dev = tf.function(self._dev_step, reduce_retracing=True)
        self.step_seconds: List[float] = []

    def _replica_loss(self, inputs, targets, training: bool):
        logits = self.model(inputs, training=training)
        per_caption = self.loss.call(targets, logits)
        return tf.reduce_sum(per_caption) / self.global_batch  # summed over replicas: the global batch's mean

    def _replica_gradients(self, inputs, targets):
        with tf.GradientTape() as tape:
            loss = self._replica_loss(inputs, targets, training=True)
        variables = self.model.trainable_variables
        return loss, tape.gradient(self.model.optimizer.scale_loss(loss), variables)

    def _train_step(self, iterator):
        def replica(inputs, targets):
            loss, gradients = self._gradients(inputs, targets)
            self.model.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
            return loss

        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, self.strategy.run(replica, args=next(iterator)),
                                    axis=None)

    def _dev_step(self, batch):
        per_replica = self.strategy.run(lambda inputs, targets: self._replica_loss(inputs, targets, False),
                                        args=batch)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def dev_loss(self, dataset) -> float:
        """The mean over a pass of the dev batches, as `fit`'s val_loss."""
        losses = [float(self._dev(batch)) for batch in dataset]
        return sum(losses) / max(1, len(losses))

    def fit(self, train, dev, epochs: int, initial_epoch: int, steps: int, steps_callbacks: List,
            verbose: int) -> None:
        """`fit(epochs, initial_epoch)` over distributed datasets: `steps` batches of `train` (a worker's shards
        repeat: they need not hold exactly `steps`) and one pass of `dev` (or None) each epoch."""
        callbacks = keras.callbacks.CallbackList(steps_callbacks, add_history=False, add_progbar=verbose != 0,
                                                 model=self.model, verbose=verbose, epochs=epochs, steps=steps)
        self.model.stop_training = False
        callbacks.on_train_begin()
        logs: Dict[str, float] = {}
        for epoch in range(initial_epoch, epochs):
            callbacks.on_epoch_begin(epoch)
            iterator = iter(train)  # a fresh pass each epoch, reshuffled, as fit makes them
            total = 0.0
            for step in range(steps):
                callbacks.on_train_batch_begin(step)
                started = time.perf_counter()
                total += float(self._train(iterator))
                self.step_seconds.append(time.perf_counter() - started)
                logs = {"loss": total / (step + 1)}
                callbacks.on_train_batch_end(step, logs)
                if self.model.stop_training:
                    break
            if dev is not None:
                logs["val_loss"] = self.dev_loss(dev)
            callbacks.on_epoch_end(epoch, logs)
            if self.model.stop_training:
                break
        callbacks.on_train_end(logs)


def mean_step_seconds(loop: Optional[CustomLoop]) -> Optional[float]:
    """Seconds per train step after the first (which traces and compiles), for the log and the benchmark."""
    if loop is None or len(loop.step_seconds) < 2:
        return None
    later = loop.step_seconds[1:]
    return sum(later) / len(later)
