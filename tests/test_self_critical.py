"""Self-critical fine-tuning: sampling, the leave-one-out baseline, the distributed step, and the job phase."""
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from captioner import bundle, storage
from captioner.metrics import bleu
from captioner.metrics import cider
from captioner.decoder import architectures, search
from captioner.decoder.decoding import Decoding
from captioner.text import END_ID, OOV_ID, PAD_ID, START_ID
from tests.synthetic_features import tiny_config, write_synthetic_features
from trainer import data, evaluation, features_folder, job
from trainer.self_critical import loop as self_critical
from trainer.self_critical import rewards
from trainer.job_folder import SELF_CRITICAL_HISTORY, JobFolder

VOCAB = 9


def _model(decoder="merge", shape=(6,), seed=3):
    keras.utils.set_random_seed(seed)
    return architectures.build_decoder(decoder, list(shape), vocab_size=VOCAB, embedding_dim=8, units=16)


def _teacher_forced_log_probs(model, features, ids):
    """Total log p of each row's tokens after START, up to and including END, from the whole-sequence model."""
    logits = model({"features": features, "tokens": ids[:, :-1]}, training=False)
    log_probs = tf.nn.log_softmax(logits).numpy()
    picked = np.take_along_axis(log_probs, ids[:, 1:, None], axis=-1)[..., 0]
    return np.sum(np.where(ids[:, 1:] != PAD_ID, picked, 0.0), axis=1)


def test_advantages_are_each_reward_minus_the_mean_of_the_other_samples():
    rewards = np.array([1.0, 0.0, 0.5, 0.2, 0.2, 0.2], np.float32)
    result = self_critical.advantages(rewards, samples=3)
    np.testing.assert_allclose(result, [0.75, -0.75, 0.0, 0.0, 0.0, 0.0], atol=1e-6)


def _random_stats(rng, hypothesis_words, count=200):
    words = "a b c d e f g".split()
    references = [[list(rng.choice(words, rng.integers(6, 11))) for _ in range(3)] for _ in range(count)]
    hypotheses = [list(rng.choice(words[:4], rng.integers(*hypothesis_words))) for _ in range(count)]
    return np.array([bleu.sentence_stats(r, h) for r, h in zip(references, hypotheses)], np.float64)


@pytest.mark.parametrize("hypothesis_words", [(3, 8), (9, 14)], ids=["corpus shorter", "corpus longer"])
def test_rewards_are_each_captions_gain_in_log_corpus_bleu(hypothesis_words):
    stats = _random_stats(np.random.default_rng(4), hypothesis_words)
    gains = rewards.corpus_bleu_gains(stats)
    base = math.log(bleu.corpus_bleu_from_stats(stats.sum(axis=0).tolist())[3])
    for i in range(8):  # a small extra share of sentence i moves log corpus BLEU-4 by gain_i / N per unit
        moved = math.log(bleu.corpus_bleu_from_stats((stats.sum(axis=0) + 1e-4 * stats[i]).tolist())[3])
        assert gains[i] == pytest.approx(len(stats) * (moved - base) / 1e-4, rel=1e-3, abs=1e-4)
    # BLEU does not change when every count is scaled, so the gains of a corpus's own sentences sum to 0
    assert abs(gains.sum()) < 1e-3


def test_caption_stats_score_each_caption_against_its_own_image():
    tokens = ["<pad>", "<unk>", "<start>", "<end>", "dog", "runs", "cat", "sleeps"]
    references = [[["dog", "runs"]], [["cat", "sleeps"]]]
    sampled = np.array([[2, 4, 5, 3], [2, 6, 7, 3], [2, 6, 7, 3], [2, 4, 3, 0]])
    stats = rewards.caption_stats(sampled, references, tokens, per_image=2)
    expected = [bleu.sentence_stats(references[image], words) for image, words in
                ((0, ["dog", "runs"]), (0, ["cat", "sleeps"]), (1, ["cat", "sleeps"]), (1, ["dog"]))]
    np.testing.assert_array_equal(stats, expected)
    gains = rewards.corpus_bleu_gains(stats)
    assert gains[0] > gains[1] and gains[2] > gains[3]


