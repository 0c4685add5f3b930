"""Batched greedy and beam-search decoding: one tf.function per batch, never one predict per word.

Each decoding is a `tf.while_loop` over time steps inside one `tf.function`,
with every image (and every beam of every image) in one batch. A step runs the
decoder on the whole prefix generated so far and reads the last position's
logits: O(T^2) work, which for captions (T ~ 30) is cheap next to the Python
round trips it avoids, and it works for every decoder without a stepwise cell.

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

from captioner import text

PAD_ID, OOV_ID, START_ID, END_ID = (text.SPECIAL_TOKENS.index(t) for t in
                                    (text.PAD, text.OOV, text.START, text.END))
_NEG = -1e9  # "impossible" without -inf arithmetic (inf - inf = nan)


class SequenceDecoder:
    """Greedy and beam search over a decoder model (inputs {"features", "tokens"}, output logits)."""

    def __init__(self, model, vocab_size: int):
        self.model = model
        self.vocab_size = int(vocab_size)
        banned = np.zeros([self.vocab_size], np.float32)
        banned[[PAD_ID, OOV_ID, START_ID]] = _NEG
        self._banned = tf.constant(banned)
        self._only_end = tf.constant(np.where(np.arange(self.vocab_size) == END_ID, 0.0, _NEG).astype(np.float32))
        self._only_pad = tf.constant(np.where(np.arange(self.vocab_size) == PAD_ID, 0.0, _NEG).astype(np.float32))
        self._greedy_fn = tf.function(self._greedy, reduce_retracing=True)
        self._beam_fn = tf.function(self._beam, reduce_retracing=True)

    # --- public ---------------------------------------------------------------------------------
    def greedy(self, features: np.ndarray, max_length: int) -> Tuple[np.ndarray, np.ndarray]:
        """Token ids [N, max_length+2] (START first) and total log-probabilities [N]."""
        tokens, scores = self._greedy_fn(tf.convert_to_tensor(features, tf.float32),
                                         tf.constant(int(max_length), tf.int32))
        return tokens.numpy(), scores.numpy()

    def beam(self, features: np.ndarray, beam_size: int, max_length: int,
             length_penalty: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
        """The best beam per image: token ids [N, max_length+2] and total log-probabilities [N]."""
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        tokens, scores = self._beam_fn(tf.convert_to_tensor(features, tf.float32), int(beam_size),
                                       tf.constant(int(max_length), tf.int32),
                                       tf.constant(float(length_penalty), tf.float32))
        return tokens.numpy(), scores.numpy()

    def decode(self, features: np.ndarray, beam_size: int = 1, max_length: int = 32,
               length_penalty: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
        if beam_size == 1:
            return self.greedy(features, max_length)
        return self.beam(features, beam_size, max_length, length_penalty)

    # --- graph pieces ---------------------------------------------------------------------------
    def _step_log_probs(self, features, tokens, t, max_length: int):
        """log p(next | prefix) at step t for every row, with the shared generation rules applied."""
        logits = self.model({"features": features, "tokens": tokens[:, :t + 1]}, training=False)[:, t, :]
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        rule = tf.where(t >= max_length, self._only_end, self._banned)
        return log_probs + rule[None, :]

    @staticmethod
    def _write(tokens, column, values):
        positions = tf.range(tf.shape(tokens)[1])[None, :]
        return tf.where(positions == column, values[:, None], tokens)

    def _greedy(self, features, max_length):
        n = tf.shape(features)[0]
        width = max_length + 2
        tokens = tf.concat([tf.fill([n, 1], START_ID), tf.fill([n, width - 1], PAD_ID)], axis=1)
        scores = tf.zeros([n], tf.float32)
        finished = tf.zeros([n], tf.bool)

        def body(t, tokens, scores, finished):
            log_probs = self._step_log_probs(features, tokens, t, max_length)
            log_probs = tf.where(finished[:, None], self._only_pad[None, :], log_probs)
            # argmax of score + log p (not of log p): the very sums beam search ranks, so ties break alike
            candidates = scores[:, None] + log_probs
            chosen = tf.argmax(candidates, axis=-1, output_type=tf.int32)
            scores = tf.gather(candidates, chosen, batch_dims=1)
            finished = finished | tf.equal(chosen, END_ID)
            return t + 1, self._write(tokens, t + 1, chosen), scores, finished

        def cond(t, tokens, scores, finished):
            return (t <= max_length) & ~tf.reduce_all(finished)

        _, tokens, scores, _ = tf.while_loop(cond, body, [tf.constant(0), tokens, scores, finished])
        return tokens, scores

    def _beam(self, features, beam_size: int, max_length, length_penalty):
        k, vocab, width = beam_size, self.vocab_size, max_length + 2
        n = tf.shape(features)[0]
        features = tf.repeat(features, k, axis=0)  # row i*k + j is beam j of image i
        tokens = tf.concat([tf.fill([n * k, 1], START_ID), tf.fill([n * k, width - 1], PAD_ID)], axis=1)
        scores = tf.tile(tf.constant([[0.0] + [_NEG] * (k - 1)], tf.float32), [n, 1])  # only beam 0 starts
        finished = tf.zeros([n, k], tf.bool)
        lengths = tf.zeros([n, k], tf.int32)

        def normalise(score, length):  # x ** 0.0 is exactly 1.0, so no penalty changes nothing
            return score / tf.pow((5.0 + tf.cast(length, tf.float32)) / 6.0, length_penalty)

        def body(t, tokens, scores, finished, lengths):
            log_probs = self._step_log_probs(features, tokens, t, max_length)
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
            history = tf.gather(tf.reshape(tokens, [n, k, width]), parent, batch_dims=1)
            tokens = self._write(tf.reshape(history, [n * k, width]), t + 1, tf.reshape(word, [n * k]))
            return t + 1, tokens, scores, finished, lengths

        def cond(t, tokens, scores, finished, lengths):
            return (t <= max_length) & ~tf.reduce_all(finished)

        _, tokens, scores, _, lengths = tf.while_loop(
            cond, body, [tf.constant(0), tokens, scores, finished, lengths])
        best = tf.argmax(normalise(scores, lengths), axis=-1, output_type=tf.int32)
        tokens = tf.gather(tf.reshape(tokens, [n, k, width]), best, batch_dims=1)
        return tokens, tf.gather(scores, best, batch_dims=1)


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
