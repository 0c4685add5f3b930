"""Self-critical fine-tuning (SCST, Rennie et al. 2017): train the decoder on the captions it generates.

Cross-entropy training teaches the next word of a reference caption given the
reference's own prefix; captioning then feeds the model its own words and is
scored with corpus BLEU. SCST closes that gap after the cross-entropy epochs:
for each training image it draws `samples` captions from the model, rewards
each, and raises the log-probability of the captions that beat the mean of the
image's other samples (and lowers the others): the policy gradient with a
leave-one-out baseline (Luo 2020), which needs no greedy decode and no critic.

The reward (`train.self_critical_reward`, trainer/self_critical/rewards.py) is a caption's
gain in the corpus BLEU-4 of the step's samples, its CIDEr-D, or both.

Every epoch ends with the configured caption decoding (beam size, length
penalty) on the dev split, scored with corpus BLEU and CIDEr-D
(evaluation.score_captions); the best epoch on `train.select_metric`, the
cross-entropy model's included, is what the job exports. Progress lives in job_dir/self_critical/
(history.json, last and best weights; see job_folder.py), so a killed job
resumes at the next self-critical epoch without repeating the cross-entropy
phase. Adam's moments start afresh on resume.

The gradient step runs under the job's strategy (`strategy.run`, gradients
summed across replicas by the optimizer), each replica taking an even share of
the sampled captions; sampling itself is one batched `tf.function`
(`captioner.decoder.search.SequenceDecoder.sample`).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from captioner import schema
from captioner.decoder import search
from captioner.decoder.decoding import Decoding
from captioner.metrics import bleu, cider
from captioner.text import PAD_ID
from trainer import callbacks, evaluation
from trainer.self_critical import rewards
from trainer.grouped import GroupedDecoder
from trainer.job_folder import SELF_CRITICAL_BEST, SELF_CRITICAL_HISTORY, SELF_CRITICAL_LAST, JobFolder

log = logging.getLogger("trainer")

SCORE_KEYS = {"bleu4": ("dev_bleu", 3), "cider_d": ("dev_cider_d", None)}  # history entry field, index


def has_started(folder: JobFolder) -> bool:
    """True once a job has scored its cross-entropy model here: that phase is over and must not run again."""
    return folder.exists(SELF_CRITICAL_HISTORY)


def read_history(folder: JobFolder) -> List[dict]:
    return folder.read_json(SELF_CRITICAL_HISTORY, {"epochs": []})["epochs"]


def advantages(scores: np.ndarray, samples: int) -> np.ndarray:
    """Each sample's reward minus the mean reward of the same image's other samples."""
    grouped = scores.reshape(-1, samples)
    others = (grouped.sum(axis=1, keepdims=True) - grouped) / (samples - 1)
    return (grouped - others).reshape(-1)


class PolicyGradientStep:
    """One distributed step of -sum(advantage x log p(sampled caption)) / sampled tokens, with its own Adam.

    An image's samples are one row of the grouped decoder (trainer/grouped.py): its image side runs once.
    """

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy, learning_rate: float):
        self.model, self.strategy = model, strategy
        self.grouped = GroupedDecoder(model)
        with strategy.scope():
            self.optimizer = keras.optimizers.Adam(float(learning_rate))
            if model.dtype_policy.name == "mixed_float16":  # as Keras's compile does: dynamic loss scaling
                self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
            self.optimizer.build(model.trainable_variables)
        self._step = tf.function(self._distributed_step, reduce_retracing=True)

    def __call__(self, features: np.ndarray, sampled_ids: np.ndarray, advantage: np.ndarray) -> float:
        """features [N, ...] float32 (one row per image), sampled_ids [N, k, T], advantage [N, k]."""
        width = int(np.max(np.sum(sampled_ids != PAD_ID, axis=-1)))  # START .. the longest END
        sampled_ids = sampled_ids[..., :width]
        sampled_tokens = float(np.sum(sampled_ids[..., 1:] != PAD_ID))
        replicas = self.strategy.num_replicas_in_sync
        shares = [np.array_split(x, replicas) for x in (features, sampled_ids.astype(np.int32),
                                                         advantage.astype(np.float32))]
        values = self.strategy.experimental_distribute_values_from_function(
            lambda context: tuple(tf.constant(share[context.replica_id_in_sync_group]) for share in shares))
        return float(self._step(values, tf.constant(sampled_tokens, tf.float32)))

    def _distributed_step(self, values, sampled_tokens):
        def replica_step(features, ids, advantage):
            with tf.GradientTape() as tape:
                logits = self.grouped({"features": features, "tokens": ids[..., :-1]}, training=False)
                log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
                targets = ids[..., 1:]
                chosen = tf.gather(log_probs, targets, batch_dims=3)
                mask = tf.cast(tf.not_equal(targets, PAD_ID), tf.float32)
                loss = -tf.reduce_sum(advantage[..., None] * chosen * mask) / sampled_tokens
            gradients = tape.gradient(self.optimizer.scale_loss(loss), self.model.trainable_variables)
            self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
            return loss

        per_replica = self.strategy.run(replica_step, args=values)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)


def dev_scores(decoder: search.SequenceDecoder, caption_data, decoding: Decoding,
               batch_size: int) -> Dict[str, object]:
    """{"dev_bleu": corpus BLEU-1..4, "dev_cider_d": CIDEr-D} on the dev split with the configured decoding."""
    features = caption_data.features

    def caption_batch(arrays):
        ids, scores = decoder.decode(schema.dequantize(arrays, features.info), decoding)
        return [(" ".join(search.ids_to_words(row, features.tokens)), float(s)) for row, s in zip(ids, scores)]

    captioned = [(caption.split(), refs) for _, caption, _, refs in
                 evaluation.caption_split(caption_data, "dev", batch_size, caption_batch) if refs]
    scored = evaluation.score_captions([refs for _, refs in captioned], [words for words, _ in captioned])
    return {"dev_bleu": scored["bleu"], "dev_cider_d": scored["cider_d"]}


def score(entry: Mapping, metric: str) -> Optional[float]:
    """An epoch's dev score on `metric` (bleu4 | cider_d), None when that epoch was not scored with it."""
    key, index = SCORE_KEYS[metric]
    value = entry.get(key)
    return value if value is None or index is None else value[index]