def test_sampling_draws_from_the_model_and_scores_what_it_drew():
    model = _model()
    features = np.random.default_rng(0).random((2, 6), np.float32)
    sampler = search.SequenceDecoder(model, VOCAB)
    ids, scores = sampler.sample(features, samples_per_image=3000, max_length=5, seed=11)
    assert ids.shape == (6000, 7) and (ids[:, 0] == START_ID).all()
    generated = ids[:, 1:]
    assert not np.isin(generated, [OOV_ID, START_ID]).any()
    # after END only PAD; a caption may not run past max_length words without ending
    ended = np.cumsum(generated == END_ID, axis=1) > 0
    after_end = np.concatenate([np.zeros((len(ids), 1), bool), ended[:, :-1]], axis=1)
    assert (generated[after_end] == PAD_ID).all() and ended[:, -1].all()
    np.testing.assert_allclose(scores, _teacher_forced_log_probs(model, np.repeat(features, 3000, axis=0), ids),
                               rtol=1e-4, atol=1e-4)
    # the first word's frequencies follow the model's softmax over the words it may generate
    first = model({"features": features, "tokens": np.full((2, 1), START_ID)}, training=False)[:, 0]
    allowed = np.ones(VOCAB, bool)
    allowed[[PAD_ID, OOV_ID, START_ID]] = False
    for image in range(2):
        p = np.where(allowed, np.exp(first[image].numpy()), 0.0)
        p /= p.sum()
        counts = np.bincount(ids[image * 3000:(image + 1) * 3000, 1], minlength=VOCAB)
        assert np.all(np.abs(counts / 3000 - p) <= 4 * np.sqrt(p * (1 - p) / 3000) + 1e-9), (counts / 3000, p)
    again, _ = sampler.sample(features, samples_per_image=3000, max_length=5, seed=11)
    other, _ = sampler.sample(features, samples_per_image=3000, max_length=5, seed=12)
    np.testing.assert_array_equal(again, ids)
    assert (other != ids).any()


def test_a_step_raises_the_log_probability_of_captions_with_positive_advantage():
    model = _model("attention", (2, 2, 6))
    features = np.random.default_rng(1).random((4, 2, 2, 6), np.float32)
    ids = np.array([[2, 4, 5, 3, 0], [2, 6, 7, 8, 3], [2, 4, 5, 3, 0], [2, 6, 7, 8, 3]], np.int32)
    advantage = np.array([1.0, -1.0, 1.0, -1.0], np.float32)
    before = _teacher_forced_log_probs(model, features, ids)
    step = self_critical.PolicyGradientStep(model, tf.distribute.get_strategy(), learning_rate=0.001)
    for _ in range(3):  # one sample per image: rows [4, 1, T]
        step(features, ids[:, None], advantage[:, None])
    after = _teacher_forced_log_probs(model, features, ids)
    assert np.dot(advantage, after) > np.dot(advantage, before) + 0.1  # the objective the step ascends
    # for each image, the caption with the positive advantage gained on the other
    assert (after[0::2] - after[1::2] > before[0::2] - before[1::2]).all()


