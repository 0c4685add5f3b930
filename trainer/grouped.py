"""Teacher forcing on captions grouped by image: the image side runs once per image, not once per caption.

A training batch holds B rows, each an image with C of its captions (tokens [B, C, T]; an image with fewer
captions has all-PAD rows, which the loss masks). The decoder model (captioner/decoder/architectures.py)
takes one caption per image row, so feeding it the batch as B*C captions would project every image's HxW
map, and, for the attention decoders, compute their attention keys and values over it, C times. Here the
model's own layers (looked up by the names architectures.py gives them, as stepwise.py does) run with the
image side computed once per image:

    transformer  the memory (position projection, place embedding, norm) per image; self-attention over each
                 caption; attention over the image with the C captions' tokens as one query sequence per image
                 [B, C*T], so the image's keys and values are projected once
    attention    memory, layout and initial state per image; the LSTM over each caption from its image's
                 state; attention as above
    merge, init_lstm  their image side is one small Dense on a vector: the features are repeated per caption
                 and the model itself runs (nothing worth sharing)

With `encoder` (fine-tuning, trainer/finetune.py), the rows carry images [B, h, w, 3] (float pixels 0..255)
and the CNN also runs once per image. Dropout is applied by the same layers at the same places, so training
optimises the same objective; `tests/test_grouped.py` checks the logits equal the decoder model's on the
captions one by one.
"""
from __future__ import annotations

import math
from typing import Optional

import keras
import tensorflow as tf

from captioner.decoder import stepwise, transformer
from captioner.decoder.transformer import part


class GroupedDecoder(keras.Model):
    """{"features" [B, ...] or "images" [B, h, w, 3], "tokens" [B, C, T]} -> logits [B, C, T, vocab]."""

    def __init__(self, decoder: keras.Model, encoder: Optional[keras.Model] = None, pooled: bool = False,
                 **kwargs):
        super().__init__(name="grouped_" + decoder.name, **kwargs)
        self.decoder, self.encoder, self.pooled = decoder, encoder, bool(pooled)
        self.kind = stepwise.decoder_kind(decoder)
        self._layer = decoder.get_layer
        self._feature_shape = [int(d) for d in decoder.input["features"].shape[1:]]
        self.built = True  # its layers are the decoder's (and encoder's), built already: weights load before a call
        if self.kind == "transformer":
            self._blocks = transformer.block_count(decoder)
            self._units = int(decoder.get_layer("position_projection").units)
            self._projected = "embedding_projection" in {layer.name for layer in decoder.layers}

    def call(self, inputs, training=False):
        tokens = tf.convert_to_tensor(inputs["tokens"])
        features = self.features_of(inputs["images"], training) if self.encoder is not None else inputs["features"]
        features = tf.reshape(features, [-1, *self._feature_shape])  # static again where tracing relaxed it
        if self.kind == "transformer":
            return self._transformer(features, tokens, training)
        if self.kind == "attention":
            return self._attention(features, tokens, training)
        rows, per_row, steps = _shape(tokens)
        logits = self.decoder({"features": tf.repeat(features, per_row, axis=0),
                               "tokens": tf.reshape(tokens, [rows * per_row, steps])}, training=training)
        return tf.reshape(logits, [rows, per_row, steps, -1])

    def features_of(self, images, training=False):
        """The encoder's map of float pixels [B, h, w, 3] (or its mean over positions when the decoder reads pooled)."""
        features = self.encoder(tf.cast(images, tf.float32), training=training)
        if self.pooled and len(features.shape) == 4:
            features = tf.reduce_mean(features, axis=[1, 2])
        return tf.cast(features, tf.float32)

    def _words(self, tokens, training):
        """The embedded words of every caption, [B*C, T, embedding], after the embedding's dropout."""
        rows, per_row, steps = _shape(tokens)
        return self._layer("embedding_dropout")(self._layer("word_embedding")(
            tf.reshape(tokens, [rows * per_row, steps])), training=training)

    def _memory(self, features, training, with_places: bool):
        """The image positions projected and normalised [B, S, units] (before the memory dropout: returned too)."""
        rows = tf.shape(features)[0]
        positions = tf.reshape(features, [rows, -1, features.shape[-1]])
        memory = self._layer("position_projection")(positions)
        if with_places:
            place = self._layer("image_position_embedding")(transformer.places(positions))
            memory = self._layer("locate_positions")([memory, place])
        memory = self._layer("memory_norm")(memory)
        return positions, self._layer("memory_dropout")(memory, training=training)

    def _attend_image(self, attention, hidden, memory, per_row, training):
        """`attention` over the image for every token of the row's C captions at once: [B*C, T, units]."""
        steps, units = tf.shape(hidden)[1], hidden.shape[-1]
        queries = tf.reshape(hidden, [-1, per_row * steps, units])
        context = attention(query=queries, value=memory, key=memory, training=training)
        return tf.reshape(context, [-1, steps, units])

    def _attention(self, features, tokens, training):
        rows, per_row, steps = _shape(tokens)
        positions, memory = self._memory(features, training, with_places=False)
        layout = self._layer("layout")(self._layer("layout_projection")(positions))
        summary = self._layer("image_summary")([self._layer("mean_position")(memory), layout])
        state = [tf.repeat(self._layer(name)(summary), per_row, axis=0) for name in ("initial_h", "initial_c")]
        queries = self._layer("lstm")(self._words(tokens, training), initial_state=state, training=training)
        context = self._attend_image(self._layer("attention"), queries, memory, per_row, training)
        x = self._layer("attention_norm")(self._layer("residual")([queries, context]))
        x = self._layer("hidden")(self._layer("attention_dropout")(x, training=training))
        return tf.reshape(self._layer("logits")(x), [rows, per_row, steps, -1])

    def _transformer(self, features, tokens, training):
        rows, per_row, steps = _shape(tokens)
        _, memory = self._memory(features, training, with_places=True)
        flat = tf.reshape(tokens, [rows * per_row, steps])
        x = self._layer("word_embedding")(flat)
        if self._projected:
            x = self._layer("embedding_projection")(x)
        where = transformer.sinusoid(tf.cast(transformer.places(flat), tf.float32), self._units)
        x = self._layer("add_positions")([x * math.sqrt(self._units), where])
        x = self._layer("embedding_dropout")(x, training=training)
        for block in range(self._blocks):
            x = self._sublayer(x, block, "self", training, lambda h: self._layer(part(block, "self_attention"))(
                h, h, use_causal_mask=True, training=training))
            x = self._sublayer(x, block, "cross", training, lambda h: self._attend_image(
                self._layer(part(block, "cross_attention")), h, memory, per_row, training))
            x = self._sublayer(x, block, "ffn", training, lambda h: self._layer(part(block, "ffn_output"))(
                self._layer(part(block, "ffn_hidden"))(h)))
        x = self._layer("final_norm")(x)
        return tf.reshape(self._layer("logits")(x), [rows, per_row, steps, -1])

    def _sublayer(self, x, block: int, name: str, training, apply):
        """Pre-norm, `apply`, dropout, residual: one of a transformer block's three parts."""
        y = apply(self._layer(part(block, f"{name}_norm"))(x))
        y = self._layer(part(block, f"{name}_dropout"))(y, training=training)
        return self._layer(part(block, f"{name}_residual"))([x, y])


def _shape(tokens):
    """(rows B, captions per row C, steps T) of grouped tokens [B, C, T]."""
    shape = tf.shape(tokens)
    return shape[0], shape[1], shape[2]