def _with_references(arrays: np.ndarray, refs: List) -> Tuple[np.ndarray, List]:
    """The images of a batch that have references (BLEU has nothing to compare the others with)."""
    keep = [i for i, image_refs in enumerate(refs) if image_refs]
    return arrays[keep], [refs[i] for i in keep]


def fine_tune(model: keras.Model, strategy: tf.distribute.Strategy, caption_data, config, folder: JobFolder,
              verbose: int = 1) -> List[dict]:
    """Runs (or resumes) the configured self-critical epochs on `model`, leaving the best dev weights in it.

    `model` holds the cross-entropy (or encoder fine-tuning) phase's best weights when this starts afresh;
    `caption_data` gives the features it reads (after encoder fine-tuning, finetune.features_cache's). Every
    epoch's files are mirrored to a gs:// job dir once written. Returns history.json's epochs.
    """
    train_cfg, caption_cfg = config.train, config.caption
    epochs, metric = train_cfg.self_critical_epochs, train_cfg.select_metric
    decoder = search.SequenceDecoder(model, len(caption_data.features.tokens))
    decoding = Decoding.from_config(caption_cfg)
    has_dev = bool(caption_data.features.files("dev"))

    def score_dev() -> Dict[str, object]:
        return dev_scores(decoder, caption_data, decoding, caption_cfg.batch_size) if has_dev else {}

    history = read_history(folder)
    if history:
        model.load_weights(folder.path(SELF_CRITICAL_LAST))
        log.info("resuming self-critical fine-tuning after epoch %d of %d", history[-1]["epoch"], epochs)
    else:
        if not has_dev:
            log.warning("no dev split: self-critical fine-tuning keeps its last epoch, not its best")
        history = [{"epoch": 0, **score_dev(), "note": "the cross-entropy model"}]
        _save(model, folder, history, best=True)
        log.info("self-critical epoch 0 (the cross-entropy model): dev %s", _shown(history[0]))

    step = PolicyGradientStep(model, strategy, train_cfg.self_critical_learning_rate)
    train_images = caption_data.count("train").images  # one pass over the records: once, not every epoch
    reward = _reward(train_cfg.self_critical_reward, caption_data)
    for epoch in range(history[-1]["epoch"] + 1, epochs + 1):
        started = time.time()
        sampled = _epoch(decoder, step, reward, caption_data, train_cfg, train_images, epoch, verbose)
        entry = {"epoch": epoch, **sampled, **score_dev()}
        best = best_epoch(history, metric)
        improved = score(entry, metric) is None or best is None or score(best, metric) is None or \
            score(entry, metric) > score(best, metric)
        history.append({**entry, "seconds": round(time.time() - started, 1)})
        _save(model, folder, history, best=improved)
        log.info("self-critical epoch %d of %d: sampled train captions BLEU-4 x100 %.2f%s, dev %s%s (%.0f s)",
                 epoch, epochs, 100 * sampled["sampled_train_bleu"][3],
                 f", CIDEr-D x100 {100 * sampled['sampled_train_cider_d']:.1f}" if "sampled_train_cider_d" in sampled
                 else "", _shown(entry), " (best)" if improved else "", history[-1]["seconds"])
    model.load_weights(folder.path(SELF_CRITICAL_BEST))
    best = best_epoch(history, metric)
    log.info("self-critical fine-tuning keeps epoch %d%s (best dev %s)", best["epoch"],
             " (the cross-entropy model)" if best["epoch"] == 0 else "", metric)
    return history