@pytest.mark.slow
def test_a_step_on_two_replicas_equals_the_step_on_one():
    rng = np.random.default_rng(2)
    features = rng.random((4, 2, 2, 6), np.float32)
    ids = np.concatenate([np.full((8, 1), START_ID), rng.integers(4, VOCAB, (8, 4)),
                          np.full((8, 1), END_ID)], axis=1).astype(np.int32)
    ids[::3, 3:] = PAD_ID  # rows of different lengths
    ids[::3, 3] = END_ID
    ids = ids.reshape(4, 2, -1)  # two samples of each of 4 images
    advantage = rng.normal(size=(4, 2)).astype(np.float32)
    weights, losses = {}, {}
    for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
        strategy = tf.distribute.MirroredStrategy(devices)
        with strategy.scope():
            model = _model("attention", (2, 2, 6))
        step = self_critical.PolicyGradientStep(model, strategy, learning_rate=0.01)
        losses[len(devices)] = [step(features, ids, advantage) for _ in range(2)]
        weights[len(devices)] = model.get_weights()
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-5)  # the global loss, not a replica's share
    for one, two in zip(weights[1], weights[2]):  # Adam magnifies float noise in ~0 gradients: 1% of a step
        np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_job_fine_tunes_exports_the_best_dev_epoch_and_resumes_without_retraining(synthetic, tmp_path):
    # cross-entropy training stopped early, so sampled captions are still often wrong
    config = tiny_config(epochs=2, self_critical_epochs=2, self_critical_learning_rate=0.003)
    job_dir = str(tmp_path / "job")
    first = job.run(config, synthetic, job_dir, devices=["/cpu:0"], eval_split="none", verbose=0)
    history = self_critical.read_history(JobFolder(job_dir, job_dir))
    assert [e["epoch"] for e in history] == [0, 1, 2]
    assert history[0]["note"] == "the cross-entropy model"
    dev = [e["dev_bleu"][3] for e in history]
    print(f"\ndev BLEU-4 by self-critical epoch: {dev}")
    assert max(dev[1:]) > dev[0]  # sampled captions scored with BLEU teach the model
    best = self_critical.best_epoch(history, "bleu4")
    assert first.summary["self_critical_best_epoch"] == best["epoch"] == int(np.argmax(dev))
    assert first.summary["self_critical_epochs_run"] == 2

    # what was exported is the best dev epoch's weights
    folder = features_folder.open_features(synthetic, config.train, cache_dir="unused")
    captioner = bundle.Captioner.load(os.path.join(job_dir, "export"))
    exported, _ = evaluation.evaluate(captioner, data.CaptionData(folder, 12), "dev", 64,
                                      Decoding.from_config(config.caption))
    assert exported["bleu"]["bleu4"] == pytest.approx(best["dev_bleu"][3], abs=1e-6)

    # asking for one more epoch resumes after epoch 2: no cross-entropy epoch runs again
    with open(os.path.join(job_dir, "history.json")) as handle:
        cross_entropy = json.load(handle)
    second = job.run(tiny_config(epochs=2, self_critical_epochs=3, self_critical_learning_rate=0.003),
                     synthetic, job_dir, devices=["/cpu:0"], eval_split="none", verbose=0)
    with open(os.path.join(job_dir, "history.json")) as handle:
        assert json.load(handle) == cross_entropy
    resumed = self_critical.read_history(JobFolder(job_dir, job_dir))
    assert [e["epoch"] for e in resumed] == [0, 1, 2, 3] and resumed[:3] == history
    assert second.summary["self_critical_epochs_run"] == 3


@pytest.mark.slow
def test_a_gcs_job_resumes_self_critical_epochs_without_retraining(gcs_folder):
    features, job_dir = f"{gcs_folder}/features", f"{gcs_folder}/jobs/scst"
    write_synthetic_features(features, num_train=24, num_dev=8, num_test=8, num_shards=1)
    config = tiny_config(epochs=1, batch_size=8, self_critical_epochs=1)
    job.run(config, features, job_dir, eval_split="none", verbose=0)
    assert storage.exists(f"{job_dir}/{SELF_CRITICAL_HISTORY}") and storage.exists(f"{job_dir}/export/decoder.keras")
    cross_entropy = storage.read_text(f"{job_dir}/history.json")
    # a new machine (an empty local work dir) brings the job down and goes on after self-critical epoch 1
    config = config.with_values(train={"self_critical_epochs": 2})
    result = job.run(config, features, job_dir, eval_split="none", verbose=0)
    assert storage.read_text(f"{job_dir}/history.json") == cross_entropy
    history = json.loads(storage.read_text(f"{job_dir}/{SELF_CRITICAL_HISTORY}"))["epochs"]
    assert [e["epoch"] for e in history] == [0, 1, 2]
    assert result.summary["self_critical_epochs_run"] == 2 and result.summary["runs"] == 1


