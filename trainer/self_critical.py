"""Self-critical fine-tuning (SCST, Rennie et al. 2017): train the decoder on the captions it generates.

Cross-entropy training teaches the next word of a reference caption given the
reference's own prefix; captioning then feeds the model its own words and is
scored with corpus BLEU. SCST closes that gap after the cross-entropy epochs:
for each training image it draws `samples` captions from the model, rewards
each, and raises the log-probability of the captions that beat the mean of the
image's other samples (and lowers the others): the policy gradient with a
leave-one-out baseline (Luo 2020), which needs no greedy decode and no critic.

The reward is a caption's first-order gain in the log corpus BLEU-4 of the
step's samples (`corpus_bleu_gains`), so what is optimised is the corpus score
that is reported. Smoothed sentence BLEU-4, the obvious reward, favours short
captions (its smoothing floor is higher with fewer n-grams, and a sentence's
brevity penalty is mild): on Flickr8k it raised n-gram precision but left
captions 20% shorter than their references, losing the gain to corpus BLEU's
brevity penalty. The corpus gain rewards length exactly while the corpus is too short.

Every epoch ends with the configured caption decoding (beam size, length
penalty) on the dev split; the best corpus BLEU-4, the cross-entropy model's
included, is what the job exports. Progress lives in job_dir/self_critical/
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
from typing import List, Mapping, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from captioner import bleu, schema
from captioner.decoder import search
from captioner.text import PAD_ID
from trainer.job_folder import SELF_CRITICAL_BEST, SELF_CRITICAL_HISTORY, SELF_CRITICAL_LAST, JobFolder

log = logging.getLogger("trainer")

STATS_SIZE = 2 * bleu.MAX_ORDER + 2  # captioner.bleu's sentence statistics: matches, counts, lengths


def has_started(folder: JobFolder) -> bool:
    """True once a job has scored its cross-entropy model here: that phase is over and must not run again."""
    return folder.exists(SELF_CRITICAL_HISTORY)


def read_history(folder: JobFolder) -> List[dict]:
    return folder.read_json(SELF_CRITICAL_HISTORY, {"epochs": []})["epochs"]


def caption_stats(ids: np.ndarray, references: Sequence[Sequence[Sequence[str]]], tokens: Sequence[str],
                  per_image: int = 1) -> np.ndarray:
    """BLEU statistics [N, STATS_SIZE] of token-id captions.

    Rows i*per_image .. are image i's, each scored against image i's references.
    """
    return np.array([bleu.sentence_stats(references[row // per_image], search.ids_to_words(row_ids, tokens))
                     for row, row_ids in enumerate(ids)], np.float64)


def corpus_bleu_gains(stats: np.ndarray) -> np.ndarray:
    """d log(corpus BLEU-4) / d(sentence i's share), from sentence statistics [N, STATS_SIZE].

    log BLEU-4 = 1/4 sum_n (log M_n - log T_n) + min(0, 1 - R/H) over the corpus totals of clipped
    matches M_n, n-gram counts T_n, hypothesis length H and closest reference length R. Its change when
    sentence i's statistics are added, to first order and times N (so a sentence scores O(1)), is
        N * (1/4 sum_n (m_n/M_n - t_n/T_n) + [H < R] (R h / H^2 - r / H)).
    A sentence gains by matching n-grams at a higher rate than the corpus does, and, while the corpus is
    shorter than its references, by being relatively longer than the corpus.
    """
    orders = (stats.shape[1] - 2) // 2
    totals = stats.sum(axis=0)
    total_matches, total_counts = np.maximum(totals[:orders], 1.0), np.maximum(totals[orders:2 * orders], 1.0)
    total_hyp, total_ref = max(float(totals[-2]), 1.0), float(totals[-1])
    gain = (stats[:, :orders] / total_matches - stats[:, orders:2 * orders] / total_counts).sum(axis=1) / orders
    if total_hyp < total_ref:
        gain += total_ref * stats[:, -2] / total_hyp ** 2 - stats[:, -1] / total_hyp
    return (len(stats) * gain).astype(np.float32)


def advantages(scores: np.ndarray, samples: int) -> np.ndarray:
    """Each sample's reward minus the mean reward of the same image's other samples."""
    grouped = scores.reshape(-1, samples)
    others = (grouped.sum(axis=1, keepdims=True) - grouped) / (samples - 1)
    return (grouped - others).reshape(-1)


class PolicyGradientStep:
    """One distributed step of -sum(advantage x log p(sampled caption)) / sampled tokens, with its own Adam."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy, learning_rate: float):
        self.model, self.strategy = model, strategy
        with strategy.scope():
            self.optimizer = keras.optimizers.Adam(float(learning_rate))
            self.optimizer.build(model.trainable_variables)
        self._step = tf.function(self._distributed_step, reduce_retracing=True)

    def __call__(self, features: np.ndarray, sampled_ids: np.ndarray, advantage: np.ndarray) -> float:
        """features [R, ...] float32 (one row per sampled caption), sampled_ids [R, T], advantage [R]."""
        width = int(np.max(np.sum(sampled_ids != PAD_ID, axis=1)))  # START .. the longest END
        sampled_ids = sampled_ids[:, :width]
        sampled_tokens = float(np.sum(sampled_ids[:, 1:] != PAD_ID))
        replicas = self.strategy.num_replicas_in_sync
        shares = [np.array_split(x, replicas) for x in (features, sampled_ids.astype(np.int32),
                                                         advantage.astype(np.float32))]
        values = self.strategy.experimental_distribute_values_from_function(
            lambda context: tuple(tf.constant(share[context.replica_id_in_sync_group]) for share in shares))
        return float(self._step(values, tf.constant(sampled_tokens, tf.float32)))

    def _distributed_step(self, values, sampled_tokens):
        def replica_step(features, ids, advantage):
            with tf.GradientTape() as tape:
                logits = self.model({"features": features, "tokens": ids[:, :-1]}, training=False)
                log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
                targets = ids[:, 1:]
                chosen = tf.gather(log_probs, targets, batch_dims=2)
                mask = tf.cast(tf.not_equal(targets, PAD_ID), tf.float32)
                loss = -tf.reduce_sum(advantage[:, None] * chosen * mask) / sampled_tokens
            gradients = tape.gradient(loss, self.model.trainable_variables)
            self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
            return loss

        per_replica = self.strategy.run(replica_step, args=values)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)


