"""The caption decoder architectures, chosen by `train.decoder`: merge | init_lstm | attention | transformer.

Every decoder is a plain Keras functional model with the same signature, so
training, export and decoding never need to know which one they hold:

    inputs  {"features": float32 [B, *feature_shape], "tokens": int32 [B, T]}
    output  logits [B, T, vocab]: position t predicts token t+1 (teacher forcing)

T is left open (None): training feeds `<start> w1..wn` padded to max_length+1,
decoding feeds the growing prefix. Captions are right-padded with PAD (id 0)
and every decoder is causal (an LSTM reads left to right, the transformer's
self-attention has a causal mask), so the outputs at
real positions never depend on the padding; the padding is masked in the loss
(trainer/training.py's CaptionLoss) rather than with Keras masks, which keeps the loss's
normalisation explicit (and the same for any number of replicas) and lets the
LSTM take the cuDNN path on GPUs. Outputs are logits: the softmax lives in the
loss and in decoding (log_softmax), where it is numerically safe. The "logits"
layer always computes in float32, so under a mixed precision policy
(keras.mixed_precision.set_global_policy("mixed_bfloat16")) the logits and the
loss stay float32; under the default float32 policy that changes nothing.

Only built-in keras.layers (and, in transformer.py, keras.ops) are used, so `decoder.keras` loads with
`keras.saving.load_model(..., safe_mode=True)` without importing this project.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import keras
from keras import layers

from captioner.decoder import DECODERS, transformer

_LAYOUT_DIM = 8  # numbers per image position in the attention decoder's initial state


def _image_vector(features: keras.KerasTensor) -> keras.KerasTensor:
    """One vector per image: the pooled features as they are, a spatial map averaged over its positions."""
    if len(features.shape) == 2:
        return features
    if len(features.shape) == 4:
        return layers.GlobalAveragePooling2D(name="average_positions")(features)
    raise ValueError(f"features of shape {features.shape[1:]} are neither pooled [C] nor spatial [H, W, C]")


def _image_positions(features: keras.KerasTensor) -> keras.KerasTensor:
    """The positions attention looks at: HxW for a spatial map, one position for a pooled vector."""
    shape = features.shape[1:]
    if len(shape) == 1:
        return layers.Reshape((1, shape[0]), name="one_position")(features)
    if len(shape) == 3:
        return layers.Reshape((shape[0] * shape[1], shape[2]), name="positions")(features)
    raise ValueError(f"features of shape {shape} are neither pooled [C] nor spatial [H, W, C]")


def _caption_embedding(tokens, vocab_size: int, embedding_dim: int, dropout: float):
    x = layers.Embedding(vocab_size, embedding_dim, name="word_embedding")(tokens)
    return layers.Dropout(dropout, name="embedding_dropout")(x)


def _logits(x, vocab_size: int):
    """The output layer of every decoder; float32 even under a mixed precision policy (see above)."""
    return layers.Dense(vocab_size, dtype="float32", name="logits")(x)


def _merge(features, tokens, vocab_size, embedding_dim, units, dropout):
    """The classic tutorial's merge model, trained on whole captions (the LSTM returns sequences)."""
    image = layers.Dense(units, activation="relu", name="image_projection")(_image_vector(features))
    image = layers.Dropout(dropout, name="image_dropout")(image)
    image = layers.Reshape((1, units), name="image_per_step")(image)  # broadcast over time by Add
    words = _caption_embedding(tokens, vocab_size, embedding_dim, dropout)
    words = layers.LSTM(units, return_sequences=True, name="lstm")(words)
    x = layers.Add(name="merge")([words, image])
    x = layers.Dense(units, activation="relu", name="hidden")(x)
    return _logits(x, vocab_size)


def _init_lstm(features, tokens, vocab_size, embedding_dim, units, dropout):
    """Show-and-Tell style: the image sets the LSTM's initial state, the words drive it."""
    image = layers.Dropout(dropout, name="image_dropout")(_image_vector(features))
    h0 = layers.Dense(units, activation="tanh", name="initial_h")(image)
    c0 = layers.Dense(units, activation="tanh", name="initial_c")(image)
    words = _caption_embedding(tokens, vocab_size, embedding_dim, dropout)
    x = layers.LSTM(units, return_sequences=True, name="lstm")(words, initial_state=[h0, c0])
    x = layers.Dropout(dropout, name="lstm_dropout")(x)
    return _logits(x, vocab_size)


