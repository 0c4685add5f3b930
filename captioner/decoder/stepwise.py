"""The decoders' own layers run one token at a time, carrying the LSTM state or the transformer's cache.

Training runs a decoder model on whole captions; decoding needs one token at a
time. Re-running the whole model on the growing prefix costs O(T^2) and, for
the attention decoder, re-projects every image position at every step. Here
the image side (projections, initial state, attention keys and values) is
computed once per image in `start`, and `step` runs only the embedding, one
LSTM cell step and the output head for the newest token: O(T) steps per caption.

The transformer carries, per block, the self-attention keys and values of the
tokens so far in fixed-size caches [rows, max_steps, heads, dim] that `start`
allocates (zeros) and each step writes at its own position ("step", one per
row) and attends to up to it, masked beyond; the keys and values of its
attention over the image are computed once, in `start`. A step runs the newest
token through every block: no prefix is ever run again.

Every layer used is the trained model's own (looked up by the names
`architectures.py` gives them), so there is no second copy of any weight, and
`tests/test_decoder.py` checks that stepping reproduces the whole-sequence
logits of every decoder. Dropout layers are skipped: decoding is inference.

State is a dict of tensors [rows, ...]: the keys in `carried` change every step
(beam search reorders them: "h" and "c" of the LSTMs, "step" and the caches of
the transformer), everything else is fixed per image.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import keras
import tensorflow as tf

from captioner.decoder import architectures, transformer
from captioner.decoder.transformer import part

State = Dict[str, tf.Tensor]


def decoder_kind(model: keras.Model) -> str:
    """One of DECODERS, from the model's name (`build_decoder` names it `<kind>_decoder`)."""
    kind = model.name.removesuffix("_decoder")
    if kind not in architectures.DECODERS:
        raise ValueError(f"decoder model {model.name!r} was not built by captioner.decoder.architectures "
                         f"(expected one of {', '.join(k + '_decoder' for k in architectures.DECODERS)})")
    return kind