def test_cider_rewards_are_the_caption_jobs_cider_d_and_mixed_adds_the_bleu_gain():
    tokens = ["<pad>", "<unk>", "<start>", "<end>", "dog", "runs", "cat", "sleeps", "on", "grass"]
    references = [[["dog", "runs", "on", "grass"], ["dog", "runs"]], [["cat", "sleeps"], ["cat", "sleeps", "on", "grass"]]]
    # the last sample never ended (cut at max_length): it gets no end token
    sampled = np.array([[2, 4, 5, 8, 9, 3], [2, 6, 7, 3, 0, 0], [2, 6, 7, 8, 9, 3], [2, 6, 7, 8, 9, 8]])
    joined = [[" ".join(r) + " <end>" for r in refs] for refs in references] + [["dog on grass <end>"]]
    df = cider.document_frequencies(joined)  # as the trainer makes them: train references, end token included
    cider_reward, stats, total = rewards.Reward("cider_d", df, len(joined))(sampled, references, tokens, 2)
    expected = [cider.cider_d(c, joined[image], df, len(joined)) for image, c in
                ((0, "dog runs on grass <end>"), (0, "cat sleeps <end>"), (1, "cat sleeps on grass <end>"),
                 (1, "cat sleeps on grass on"))]
    np.testing.assert_allclose(cider_reward, expected, rtol=1e-6)
    assert cider_reward[0] > cider_reward[1] and cider_reward[2] > cider_reward[3] and total == pytest.approx(sum(expected))
    np.testing.assert_array_equal(stats, rewards.caption_stats(sampled, references, tokens, per_image=2))
    mixed, _, _ = rewards.Reward("mixed", df, len(joined))(sampled, references, tokens, 2)
    np.testing.assert_allclose(mixed, cider_reward + rewards.corpus_bleu_gains(stats), rtol=1e-6)
    with pytest.raises(ValueError, match="document frequencies"):
        rewards.Reward("cider_d")


def test_dev_scores_equal_pycocoevalcaps_cider_d_and_nltks_bleu():
    from pycocoevalcap.cider.cider import Cider
    rng = np.random.default_rng(5)
    words = "a dog cat runs on the grass sleeps red ball".split()
    references = [[list(rng.choice(words, rng.integers(4, 9))) for _ in range(3)] for _ in range(40)]
    hypotheses = [list(rng.choice(words, rng.integers(3, 8))) for _ in range(40)]
    scored = evaluation.score_captions(references, hypotheses)
    official, _ = Cider().compute_score({i: [" ".join(r) for r in refs] for i, refs in enumerate(references)},
                                        {i: [" ".join(h)] for i, h in enumerate(hypotheses)})
    assert scored["cider_d"] == pytest.approx(official, abs=1e-9)
    assert scored["bleu"] == bleu.corpus_bleu(references, hypotheses)
    assert evaluation.score_captions([], []) == {"bleu": None, "cider_d": None}  # nothing scored is not a 0


@pytest.mark.slow
def test_a_cider_rewarded_job_exports_the_best_dev_cider_d_epoch(synthetic, tmp_path):
    config = tiny_config(epochs=2, self_critical_epochs=2, self_critical_learning_rate=0.001,
                         self_critical_reward="mixed", select_metric="cider_d")
    job_dir = str(tmp_path / "job")
    result = job.run(config, synthetic, job_dir, devices=["/cpu:0"], eval_split="dev", verbose=0)
    history = self_critical.read_history(JobFolder(job_dir, job_dir))
    dev = [e["dev_cider_d"] for e in history]
    print(f"\ndev CIDEr-D by self-critical epoch: {dev}")
    assert max(dev[1:]) > dev[0]  # sampled captions rewarded with CIDEr-D teach the model
    assert all(e["sampled_train_cider_d"] > 0 for e in history[1:])
    best = self_critical.best_epoch(history, "cider_d")
    assert best["epoch"] == int(np.argmax(dev)) == result.summary["self_critical_best_epoch"]
    assert result.summary["select_metric"] == "cider_d"
    # the job's evaluation of the exported bundle on dev is the best epoch's dev scoring
    assert result.summary["cider_d"] == pytest.approx(best["dev_cider_d"], abs=1e-6)
    assert result.summary["bleu"]["bleu4"] == pytest.approx(best["dev_bleu"][3], abs=1e-6)