def _shown(entry: Mapping) -> str:
    if entry.get("dev_bleu") is None:
        return "-"
    return f"BLEU-4 x100 {100 * entry['dev_bleu'][3]:.2f}, CIDEr-D x100 {100 * entry['dev_cider_d']:.1f}"


def _reward(kind: str, caption_data) -> rewards.Reward:
    """The configured reward; CIDEr-D's document frequencies come from one pass over the train references."""
    if kind == "bleu4":
        return rewards.Reward(kind)
    references = [[rewards.ended(r) for r in refs] for _, _, batch in caption_data.images("train", 256)
                  for refs in batch if refs]
    log.info("self-critical reward %s: document frequencies of %d train images' references", kind, len(references))
    return rewards.Reward(kind, cider.document_frequencies(references), len(references))


def _epoch(decoder: search.SequenceDecoder, step: PolicyGradientStep, reward: rewards.Reward, caption_data,
           train_cfg, train_images: int, epoch: int, verbose: int) -> Dict[str, object]:
    """One pass over the train images; returns the corpus BLEU-1..4 (and mean CIDEr-D) of what it sampled."""
    tokens = caption_data.features.tokens
    samples, max_length = train_cfg.self_critical_samples, train_cfg.max_length
    images_per_step = train_cfg.batch_size * step.strategy.num_replicas_in_sync
    seed = train_cfg.seed * 1_000_003 + epoch * 10_007
    sampled_stats, cider_sum, sampled_count = np.zeros(rewards.STATS_SIZE), 0.0, 0
    progress = keras.utils.Progbar(train_images, verbose=verbose, unit_name="image")
    for draw, (_, arrays, refs) in enumerate(caption_data.images("train", images_per_step, shuffle_buffer=2000)):
        progress_images = len(arrays)
        arrays, refs = _with_references(arrays, refs)
        if not refs:
            progress.add(progress_images)
            continue
        values = schema.dequantize(arrays, caption_data.features.info)
        sampled, _ = decoder.sample(values, samples, max_length, seed=seed + draw)
        earned, stats, step_cider = reward(sampled, refs, tokens, samples)
        loss = step(values, sampled.reshape(len(values), samples, -1),
                    advantages(earned, samples).reshape(len(values), samples))
        sampled_stats += stats.sum(axis=0)
        cider_sum, sampled_count = cider_sum + step_cider, sampled_count + len(sampled)
        progress.add(progress_images, values=[("sampled_bleu4", bleu.corpus_bleu_from_stats(stats.sum(axis=0))[3]),
                                              ("loss", loss)])
    result = {"sampled_train_bleu": bleu.corpus_bleu_from_stats(sampled_stats.tolist())}
    if reward.needs_document_frequencies:
        result["sampled_train_cider_d"] = cider_sum / max(1, sampled_count)
    return result


def _save(model: keras.Model, folder: JobFolder, history: List[dict], best: bool) -> None:
    """Weights first, then history.json (the commit point a restart resumes from), then the gs:// mirror."""
    os.makedirs(os.path.dirname(folder.path(SELF_CRITICAL_LAST)), exist_ok=True)
    callbacks.check_disk_space(folder, model)
    model.save_weights(folder.path(SELF_CRITICAL_LAST))
    if best:
        model.save_weights(folder.path(SELF_CRITICAL_BEST))
    folder.write_json(SELF_CRITICAL_HISTORY, {"epochs": history})
    folder.sync()


def best_epoch(history: Sequence[Mapping], metric: str) -> Optional[dict]:
    """The self-critical epoch with the highest dev `metric` (the last one when dev was not scored)."""
    scored = [e for e in history if score(e, metric) is not None]
    return max(scored, key=lambda e: score(e, metric)) if scored else (history[-1] if history else None)
