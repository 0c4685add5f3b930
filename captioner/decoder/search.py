"""Batched greedy and beam-search decoding: one tf.function per batch, never one predict per word.

Each decoding is a `tf.while_loop` over time steps inside one `tf.function`,
with every image (and every beam of every image) in one batch. The image side
is computed once (`stepwise.StepwiseDecoder.start`) and each step feeds
only the newest token through the LSTM cell (or the transformer's blocks, with
their caches of keys and values) with its carried state, so a caption costs
O(T) steps of one token each (beam search reorders the carried state with the beams).

Shared rules (so beam_size=1 is exactly greedy):
- PAD, OOV and START are never generated; after END a hypothesis only appends
  PAD at log-probability 0;
- the step that would make the caption longer than `max_length` words may
  only produce END (training saw truncated captions end that way);
- scores are total log-probabilities (including END); beams are ranked by
  score / lp(len), GNMT's lp = ((5 + len) / 6) ** length_penalty, with len the
  number of generated tokens including END (lp is exactly 1 when the penalty is 0).

Only `beam_size` is a Python value (it fixes shapes): one trace per beam size,
whatever the batch size, max_length or length penalty.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from captioner.decoder import stepwise
from captioner.decoder.decoding import Decoding
from captioner.text import END_ID, OOV_ID, PAD_ID, START_ID
_NEG = -1e9  # "impossible" without -inf arithmetic (inf - inf = nan)


class SequenceDecoder:
    """Greedy and beam search over a decoder model (inputs {"features", "tokens"}, output logits)."""

    def __init__(self, model, vocab_size: int):
        self.stepper = stepwise.StepwiseDecoder(model)
        self.vocab_size = int(vocab_size)
        banned = np.zeros([self.vocab_size], np.float32)
        banned[[PAD_ID, OOV_ID, START_ID]] = _NEG
        self._banned = tf.constant(banned)
        self._only_end = tf.constant(np.where(np.arange(self.vocab_size) == END_ID, 0.0, _NEG).astype(np.float32))
        self._only_pad = tf.constant(np.where(np.arange(self.vocab_size) == PAD_ID, 0.0, _NEG).astype(np.float32))
        self._greedy_fn = tf.function(self._greedy, reduce_retracing=True)
        self._beam_fn = tf.function(self._beam, reduce_retracing=True)
        self._sample_fn = tf.function(self._sample, reduce_retracing=True)

    # --- public ---------------------------------------------------------------------------------
    def greedy(self, features: np.ndarray, max_length: int) -> Tuple[np.ndarray, np.ndarray]:
        """Token ids [N, max_length+2] (START first) and total log-probabilities [N]."""
        tokens, scores = self._greedy_fn(tf.convert_to_tensor(features, tf.float32),
                                         tf.constant(int(max_length), tf.int32))
        return tokens.numpy(), scores.numpy()

    def beam(self, features: np.ndarray, beam_size: int, max_length: int,
             length_penalty: float) -> Tuple[np.ndarray, np.ndarray]:
        """The best beam per image: token ids [N, max_length+2] and total log-probabilities [N]."""
        tokens, scores = self.beams(features, beam_size, max_length, length_penalty)
        return tokens[:, 0], scores[:, 0]

    def beams(self, features: np.ndarray, beam_size: int, max_length: int,
              length_penalty: float) -> Tuple[np.ndarray, np.ndarray]:
        """Every final beam per image, best first: token ids [N, beam_size, max_length+2], log-probs [N, beam_size]."""
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        tokens, scores = self._beam_fn(tf.convert_to_tensor(features, tf.float32), int(beam_size),
                                       tf.constant(int(max_length), tf.int32),
                                       tf.constant(float(length_penalty), tf.float32))
        return tokens.numpy(), scores.numpy()

    def sample(self, features: np.ndarray, samples_per_image: int, max_length: int,
               seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
        """Captions drawn from the model's own distribution (same rules as above), for self-critical training.

        Rows i*k .. i*k+k-1 are the k = `samples_per_image` samples of image i: token ids
        [N*k, max_length+2] and total log-probabilities [N*k]. The same seed draws the same captions.
        """
        if samples_per_image < 1:
            raise ValueError(f"samples_per_image must be >= 1, got {samples_per_image}")
        tokens, scores = self._sample_fn(tf.convert_to_tensor(features, tf.float32), int(samples_per_image),
                                         tf.constant(int(max_length), tf.int32), tf.constant(int(seed), tf.int32))
        return tokens.numpy(), scores.numpy()

    def decode(self, features: np.ndarray, decoding: Decoding) -> Tuple[np.ndarray, np.ndarray]:
        """Greedy or beam search as `decoding` says: token ids [N, max_length+2] and log-probabilities [N]."""
        tokens, scores = self.ranked(features, decoding, top=1)
        return tokens[:, 0], scores[:, 0]

    def ranked(self, features: np.ndarray, decoding: Decoding, top: int) -> Tuple[np.ndarray, np.ndarray]:
        """The `top` best captions per image, best first: token ids [N, top, max_length+2], log-probs [N, top].

        They are the final beams in the order beam search ranks them (so the first is `decode`'s caption);
        greedy decoding has one, so `top` is at most the beam size.
        """
        if not 1 <= top <= decoding.beam_size:
            raise ValueError(f"top={top}: between 1 and the beam size ({decoding.beam_size})")
        if decoding.beam_size == 1:
            tokens, scores = self.greedy(features, decoding.max_length)
            return tokens[:, None], scores[:, None]
        tokens, scores = self.beams(features, decoding.beam_size, decoding.max_length, decoding.length_penalty)
        return tokens[:, :top], scores[:, :top]

    # --- graph pieces ---------------------------------------------------------------------------
    def _start(self, features, max_length):
        """The stepper's state for `features`: steps t = 0 .. max_length feed START and up to max_length words."""
        return self.stepper.start(features, max_length + 1)

    def _step_log_probs(self, state, token, t, max_length):
        """log p(next | prefix) for every row after feeding `token` at step t, with the shared rules applied."""
        logits, state = self.stepper.step(state, token)
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        rule = tf.where(t >= max_length, self._only_end, self._banned)
        return log_probs + rule[None, :], state

    @staticmethod
    def _write(tokens, column, values):
        positions = tf.range(tf.shape(tokens)[1])[None, :]
        return tf.where(positions == column, values[:, None], tokens)

    def _greedy(self, features, max_length):
        # argmax of score + log p (not of log p): the very sums beam search ranks, so ties break alike
        return self._extend(self._start(features, max_length), max_length,
                            lambda t, candidates: tf.argmax(candidates, axis=-1, output_type=tf.int32))

    def _sample(self, features, samples_per_image: int, max_length, seed):
        state = {key: tf.repeat(value, samples_per_image, axis=0)
                 for key, value in self._start(features, max_length).items()}

        def draw(t, candidates):  # score + log p has the same softmax as log p: a draw from p
            return tf.random.stateless_categorical(candidates, 1, seed=tf.stack([seed, t]),
                                                   dtype=tf.int32)[:, 0]
        return self._extend(state, max_length, draw)

    def _extend(self, state, max_length, choose):
        """One caption per state row, each next word picked by `choose(t, score + log p) -> ids`."""
        n = self.stepper.rows(state)
        width = max_length + 2
        tokens = tf.concat([tf.fill([n, 1], START_ID), tf.fill([n, width - 1], PAD_ID)], axis=1)
        scores = tf.zeros([n], tf.float32)
        finished = tf.zeros([n], tf.bool)

        def body(t, state, tokens, scores, finished):
            log_probs, state = self._step_log_probs(state, tokens[:, t], t, max_length)
            log_probs = tf.where(finished[:, None], self._only_pad[None, :], log_probs)
            candidates = scores[:, None] + log_probs
            chosen = choose(t, candidates)
            scores = tf.gather(candidates, chosen, batch_dims=1)
            finished = finished | tf.equal(chosen, END_ID)
            return t + 1, state, self._write(tokens, t + 1, chosen), scores, finished

        def cond(t, state, tokens, scores, finished):
            return (t <= max_length) & ~tf.reduce_all(finished)

        _, _, tokens, scores, _ = tf.while_loop(cond, body, [tf.constant(0), state, tokens, scores, finished])
        return tokens, scores

    def _beam(self, features, beam_size: int, max_length, length_penalty):
        k, vocab, width = beam_size, self.vocab_size, max_length + 2
        n = tf.shape(features)[0]
        # row i*k + j is beam j of image i; the image side is computed once per image, then repeated
        state = {key: tf.repeat(value, k, axis=0) for key, value in self._start(features, max_length).items()}
        tokens = tf.concat([tf.fill([n * k, 1], START_ID), tf.fill([n * k, width - 1], PAD_ID)], axis=1)
        scores = tf.tile(tf.constant([[0.0] + [_NEG] * (k - 1)], tf.float32), [n, 1])  # only beam 0 starts
        finished = tf.zeros([n, k], tf.bool)
        lengths = tf.zeros([n, k], tf.int32)

        def normalise(score, length):  # x ** 0.0 is exactly 1.0, so no penalty changes nothing
            return score / tf.pow((5.0 + tf.cast(length, tf.float32)) / 6.0, length_penalty)

        def body(t, state, tokens, scores, finished, lengths):
            log_probs, state = self._step_log_probs(state, tokens[:, t], t, max_length)
            log_probs = tf.reshape(log_probs, [n, k, vocab])
            log_probs = tf.where(finished[:, :, None], self._only_pad[None, None, :], log_probs)
            candidates = scores[:, :, None] + log_probs                         # [n, k, V]
            new_lengths = lengths + tf.cast(~finished, tf.int32)                # same for every word
            ranked = normalise(candidates, new_lengths[:, :, None])
            _, flat = tf.math.top_k(tf.reshape(ranked, [n, k * vocab]), k=k)    # [n, k]
            parent, word = flat // vocab, flat % vocab
            scores = tf.gather(tf.reshape(candidates, [n, k * vocab]), flat, batch_dims=1)
            finished = tf.gather(finished, parent, batch_dims=1) | tf.equal(word, END_ID)
            lengths = tf.gather(new_lengths, parent, batch_dims=1)
            tokens = self._write(_follow(tokens, parent), t + 1, tf.reshape(word, [n * k]))
            state = {**state, **{key: _follow(state[key], parent) for key in self.stepper.carried}}
            return t + 1, state, tokens, scores, finished, lengths

        def cond(t, state, tokens, scores, finished, lengths):
            return (t <= max_length) & ~tf.reduce_all(finished)

        _, _, tokens, scores, _, lengths = tf.while_loop(
            cond, body, [tf.constant(0), state, tokens, scores, finished, lengths])
        # best first; top_k puts the lower index first among equals, as argmax picks it
        order = tf.math.top_k(normalise(scores, lengths), k=k).indices
        tokens = tf.gather(tf.reshape(tokens, [n, k, width]), order, batch_dims=1)
        return tokens, tf.gather(scores, order, batch_dims=1)


def _follow(rows: tf.Tensor, parent: tf.Tensor) -> tf.Tensor:
    """Beam rows [n*k, ...] reordered so that beam j of image i continues from beam parent[i, j]."""
    n, k = tf.shape(parent)[0], tf.shape(parent)[1]
    grouped = tf.reshape(rows, tf.concat([[n, k], tf.shape(rows)[1:]], axis=0))
    return tf.reshape(tf.gather(grouped, parent, batch_dims=1), tf.shape(rows))


def ids_to_words(ids: Sequence[int], tokens: Sequence[str]) -> List[str]:
    """The caption's words: after START, up to END or PAD; OOV kept as its token."""
    words = []
    for i in ids:
        i = int(i)
        if i == START_ID:
            continue
        if i in (END_ID, PAD_ID):
            break
        words.append(tokens[i])
    return words
