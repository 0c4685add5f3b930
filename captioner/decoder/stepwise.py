"""The decoders' own layers run one token at a time, carrying the LSTM state.

Training runs a decoder model on whole captions; decoding needs one token at a
time. Re-running the whole model on the growing prefix costs O(T^2) and, for
the attention decoder, re-projects every image position at every step. Here
the image side (projections, initial state, attention keys and values) is
computed once per image in `start`, and `step` runs only the embedding, one
LSTM cell step and the output head for the newest token: O(T) work per caption.

Every layer used is the trained model's own (looked up by the names
`architectures.py` gives them), so there is no second copy of any weight, and
`tests/test_decoder.py` checks that stepping reproduces the whole-sequence
logits of every decoder. Dropout layers are skipped: decoding is inference.

State is a dict of tensors [rows, ...]: "h" and "c" change every step (beam
search reorders them), everything else is fixed per image.
"""
from __future__ import annotations

from typing import Dict, Tuple

import keras
import tensorflow as tf

from captioner.decoder import architectures

State = Dict[str, tf.Tensor]
CARRIED = ("h", "c")  # the per-step parts of a state; the rest stays fixed per image


def decoder_kind(model: keras.Model) -> str:
    """merge | init_lstm | attention, from the model's name (`build_decoder` names it `<kind>_decoder`)."""
    kind = model.name.removesuffix("_decoder")
    if kind not in architectures.DECODERS:
        raise ValueError(f"decoder model {model.name!r} was not built by captioner.decoder.architectures "
                         f"(expected one of {', '.join(k + '_decoder' for k in architectures.DECODERS)})")
    return kind


class StepwiseDecoder:
    """`start(features) -> state`; `step(state, token) -> (logits, state)`, for any of the three decoders."""

    def __init__(self, model: keras.Model):
        self.kind = decoder_kind(model)
        self._layer = model.get_layer
        self._cell = model.get_layer("lstm").cell
        self._units = int(self._cell.units)

    # --- image side, once per image ---------------------------------------------------------------
    def start(self, features: tf.Tensor) -> State:
        features = tf.convert_to_tensor(features, tf.float32)
        if self.kind == "attention":
            return self._start_attention(features)
        vector = self._image_vector(features)
        if self.kind == "merge":
            zeros = tf.zeros([tf.shape(features)[0], self._units], tf.float32)
            return {"h": zeros, "c": zeros, "image": self._layer("image_projection")(vector)}
        return {"h": self._layer("initial_h")(vector), "c": self._layer("initial_c")(vector)}

    def _image_vector(self, features):
        return self._layer("average_positions")(features) if features.shape.rank == 4 else features

    def _start_attention(self, features):
        rows = tf.shape(features)[0]
        positions = tf.reshape(features, [rows, -1, features.shape[-1]])
        memory = self._layer("memory_norm")(self._layer("position_projection")(positions))
        layout = tf.reshape(self._layer("layout_projection")(positions), [rows, -1])
        summary = tf.concat([tf.reduce_mean(memory, axis=1), layout], axis=-1)
        attention = self._layer("attention")
        return {"h": self._layer("initial_h")(summary), "c": self._layer("initial_c")(summary),
                "keys": attention.key_dense(memory), "values": attention.value_dense(memory)}

    # --- one token --------------------------------------------------------------------------------
    def step(self, state: State, token: tf.Tensor) -> Tuple[tf.Tensor, State]:
        """Logits [rows, vocab] for the token after `token` [rows], and the advanced state."""
        words = self._layer("word_embedding")(token)
        h, (_, c) = self._cell(words, [state["h"], state["c"]], training=False)
        if self.kind == "merge":
            x = self._layer("hidden")(self._layer("merge")([h, state["image"]]))
        elif self.kind == "attention":
            context = self._attend(h, state["keys"], state["values"])
            x = self._layer("attention_norm")(self._layer("residual")([h, context]))
            x = self._layer("hidden")(x)
        else:
            x = h
        return self._layer("logits")(x), {**state, "h": h, "c": c}

    def _attend(self, query, keys, values):
        """MultiHeadAttention for one query position over precomputed keys and values [rows, S, heads, dim]."""
        attention = self._layer("attention")
        q = attention.query_dense(query[:, None, :])[:, 0]                         # [rows, heads, dim]
        q = q * tf.math.rsqrt(tf.cast(tf.shape(q)[-1], q.dtype))
        weights = tf.nn.softmax(tf.einsum("bnh,bsnh->bns", q, keys), axis=-1)  # over positions
        context = tf.einsum("bns,bsnh->bnh", weights, values)
        return attention.output_dense(context[:, None])[:, 0]                     # [rows, units]