def dev_bleu(decoder: search.SequenceDecoder, caption_data, decoding_args: Mapping,
             batch_size: int) -> List[float]:
    """Corpus BLEU-1..4 on the dev split with the configured caption decoding."""
    stats = np.zeros(STATS_SIZE)
    for _, arrays, refs in caption_data.images("dev", batch_size):
        arrays, refs = _with_references(arrays, refs)
        if refs:
            ids, _ = decoder.decode(schema.dequantize(arrays, caption_data.features.info), **decoding_args)
            stats += caption_stats(ids, refs, caption_data.features.tokens).sum(axis=0)
    return bleu.corpus_bleu_from_stats(stats.tolist())


def _with_references(arrays: np.ndarray, refs: List) -> Tuple[np.ndarray, List]:
    """The images of a batch that have references (BLEU has nothing to compare the others with)."""
    keep = [i for i, image_refs in enumerate(refs) if image_refs]
    return arrays[keep], [refs[i] for i in keep]


def fine_tune(model: keras.Model, strategy: tf.distribute.Strategy, caption_data, config, folder: JobFolder,
              verbose: int = 1) -> List[dict]:
    """Runs (or resumes) the configured self-critical epochs on `model`, leaving the best dev weights in it.

    `model` holds the cross-entropy model's best weights when this starts afresh. Every epoch's files are
    mirrored to a gs:// job dir once written. Returns history.json's epochs.
    """
    train_cfg, caption_cfg = config.train, config.caption
    epochs = train_cfg.self_critical_epochs
    decoder = search.SequenceDecoder(model, len(caption_data.features.tokens))
    decoding_args = {"beam_size": caption_cfg.beam_size, "length_penalty": caption_cfg.length_penalty,
                     "max_length": train_cfg.max_length}
    has_dev = bool(caption_data.features.files("dev"))

    def score_dev() -> Optional[List[float]]:
        return dev_bleu(decoder, caption_data, decoding_args, caption_cfg.batch_size) if has_dev else None

    history = read_history(folder)
    if history:
        model.load_weights(folder.path(SELF_CRITICAL_LAST))
        log.info("resuming self-critical fine-tuning after epoch %d of %d", history[-1]["epoch"], epochs)
    else:
        if not has_dev:
            log.warning("no dev split: self-critical fine-tuning keeps its last epoch, not its best")
        history = [{"epoch": 0, "dev_bleu": score_dev(), "note": "the cross-entropy model"}]
        _save(model, folder, history, best=True)
        if has_dev:
            log.info("self-critical epoch 0 (the cross-entropy model): dev BLEU-4 x100 %.2f",
                     100 * history[0]["dev_bleu"][3])

    step = PolicyGradientStep(model, strategy, train_cfg.self_critical_learning_rate)
    train_images = caption_data.count("train").images  # one pass over the records: once, not every epoch
    for epoch in range(history[-1]["epoch"] + 1, epochs + 1):
        started = time.time()
        sampled_bleu = _epoch(decoder, step, caption_data, train_cfg, train_images, epoch, verbose)
        score = score_dev()
        best = highest_bleu_epoch(history)
        improved = score is None or not best.get("dev_bleu") or score[3] > best["dev_bleu"][3]
        history.append({"epoch": epoch, "seconds": round(time.time() - started, 1),
                        "sampled_train_bleu": sampled_bleu, "dev_bleu": score})
        _save(model, folder, history, best=improved)
        log.info("self-critical epoch %d of %d: BLEU-4 x100 of the sampled train captions %.2f, dev %s%s (%.0f s)",
                 epoch, epochs, 100 * sampled_bleu[3], f"{100 * score[3]:.2f}" if score else "-",
                 " (best)" if improved else "", history[-1]["seconds"])
    model.load_weights(folder.path(SELF_CRITICAL_BEST))
    best = highest_bleu_epoch(history)
    log.info("self-critical fine-tuning keeps epoch %d%s", best["epoch"],
             " (the cross-entropy model)" if best["epoch"] == 0 else "")
    return history