def _attention(features, tokens, vocab_size, embedding_dim, units, dropout):
    """An LSTM whose every output attends (multi-head) over the image positions, Luong style.

    The LSTM state starts from the mean of the projected positions and their layout; its outputs
    query the HxW map (one position for pooled features), the context is added
    back with a residual and layer norm, then a small MLP predicts the next word.
    """
    positions = _image_positions(features)
    memory = layers.Dense(units, name="position_projection")(positions)
    memory = layers.LayerNormalization(name="memory_norm")(memory)
    memory = layers.Dropout(dropout, name="memory_dropout")(memory)
    # Attention over positions is blind to where they are, so the initial state also sees the layout:
    # every position projected to a few numbers, flattened in order ("a red circle on the left").
    layout = layers.Flatten(name="layout")(layers.Dense(_LAYOUT_DIM, name="layout_projection")(positions))
    summary = layers.Concatenate(name="image_summary")(
        [layers.GlobalAveragePooling1D(name="mean_position")(memory), layout])
    h0 = layers.Dense(units, activation="tanh", name="initial_h")(summary)
    c0 = layers.Dense(units, activation="tanh", name="initial_c")(summary)
    words = _caption_embedding(tokens, vocab_size, embedding_dim, dropout)
    queries = layers.LSTM(units, return_sequences=True, name="lstm")(words, initial_state=[h0, c0])
    heads = next(h for h in (8, 4, 2, 1) if units % h == 0 and units // h >= 8) if units >= 8 else 1
    context = layers.MultiHeadAttention(num_heads=heads, key_dim=max(1, units // heads), dropout=dropout,
                                        name="attention")(query=queries, value=memory, key=memory)
    x = layers.LayerNormalization(name="attention_norm")(layers.Add(name="residual")([queries, context]))
    x = layers.Dropout(dropout, name="attention_dropout")(x)
    x = layers.Dense(units, activation="relu", name="hidden")(x)
    return _logits(x, vocab_size)


def _transformer(features, tokens, vocab_size, embedding_dim, units, dropout, blocks, heads):
    """Transformer blocks over the caption (causal) and the image positions: see transformer.py."""
    x = transformer.decode(_image_positions(features), tokens, vocab_size, embedding_dim, units, dropout,
                           blocks, heads)
    return _logits(x, vocab_size)


_BUILDERS = {"merge": _merge, "init_lstm": _init_lstm, "attention": _attention, "transformer": _transformer}
assert tuple(_BUILDERS) == DECODERS, "every decoder config.TrainConfig accepts has a builder here"


def build_decoder(name: str, feature_shape: Sequence[int], vocab_size: int, embedding_dim: int,
                  units: int, dropout: float = 0.0, transformer_layers: int = 2,
                  transformer_heads: int = 4) -> keras.Model:
    """A decoder by name; `feature_shape` is the per-image shape of the features it consumes.

    `transformer_layers` and `transformer_heads` shape the transformer; the other decoders ignore them.
    """
    if name not in _BUILDERS:
        raise ValueError(f"train.decoder={name!r} is not one of {', '.join(DECODERS)}")
    builder = _BUILDERS[name]
    if name == "transformer":
        if int(units) % int(transformer_heads):
            raise ValueError(f"units={units} is not a multiple of transformer_heads={transformer_heads}")
        builder = functools.partial(builder, blocks=int(transformer_layers), heads=int(transformer_heads))
    features = keras.Input(shape=tuple(int(d) for d in feature_shape), dtype="float32", name="features")
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    logits = builder(features, tokens, int(vocab_size), int(embedding_dim), int(units), float(dropout))
    return keras.Model({"features": features, "tokens": tokens}, logits, name=f"{name}_decoder")


def build_from_config(train_cfg, feature_shape: Sequence[int], vocab_size: int) -> keras.Model:
    """The decoder `train_cfg` (a config.TrainConfig) describes."""
    return build_decoder(train_cfg.decoder, feature_shape, vocab_size, train_cfg.embedding_dim, train_cfg.units,
                         train_cfg.dropout, train_cfg.transformer_layers, train_cfg.transformer_heads)


def parameter_count(model: keras.Model) -> int:
    return int(sum(math.prod(v.shape) for v in model.trainable_weights))