class StepwiseDecoder:
    """`start(features, max_steps) -> state`; `step(state, token) -> (logits, state)`, for every decoder."""

    def __init__(self, model: keras.Model):
        self.kind = decoder_kind(model)
        self._layer = model.get_layer
        if self.kind == "transformer":
            self._blocks = transformer.block_count(model)
            self._units = int(model.get_layer("position_projection").units)
            self._projected = "embedding_projection" in {layer.name for layer in model.layers}
            # the per-step parts of a state (beam search reorders them); the rest stays fixed per image
            self.carried = ("step",) + tuple(f"self_{kv}_{block}" for block in range(self._blocks)
                                             for kv in ("keys", "values"))
        else:
            self._cell = model.get_layer("lstm").cell
            self._units = int(self._cell.units)
            self.carried = ("h", "c")

    def rows(self, state: State) -> tf.Tensor:
        """How many rows (captions being decoded) `state` holds."""
        return tf.shape(state[self.carried[0]])[0]

    # --- image side, once per image ---------------------------------------------------------------
    def start(self, features: tf.Tensor, max_steps) -> State:
        """The state before the first token. `max_steps` (an int or a scalar tensor) is how many steps the
        transformer's caches hold: at most that many may follow (the LSTM decoders ignore it)."""
        features = tf.convert_to_tensor(features, tf.float32)
        if self.kind == "transformer":
            return self._start_transformer(features, max_steps)
        if self.kind == "attention":
            return self._start_attention(features)
        vector = self._image_vector(features)
        if self.kind == "merge":
            zeros = tf.zeros([tf.shape(features)[0], self._units], tf.float32)
            return {"h": zeros, "c": zeros, "image": self._layer("image_projection")(vector)}
        return {"h": self._layer("initial_h")(vector), "c": self._layer("initial_c")(vector)}

    def _start_transformer(self, features, max_steps):
        rows = tf.shape(features)[0]
        positions = tf.reshape(features, [rows, -1, features.shape[-1]])
        places = self._layer("image_position_embedding")(tf.range(tf.shape(positions)[1])[None])
        memory = self._layer("memory_norm")(self._layer("position_projection")(positions) + places)
        state = {"step": tf.zeros([rows], tf.int32)}
        for block in range(self._blocks):
            cross = self._layer(part(block, "cross_attention"))
            state[f"cross_keys_{block}"] = cross.key_dense(memory)
            state[f"cross_values_{block}"] = cross.value_dense(memory)
            attention = self._layer(part(block, "self_attention"))
            cache = tf.zeros(tf.stack([rows, max_steps, attention.num_heads, attention.key_dim]),
                             attention.compute_dtype)
            state[f"self_keys_{block}"] = state[f"self_values_{block}"] = cache
        return state

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
        if self.kind == "transformer":
            return self._step_transformer(state, token)
        words = self._layer("word_embedding")(token)
        h, (_, c) = self._cell(words, [state["h"], state["c"]], training=False)
        if self.kind == "merge":
            x = self._layer("hidden")(self._layer("merge")([h, state["image"]]))
        elif self.kind == "attention":
            context = self._attend(self._layer("attention"), h, state["keys"], state["values"])
            x = self._layer("attention_norm")(self._layer("residual")([h, context]))
            x = self._layer("hidden")(x)
        else:
            x = h
        return self._layer("logits")(x), {**state, "h": h, "c": c}

    def _step_transformer(self, state, token):
        step = state["step"]                                                        # [rows]
        x = self._layer("word_embedding")(token)
        if self._projected:
            x = self._layer("embedding_projection")(x)
        x = self._layer("add_positions")([x * math.sqrt(self._units),
                                          transformer.sinusoid(tf.cast(step, tf.float32), self._units)])
        slots = tf.range(tf.shape(state["self_keys_0"])[1])[None, :]               # [1, max_steps]
        visible = slots <= step[:, None]                                           # this token and those before
        written = tf.equal(slots, step[:, None])[:, :, None, None]                # where this token's go
        new = {"step": step + 1}
        for block in range(self._blocks):
            attention = self._layer(part(block, "self_attention"))
            h = self._layer(part(block, "self_norm"))(x)[:, None]                  # [rows, 1, units]
            for kv, dense in (("keys", attention.key_dense), ("values", attention.value_dense)):
                new[f"self_{kv}_{block}"] = tf.where(written, dense(h), state[f"self_{kv}_{block}"])
            x = x + self._attend(attention, h[:, 0], new[f"self_keys_{block}"], new[f"self_values_{block}"],
                                 visible)
            h = self._layer(part(block, "cross_norm"))(x)
            x = x + self._attend(self._layer(part(block, "cross_attention")), h, state[f"cross_keys_{block}"],
                                 state[f"cross_values_{block}"])
            h = self._layer(part(block, "ffn_hidden"))(self._layer(part(block, "ffn_norm"))(x))
            x = x + self._layer(part(block, "ffn_output"))(h)
        return self._layer("logits")(self._layer("final_norm")(x)), {**state, **new}

    @staticmethod
    def _attend(attention, query, keys, values, visible=None):
        """`attention` (a MultiHeadAttention) for one query [rows, units] over projected keys and values
        [rows, S, heads, dim], only at the positions `visible` [rows, S] (all when None)."""
        q = attention.query_dense(query[:, None, :])[:, 0]                         # [rows, heads, dim]
        q = q * tf.math.rsqrt(tf.cast(tf.shape(q)[-1], q.dtype))
        scores = tf.einsum("bnh,bsnh->bns", q, keys)
        if visible is not None:
            scores = tf.where(visible[:, None, :], scores, tf.cast(-1e9, scores.dtype))
        weights = tf.nn.softmax(scores, axis=-1)                                   # over positions
        context = tf.einsum("bns,bsnh->bnh", weights, values)
        return attention.output_dense(context[:, None])[:, 0]                     # [rows, units]