def _epoch(decoder: search.SequenceDecoder, step: PolicyGradientStep, caption_data, train_cfg, train_images: int,
           epoch: int, verbose: int) -> List[float]:
    """One pass over the train images; returns the corpus BLEU-1..4 of the captions it sampled."""
    tokens, info = caption_data.features.tokens, caption_data.features.info
    samples, max_length = train_cfg.self_critical_samples, train_cfg.max_length
    images_per_step = train_cfg.batch_size * step.strategy.num_replicas_in_sync
    seed = train_cfg.seed * 1_000_003 + epoch * 10_007
    sampled_stats = np.zeros(STATS_SIZE)
    progress = keras.utils.Progbar(train_images, verbose=verbose, unit_name="image")
    for draw, (_, arrays, refs) in enumerate(caption_data.images("train", images_per_step, shuffle_buffer=2000)):
        progress_images = len(arrays)
        arrays, refs = _with_references(arrays, refs)
        if not refs:
            progress.add(progress_images)
            continue
        values = schema.dequantize(arrays, info)
        sampled, _ = decoder.sample(values, samples, max_length, seed=seed + draw)
        stats = caption_stats(sampled, refs, tokens, per_image=samples)
        loss = step(np.repeat(values, samples, axis=0), sampled, advantages(corpus_bleu_gains(stats), samples))
        sampled_stats += stats.sum(axis=0)
        progress.add(progress_images, values=[("sampled_bleu4", bleu.corpus_bleu_from_stats(stats.sum(axis=0))[3]),
                                              ("loss", loss)])
    return bleu.corpus_bleu_from_stats(sampled_stats.tolist())


def _save(model: keras.Model, folder: JobFolder, history: List[dict], best: bool) -> None:
    """Weights first, then history.json (the commit point a restart resumes from), then the gs:// mirror."""
    os.makedirs(os.path.dirname(folder.path(SELF_CRITICAL_LAST)), exist_ok=True)
    model.save_weights(folder.path(SELF_CRITICAL_LAST))
    if best:
        model.save_weights(folder.path(SELF_CRITICAL_BEST))
    folder.write_json(SELF_CRITICAL_HISTORY, {"epochs": history})
    folder.sync()


def highest_bleu_epoch(history: Sequence[Mapping]) -> Optional[dict]:
    """The self-critical epoch with the highest dev BLEU-4 (the last one when dev was not scored)."""
    scored = [e for e in history if e.get("dev_bleu")]
    return max(scored, key=lambda e: e["dev_bleu"][3]) if scored else (history[-1] if history else None)
