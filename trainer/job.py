"""One trainer job from start to end: features -> strategy -> cross-entropy fit (or resume) -> best weights ->
[encoder fine-tuning on the kept images] -> [self-critical epochs] -> export -> dev BLEU and CIDEr-D.

Under train.strategy=multi_worker every worker process runs this; the cross-entropy epochs run in
trainer/distributed/custom_loop.py instead of Keras's fit, and only the chief writes the job dir and exports.

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
import tensorflow as tf

from captioner import bundle, storage
from captioner.config import Config
from captioner.decoder import architectures
from captioner.decoder.decoding import Decoding
from captioner.layout import EXPORT_DIR, SUMMARY_FILE
from trainer import data, evaluation, export, features_folder, finetune, training
from trainer.distributed import custom_loop, strategy, worker_inputs
from trainer.distributed.custom_loop import CustomLoop
from trainer.self_critical import loop as self_critical
from trainer.grouped import GroupedDecoder
from trainer.job_folder import ENCODER_FINETUNING, HISTORY, JobFolder

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


@dataclasses.dataclass
class _Plan:
    """What the phases share: the data, its counts, and how batches split over replicas and workers."""
    inputs: features_folder.FeaturesFolder
    caption_data: data.CaptionData
    counts: dict
    distribution: tf.distribute.Strategy
    global_batch: int      # rows (an image with C of its captions) per step, over every replica
    steps: int
    verbose: Optional[int]
    multi_worker: bool     # train.strategy=multi_worker: the custom loop, each worker's share of the data

    @property
    def chief(self) -> bool:
        return strategy.is_chief(self.distribution)

    @property
    def run_info(self) -> dict:
        return {"replicas": self.distribution.num_replicas_in_sync, "global_batch": self.global_batch,
                "captions_per_row": self.caption_data.captions_per_row, "steps_per_epoch": self.steps,
                "train_examples": self.counts["train"].examples}

    def datasets(self, caption_data: data.CaptionData, train_cfg):
        """(train, dev or None) batches of `caption_data` for fit, or each worker's share under multi_worker."""
        counts = self.counts
        if self.multi_worker:
            return worker_inputs.distributed(self.distribution, caption_data, counts, train_cfg, self.global_batch)
        train = caption_data.examples("train", self.global_batch, counts["train"], True, train_cfg.shuffle_buffer)
        dev = (caption_data.examples("dev", self.global_batch, counts["dev"], False)
               if counts["dev"] and counts["dev"].examples else None)
        return train, dev

    def loop(self, model: keras.Model, train_cfg) -> Optional[CustomLoop]:
        return CustomLoop(model, self.distribution, self.global_batch, train_cfg.xla) if self.multi_worker else None


