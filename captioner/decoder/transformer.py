"""The Transformer caption decoder (`train.decoder: transformer`), from built-in Keras layers and keras.ops.

    words     word_embedding (embedding_dim), projected to `units` by embedding_projection when the two
              differ, scaled by sqrt(units), plus sinusoidal positions of the tokens (computed, not learned,
              so any caption length works), then dropout
    memory    the image positions (HxW of a spatial map, one for pooled features) projected to `units`,
              plus a learned embedding of each position's place in the map (attention is blind to layout
              otherwise), layer-normalised, then dropout
    blocks    `blocks` times, pre-norm with residuals: causal self-attention over the caption tokens,
              attention over the image memory, a feed-forward layer (4 * units, relu); dropout after each
    output    a final layer norm (architectures.py adds the float32 "logits" Dense every decoder ends with)

Every layer is named (`part(block, name)` for a block's) so `stepwise.StepwiseDecoder` can run them
one token at a time with cached keys and values. The positions come from keras.ops on the inputs
(cumsum of ones), so the saved model holds no Lambda layer and loads with safe_mode=True.
"""
from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

FEED_FORWARD = 4  # the feed-forward layer's width, in multiples of units


def part(block: int, name: str) -> str:
    """The name of a block's layer: block0_self_attention, block1_cross_norm, ..."""
    return f"block{block}_{name}"


def block_count(model: keras.Model) -> int:
    """How many blocks a transformer decoder model has."""
    names = {layer.name for layer in model.layers}
    blocks = 0
    while part(blocks, "self_attention") in names:
        blocks += 1
    return blocks


def sinusoid(positions, units: int):
    """Sinusoidal encodings [..., units] (float32) of float32 positions [...]: sines, then cosines."""
    frequencies = np.exp(-math.log(10000.0) * 2.0 * np.arange((units + 1) // 2) / units).astype("float32")
    angles = ops.expand_dims(positions, -1) * frequencies
    return ops.concatenate([ops.sin(angles), ops.cos(angles[..., :units // 2])], axis=-1)


def places(x):
    """0, 1, 2, ... along axis 1 of `x` [B, T, ...] as int32 [B, T], for any T."""
    ones = ops.ones_like(x if len(x.shape) == 2 else x[..., 0], dtype="int32")
    return ops.cumsum(ones, axis=1) - 1


def decode(positions, tokens, vocab_size: int, embedding_dim: int, units: int, dropout: float,
           blocks: int, heads: int):
    """The last hidden states [B, T, units] for image positions [B, S, C] and tokens [B, T].

    architectures.py puts the "logits" layer on top, as on every decoder."""
    memory = layers.Dense(units, name="position_projection")(positions)
    place = layers.Embedding(positions.shape[1], units, name="image_position_embedding")(places(positions))
    memory = layers.LayerNormalization(name="memory_norm")(layers.Add(name="locate_positions")([memory, place]))
    memory = layers.Dropout(dropout, name="memory_dropout")(memory)

    x = layers.Embedding(vocab_size, embedding_dim, name="word_embedding")(tokens)
    if embedding_dim != units:
        x = layers.Dense(units, use_bias=False, name="embedding_projection")(x)
    x = x * math.sqrt(units)  # as in Vaswani et al.: words on the scale of the encodings
    x = layers.Add(name="add_positions")([x, sinusoid(ops.cast(places(tokens), "float32"), units)])
    x = layers.Dropout(dropout, name="embedding_dropout")(x)
    for block in range(blocks):
        x = _block(x, memory, block, units, heads, dropout)
    return layers.LayerNormalization(name="final_norm")(x)


def _block(x, memory, block: int, units: int, heads: int, dropout: float):
    """Causal self-attention, attention over the image, feed-forward: each pre-norm, with dropout and a residual."""
    def sublayer(x, name, apply):
        y = apply(layers.LayerNormalization(name=part(block, f"{name}_norm"))(x))
        y = layers.Dropout(dropout, name=part(block, f"{name}_dropout"))(y)
        return layers.Add(name=part(block, f"{name}_residual"))([x, y])

    def attention(name):
        return layers.MultiHeadAttention(heads, units // heads, dropout=dropout, name=part(block, name))

    def feed_forward(h):
        h = layers.Dense(FEED_FORWARD * units, activation="relu", name=part(block, "ffn_hidden"))(h)
        return layers.Dense(units, name=part(block, "ffn_output"))(h)

    x = sublayer(x, "self", lambda h: attention("self_attention")(h, h, use_causal_mask=True))
    x = sublayer(x, "cross", lambda h: attention("cross_attention")(query=h, value=memory, key=memory))
    return sublayer(x, "ffn", feed_forward)
