"""One trainer job from start to end: features -> strategy -> fit (or resume) -> best weights -> export -> BLEU.

`run` is what `python -m trainer.task` calls and what tests call in-process.
Paths may be gs://: the features are copied to a local cache and the job is
written to a local folder that is mirrored to the gs:// job dir (every epoch
and at the end), because TensorFlow is only ever handed local paths here.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Mapping, Optional, Sequence

import keras

from captioner import storage

from trainer import bundle, data, evaluation, models, self_critical, training

log = logging.getLogger("trainer")

EVAL_SPLITS = ("dev", "test", "none")


@dataclasses.dataclass
class JobResult:
    job_dir: str
    export_dir: str
    history: dict
    evaluation: Optional[dict]
    summary: dict
    model: keras.Model


def run(config: Mapping, features: str, job_dir: str, devices: Optional[Sequence[str]] = None,
        eval_split: str = "dev", work_dir: Optional[str] = None, verbose: Optional[int] = None) -> JobResult:
    """Trains the configured decoder on a features folder and exports it to job_dir/export."""
    if eval_split not in EVAL_SPLITS:
        raise ValueError(f"eval split {eval_split!r} is not one of {', '.join(EVAL_SPLITS)}")
    train_cfg = config["train"]
    self_critical_epochs = int(self_critical.settings(train_cfg)["self_critical_epochs"])
    started = time.time()
    strategy = training.make_strategy(train_cfg["strategy"], devices)  # first: no TF op may run before it
    own_work = work_dir is None
    work = work_dir or tempfile.mkdtemp(prefix="captioner-trainer-")
    remote = job_dir if storage.is_remote(job_dir) else None
    local_job = os.path.join(work, "job") if remote else job_dir
    if remote:  # the gs:// job dir is the truth: never resume from a stale local copy in a reused --work_dir
        shutil.rmtree(local_job, ignore_errors=True)
    if storage.is_remote(features):
        shutil.rmtree(os.path.join(work, "features"), ignore_errors=True)
    os.makedirs(local_job, exist_ok=True)
    try:
        if remote:
            training.fetch_remote_job(remote, local_job, progress_files=[self_critical.HISTORY])
        # the global seed joins the op seeds of tf.data's shuffles: set it before any dataset exists
        keras.utils.set_random_seed(int(train_cfg.get("seed", 0)))
        folder = data.open_features(features, train_cfg, os.path.join(work, "features"))
        caption_data = data.CaptionData(folder, train_cfg["max_length"], seed=train_cfg.get("seed", 0),
                                        sort_window_batches=train_cfg.get("sort_window_batches",
                                                                          data.SORT_WINDOW_BATCHES))
        counts = {"train": caption_data.count("train"),
                  "dev": caption_data.count("dev") if folder.files("dev") else None}
        replicas = strategy.num_replicas_in_sync
        global_batch = int(train_cfg["batch_size"]) * replicas
        steps = data.steps_for(counts["train"], global_batch)
        log.info(data.describe(folder, counts))
        log.info("strategy %s on %d replica(s) %s: global batch %d = %d per replica x %d; "
                 "%d steps per epoch over %d train examples, %d epochs",
                 type(strategy).__name__, replicas, ", ".join(training.strategy_devices(strategy)), global_batch,
                 train_cfg["batch_size"], replicas, steps, counts["train"].examples, train_cfg["epochs"])

        shuffle_buffer = int(train_cfg.get("shuffle_buffer", 0))
        train_ds = caption_data.examples("train", global_batch, counts["train"], True, shuffle_buffer)
        val_ds = (caption_data.examples("dev", global_batch, counts["dev"], False)
                  if counts["dev"] and counts["dev"].examples else None)
        if val_ds is None:
            log.warning("no dev examples: best weights and early stopping follow the training loss")
        keras.utils.set_random_seed(int(train_cfg.get("seed", 0)))
        with strategy.scope():
            model = models.build_from_config(train_cfg, folder.shape, len(folder.tokens))
            training.compile_model(model, train_cfg, steps, counts["train"].tokens_per_caption)
        log.info("decoder %s on %s features %s: %d trainable parameters", train_cfg["decoder"], folder.feature,
                 folder.shape, models.parameter_count(model))

        run_info = {"replicas": replicas, "global_batch": global_batch, "steps_per_epoch": steps,
                    "train_examples": counts["train"].examples}
        if self_critical_epochs and self_critical.has_started(local_job):
            log.info("the cross-entropy epochs finished in an earlier run: going on with self-critical fine-tuning")
            history = training.read_history(local_job)
        else:
            history = training.fit(model, train_ds, val_ds, train_cfg, local_job, remote, run_info, verbose)
            training.restore_best(model, local_job)
        best = training.best_epoch(history)
        scst_history = []
        if self_critical_epochs:
            scst_history = self_critical.fine_tune(model, strategy, caption_data, config, local_job,
                                                   sync=lambda: training.sync_job(local_job, remote),
                                                   verbose=training.verbosity(verbose))
        scst_best = self_critical.best_epoch(scst_history)

        export_dir = bundle.export(model, os.path.join(local_job, "export"), config, folder)
        log.info("exported the bundle to %s", storage.join(job_dir, "export"))
        result = None
        if eval_split != "none" and folder.files(eval_split):
            captioner = bundle.Captioner.load(export_dir)
            result = evaluation.evaluate(captioner, caption_data, eval_split,
                                         batch_size=int(config.get("caption", {}).get("batch_size", 64)))
            evaluation.write(local_job, result)
        elif eval_split != "none":
            log.warning("no %s shards: skipping the evaluation", eval_split)

        summary = {
            "job_dir": job_dir, "export_dir": storage.join(job_dir, "export"),
            "decoder": train_cfg["decoder"], "features": folder.feature, "replicas": replicas,
            "global_batch": global_batch, "steps_per_epoch": steps,
            "epochs_run": len(history["epochs"]), "runs": len(history["runs"]),
            "resumed_from_epoch": history["runs"][-1]["initial_epoch"] if history["runs"] else 0,
            "best_epoch": best and best["epoch"],
            "best_val_loss": best and best.get("val_loss"),
            "final_loss": history["epochs"][-1]["loss"] if history["epochs"] else None,
            "self_critical_epochs_run": max(0, len(scst_history) - 1),
            "self_critical_best_epoch": scst_best and scst_best["epoch"],
            "bleu": result and result["bleu"], "eval_split": eval_split if result else None,
            "seconds": round(time.time() - started, 1),
        }
        with open(os.path.join(local_job, "summary.json"), "w") as handle:
            json.dump(summary, handle, indent=2)
        training.sync_job(local_job, remote)
        return JobResult(job_dir, storage.join(job_dir, "export"), history,
                         {k: v for k, v in result.items() if k != "_rows"} if result else None, summary, model)
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