def _plan(config: Config, features: str, folder: JobFolder, distribution, work: str, verbose: Optional[int],
          overwrite: bool) -> _Plan:
    """Opens and checks the inputs, claims the job dir, counts the splits and sizes the batches (logged)."""
    train_cfg = config.train
    inputs = features_folder.open_features(features, train_cfg, os.path.join(work, "features"))
    finetune.check_inputs(inputs, train_cfg)
    folder.claim(features, config.to_dict()["train"], overwrite)  # once the inputs are known to be good
    caption_data = data.CaptionData(inputs, train_cfg.max_length, seed=train_cfg.seed,
                                    sort_window_batches=train_cfg.sort_window_batches)
    counts = {"train": caption_data.count("train"),
              "dev": caption_data.count("dev") if inputs.files("dev") else None}
    caption_data.captions_per_row = per_row = train_cfg.captions_per_row or counts["train"].captions_per_row
    replicas = distribution.num_replicas_in_sync
    per_replica = max(1, train_cfg.batch_size // per_row)
    global_batch = per_replica * replicas
    steps = data.steps_for(counts["train"], global_batch, per_row)
    log.info(features_folder.describe(inputs, counts))
    log.info("strategy %s on %d replica(s) in %d worker(s) %s: global batch %d = %d per replica x %d, each an image "
             "with %d of its captions (train.batch_size %d); %d steps per epoch over %d train examples, %d epochs",
             type(distribution).__name__, replicas, strategy.workers(distribution),
             ", ".join(strategy.strategy_devices(distribution)), global_batch, per_replica, replicas, per_row,
             train_cfg.batch_size, steps, counts["train"].examples, train_cfg.epochs)
    return _Plan(inputs, caption_data, counts, distribution, global_batch, steps, verbose,
                 train_cfg.strategy == "multi_worker")


def _train(config: Config, features: str, folder: JobFolder, distribution, eval_split: str, work: str,
           verbose: Optional[int], started: float, overwrite: bool) -> JobResult:
    train_cfg = config.train
    # the global seed joins the op seeds of tf.data's shuffles: set it before any dataset exists
    keras.utils.set_random_seed(train_cfg.seed)
    plan = _plan(config, features, folder, distribution, work, verbose, overwrite)
    keras.utils.set_random_seed(train_cfg.seed)
    with distribution.scope(), training.precision(train_cfg) as policy:
        decoder = architectures.build_from_config(train_cfg, plan.inputs.shape, len(plan.inputs.tokens))
        model = GroupedDecoder(decoder)
        training.compile_model(model, train_cfg, plan.steps, plan.counts["train"].tokens_per_caption,
                               plan.caption_data.captions_per_row)
    Decoding.from_config(config.caption).check_fits(
        config.caption.batch_size, len(plan.inputs.tokens), train_cfg.units,
        train_cfg.transformer_layers if train_cfg.decoder == "transformer" else 0)
    if policy != "float32" or train_cfg.xla:
        log.info("dtype policy %s%s", policy, ", XLA-compiled train step" if train_cfg.xla else "")
    log.info("decoder %s on %s features %s: %d trainable parameters", train_cfg.decoder, plan.inputs.feature,
             plan.inputs.shape, architectures.parameter_count(decoder))
    history = _cross_entropy(model, plan, train_cfg, folder)
    tuned = _fine_tune_encoder(decoder, plan, train_cfg, folder) if train_cfg.finetune_encoder_epochs else None
    scst_history = []
    if train_cfg.self_critical_epochs:
        scst_data = plan.caption_data if not tuned else finetune.features_cache(
            tuned, plan.caption_data, os.path.join(work, "finetuned-features"), config.caption.batch_size)
        scst_history = self_critical.fine_tune(decoder, distribution, scst_data, config, folder,
                                               verbose=training.verbosity(verbose) if plan.chief else 0)
    if not plan.chief:
        log.info("worker %d of %d: done; the chief exports the bundle and writes %s",
                 strategy.worker_index(distribution), strategy.workers(distribution), folder.job_dir)
        return JobResult(folder.job_dir, "", history, None, {}, decoder)
    export_dir = export.export(decoder, folder.path(EXPORT_DIR), config, plan.inputs, tuned and tuned.encoder)
    log.info("exported the bundle to %s%s", folder.shown(EXPORT_DIR), " with its fine-tuned encoder" if tuned else "")
    result = _evaluate(export_dir, plan.caption_data.for_images(False) if tuned else plan.caption_data, eval_split,
                       config)
    if result:
        evaluation.write(folder, *result)
    summary = _summary(folder, plan, train_cfg, history, scst_history, result and result[0], eval_split, started)
    folder.write_json(SUMMARY_FILE, summary)
    folder.sync()
    return JobResult(folder.job_dir, folder.shown(EXPORT_DIR), history, result and result[0], summary, decoder)


def _cross_entropy(model: GroupedDecoder, plan: _Plan, train_cfg, folder: JobFolder) -> dict:
    """The cross-entropy epochs on stored features (resumed), leaving the best dev-loss weights in `model`;
    skipped when they finished in an earlier run (history.json says so) or a later phase has begun."""
    later = self_critical.has_started(folder) or (train_cfg.finetune_encoder_epochs and finetune.has_started(folder))
    finished = folder.read_json(HISTORY, {}).get("finished") or {}
    if later or finished.get("stopped_early") or finished.get("epochs", 0) >= train_cfg.epochs:
        log.info("the cross-entropy epochs finished in an earlier run: going on from there")
        if not self_critical.has_started(folder):
            training.restore_best(model, folder)
        return folder.read_json(HISTORY)
    train_ds, val_ds = plan.datasets(plan.caption_data, train_cfg)
    if val_ds is None:
        log.warning("no dev examples: best weights and early stopping follow the training loss")
    loop = plan.loop(model, train_cfg)
    history = training.fit(model, train_ds, val_ds, train_cfg, folder, plan.run_info,
                           plan.verbose if plan.chief else 0, loop, plan.steps)
    step_seconds = custom_loop.mean_step_seconds(loop)
    if step_seconds:
        log.info("%.4f s per train step after the first (%d steps)", step_seconds, len(loop.step_seconds))
    training.restore_best(model, folder)
    return history


def _fine_tune_encoder(decoder: keras.Model, plan: _Plan, train_cfg, folder: JobFolder) -> GroupedDecoder:
    """The encoder fine-tuning epochs on the kept images (resumed), or the weights of an earlier run's."""
    with plan.distribution.scope():
        encoder = finetune.encoder_model(plan.inputs.manifest["encoder"], train_cfg.finetune_encoder_blocks)
        model = GroupedDecoder(decoder, encoder, pooled=plan.inputs.feature == "pooled")
        loss = training.CaptionLoss(plan.counts["train"].tokens_per_caption, train_cfg.label_smoothing,
                                    plan.caption_data.captions_per_row)
        finetune.compile_model(model, train_cfg, plan.steps, loss)
    if finetune.has_finished(folder):
        log.info("encoder fine-tuning finished in an earlier run: loading its weights")
        finetune.load_finished(model, folder, decoder_too=not self_critical.has_started(folder))
        return model
    images = plan.caption_data.for_images(train_cfg.augment)
    train_ds, val_ds = plan.datasets(images, train_cfg)
    log.info("encoder fine-tuning: %d epochs on the kept images (%s), encoder learning rate %g, decoder %g",
             train_cfg.finetune_encoder_epochs, "cropped and flipped" if train_cfg.augment else "as stored",
             train_cfg.encoder_learning_rate, train_cfg.finetune_learning_rate)
    training.fit(model, train_ds, val_ds, train_cfg, folder, plan.run_info, plan.verbose if plan.chief else 0,
                 plan.loop(model, train_cfg), plan.steps, ENCODER_FINETUNING, train_cfg.finetune_encoder_epochs)
    training.restore_best(model, folder, ENCODER_FINETUNING)
    finetune.save_finished(model, folder)
    return model


def _evaluate(export_dir: str, caption_data: data.CaptionData, eval_split: str, config: Config):
    """(eval.json's content, rows) of the exported bundle on `eval_split`, decoded as the caption job decodes."""
    if eval_split == "none":
        return None
    if not caption_data.features.files(eval_split):
        log.warning("no %s shards: skipping the evaluation", eval_split)
        return None
    return evaluation.evaluate(bundle.Captioner.load(export_dir), caption_data, eval_split,
                               config.caption.batch_size, Decoding.from_config(config.caption))


def _summary(folder: JobFolder, plan: _Plan, train_cfg, history: dict, scst_history: list,
             result: Optional[dict], eval_split: str, started: float) -> dict:
    best = training.lowest_loss_epoch(history)
    scst_best = self_critical.best_epoch(scst_history, train_cfg.select_metric)
    tuned = folder.read_json(ENCODER_FINETUNING.history, {"epochs": []})["epochs"] \
        if train_cfg.finetune_encoder_epochs else []
    return {
        "job_dir": folder.job_dir, "export_dir": folder.shown(EXPORT_DIR),
        "decoder": train_cfg.decoder, "features": plan.inputs.feature, **plan.run_info,
        "epochs_run": len(history["epochs"]), "runs": len(history["runs"]),
        "resumed_from_epoch": history["runs"][-1]["initial_epoch"] if history["runs"] else 0,
        "best_epoch": best and best["epoch"],
        "best_val_loss": best and best.get("val_loss"),
        "final_loss": history["epochs"][-1]["loss"] if history["epochs"] else None,
        "encoder_finetune_epochs_run": len(tuned),
        "encoder_finetune_best_val_loss": min((e["val_loss"] for e in tuned if "val_loss" in e), default=None),
        "self_critical_epochs_run": max(0, len(scst_history) - 1),
        "self_critical_best_epoch": scst_best and scst_best["epoch"], "select_metric": train_cfg.select_metric,
        "bleu": result and result["bleu"], "cider_d": result and result["cider_d"],
        "eval_split": eval_split if result else None, "not_scored": result and result.get("not_scored"),
        "seconds": round(time.time() - started, 1),
    }
