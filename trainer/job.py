"""One trainer job from start to end: features -> strategy -> fit (or resume) -> best weights -> export -> BLEU.

Under train.strategy=multi_worker every worker process runs this; the cross-entropy epochs run in
trainer/custom_loop.py instead of Keras's fit, and only the chief writes the job dir and exports.

`run` is what `python -m trainer.task` calls and what tests call in-process.
Paths may be gs://: the features are copied to a local cache and the job is
worked on through a `JobFolder` (a local copy mirrored to the gs:// job dir
every epoch and at the end), because TensorFlow is only ever handed local paths.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from typing import Optional, Sequence

import keras

from captioner import bundle, storage
from captioner.config import Config
from captioner.decoder import architectures
from captioner.layout import EXPORT_DIR, SUMMARY_FILE
from trainer import (custom_loop, data, evaluation, export, features_folder, self_critical, strategy, training,
                     worker_inputs)
from trainer.custom_loop import CustomLoop
from trainer.job_folder import HISTORY, JobFolder

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


def run(config: Config, features: str, job_dir: str, devices: Optional[Sequence[str]] = None,
        eval_split: str = "dev", work_dir: Optional[str] = None, verbose: Optional[int] = None,
        overwrite: bool = False) -> JobResult:
    """Trains the configured decoder on a features folder and exports it to job_dir/export.

    A job dir that holds a job started with other features or another train config is refused unless
    `overwrite` (which starts it again from nothing); with the same ones, the job resumes.
    """
    if eval_split not in EVAL_SPLITS:
        raise ValueError(f"eval split {eval_split!r} is not one of {', '.join(EVAL_SPLITS)}")
    started = time.time()
    distribution = strategy.make_strategy(config.train.strategy, devices)  # first: no TF op may run before it
    own_work = work_dir is None
    work = work_dir or tempfile.mkdtemp(prefix="captioner-trainer-")
    if storage.is_remote(features):
        shutil.rmtree(os.path.join(work, "features"), ignore_errors=True)
    try:
        folder = (JobFolder.open(job_dir, work) if strategy.is_chief(distribution)
                  else JobFolder.worker_copy(job_dir, work, fresh=overwrite))
        return _train(config, features, folder, distribution, eval_split, work, verbose, started, overwrite)
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


def _train(config: Config, features: str, folder: JobFolder, distribution, eval_split: str, work: str,
           verbose: Optional[int], started: float, overwrite: bool) -> JobResult:
    train_cfg = config.train
    # the global seed joins the op seeds of tf.data's shuffles: set it before any dataset exists
    keras.utils.set_random_seed(train_cfg.seed)
    inputs = features_folder.open_features(features, train_cfg, os.path.join(work, "features"))
    folder.claim(features, config.to_dict()["train"], overwrite)  # once the inputs are known to be good
    caption_data = data.CaptionData(inputs, train_cfg.max_length, seed=train_cfg.seed,
                                    sort_window_batches=train_cfg.sort_window_batches)
    counts = {"train": caption_data.count("train"),
              "dev": caption_data.count("dev") if inputs.files("dev") else None}
    replicas = distribution.num_replicas_in_sync
    chief = strategy.is_chief(distribution)
    global_batch = train_cfg.batch_size * replicas
    steps = data.steps_for(counts["train"], global_batch)
    log.info(features_folder.describe(inputs, counts))
    log.info("strategy %s on %d replica(s) in %d worker(s) %s: global batch %d = %d per replica x %d; "
             "%d steps per epoch over %d train examples, %d epochs",
             type(distribution).__name__, replicas, strategy.workers(distribution),
             ", ".join(strategy.strategy_devices(distribution)),
             global_batch, train_cfg.batch_size, replicas, steps, counts["train"].examples, train_cfg.epochs)

    multi_worker = train_cfg.strategy == "multi_worker"
    if multi_worker:
        train_ds, val_ds = worker_inputs.distributed(distribution, caption_data, counts, train_cfg, global_batch)
    else:
        train_ds = caption_data.examples("train", global_batch, counts["train"], True, train_cfg.shuffle_buffer)
        val_ds = (caption_data.examples("dev", global_batch, counts["dev"], False)
                  if counts["dev"] and counts["dev"].examples else None)
    if val_ds is None:
        log.warning("no dev examples: best weights and early stopping follow the training loss")
    keras.utils.set_random_seed(train_cfg.seed)
    with distribution.scope(), training.precision(train_cfg) as policy:
        model = architectures.build_from_config(train_cfg, inputs.shape, len(inputs.tokens))
        training.compile_model(model, train_cfg, steps, counts["train"].tokens_per_caption)
    if policy != "float32" or train_cfg.xla:
        log.info("dtype policy %s%s", policy, ", XLA-compiled train step" if train_cfg.xla else "")
    log.info("decoder %s on %s features %s: %d trainable parameters", train_cfg.decoder, inputs.feature,
             inputs.shape, architectures.parameter_count(model))

    run_info = {"replicas": replicas, "global_batch": global_batch, "steps_per_epoch": steps,
                "train_examples": counts["train"].examples}
    if train_cfg.self_critical_epochs and self_critical.has_started(folder):
        log.info("the cross-entropy epochs finished in an earlier run: going on with self-critical fine-tuning")
        history = folder.read_json(HISTORY)
    else:
        loop = CustomLoop(model, distribution, global_batch, train_cfg.xla) if multi_worker else None
        history = training.fit(model, train_ds, val_ds, train_cfg, folder, run_info,
                               verbose if chief else 0, loop, steps)
        step_seconds = custom_loop.mean_step_seconds(loop)
        if step_seconds:
            log.info("%.4f s per train step after the first (%d steps)", step_seconds, len(loop.step_seconds))
        training.restore_best(model, folder)
    best = training.lowest_loss_epoch(history)
    scst_history = []
    if train_cfg.self_critical_epochs:
        scst_history = self_critical.fine_tune(model, distribution, caption_data, config, folder,
                                               verbose=training.verbosity(verbose) if chief else 0)
    scst_best = self_critical.best_epoch(scst_history, train_cfg.select_metric)
    if not chief:
        log.info("worker %d of %d: done; the chief exports the bundle and writes %s",
                 strategy.worker_index(distribution), strategy.workers(distribution), folder.job_dir)
        return JobResult(folder.job_dir, "", history, None, {}, model)

    export_dir = export.export(model, folder.path(EXPORT_DIR), config, inputs)
    log.info("exported the bundle to %s", folder.shown(EXPORT_DIR))
    result = None
    if eval_split != "none" and inputs.files(eval_split):
        # with the caption job's decoding, so the score is the one the caption job and the selection saw
        result, rows = evaluation.evaluate(bundle.Captioner.load(export_dir), caption_data, eval_split,
                                           batch_size=config.caption.batch_size, beam_size=config.caption.beam_size,
                                           length_penalty=config.caption.length_penalty)
        evaluation.write(folder, result, rows)
    elif eval_split != "none":
        log.warning("no %s shards: skipping the evaluation", eval_split)

    summary = {
        "job_dir": folder.job_dir, "export_dir": folder.shown(EXPORT_DIR),
        "decoder": train_cfg.decoder, "features": inputs.feature, "replicas": replicas,
        "global_batch": global_batch, "steps_per_epoch": steps,
        "epochs_run": len(history["epochs"]), "runs": len(history["runs"]),
        "resumed_from_epoch": history["runs"][-1]["initial_epoch"] if history["runs"] else 0,
        "best_epoch": best and best["epoch"],
        "best_val_loss": best and best.get("val_loss"),
        "final_loss": history["epochs"][-1]["loss"] if history["epochs"] else None,
        "self_critical_epochs_run": max(0, len(scst_history) - 1),
        "self_critical_best_epoch": scst_best and scst_best["epoch"], "select_metric": train_cfg.select_metric,
        "bleu": result and result["bleu"], "cider_d": result and result["cider_d"],
        "eval_split": eval_split if result else None,
        "seconds": round(time.time() - started, 1),
    }
    folder.write_json(SUMMARY_FILE, summary)
    folder.sync()
    return JobResult(folder.job_dir, folder.shown(EXPORT_DIR), history, result, summary, model)
