"""Captions grouped by image: the image side once per image computes what the decoder computes per caption."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from captioner.decoder import DECODERS, architectures
from captioner.text import PAD_ID
from trainer import image_inputs, training
from trainer.grouped import GroupedDecoder


def _batch(shape, rows=4, per_row=3, steps=7, vocab=20, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocab, (rows, per_row, steps)).astype(np.int32)
    tokens[0, 2] = PAD_ID  # an image with fewer captions than a row holds
    tokens[1, :, 5:] = PAD_ID
    return rng.random((rows, *shape), np.float32), tokens


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("shape", [[3, 3, 12], [12]])
def test_grouped_logits_equal_the_decoder_on_each_caption(decoder, shape):
    keras.utils.set_random_seed(0)
    model = architectures.build_decoder(decoder, shape, vocab_size=20, embedding_dim=8, units=16, dropout=0.3,
                                        transformer_layers=2, transformer_heads=2)
    features, tokens = _batch(shape)
    rows, per_row, steps = tokens.shape
    grouped = GroupedDecoder(model)({"features": features, "tokens": tokens}).numpy()
    one_by_one = model({"features": np.repeat(features, per_row, axis=0),
                        "tokens": tokens.reshape(rows * per_row, steps)}).numpy()
    np.testing.assert_allclose(grouped, one_by_one.reshape(rows, per_row, steps, -1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("decoder", ["attention", "transformer"])
def test_grouped_loss_and_gradients_equal_the_per_caption_ones(decoder):
    """Same model, same captions: the loss per caption and its gradients agree to float noise (no dropout)."""
    keras.utils.set_random_seed(1)
    model = architectures.build_decoder(decoder, [2, 2, 12], vocab_size=20, embedding_dim=8, units=16, dropout=0.0)
    features, tokens = _batch([2, 2, 12], seed=1)
    rows, per_row, steps = tokens.shape
    targets = np.roll(tokens, -1, axis=-1)
    targets[..., -1] = PAD_ID
    targets[tokens == PAD_ID] = PAD_ID
    grouped_loss = training.CaptionLoss(tokens_per_caption=4.0, captions_per_row=per_row)
    flat_loss = training.CaptionLoss(tokens_per_caption=4.0)
    grouped = GroupedDecoder(model)

    def loss_and_gradients(compute):
        with tf.GradientTape() as tape:
            loss = compute()
        return float(loss), tape.gradient(loss, model.trainable_variables)

    mean_grouped, grads_grouped = loss_and_gradients(lambda: grouped_loss(
        targets, grouped({"features": features, "tokens": tokens}, training=True)))
    mean_flat, grads_flat = loss_and_gradients(lambda: flat_loss(
        targets.reshape(rows * per_row, steps),
        model({"features": np.repeat(features, per_row, axis=0), "tokens": tokens.reshape(rows * per_row, steps)},
              training=True)))
    assert mean_grouped == pytest.approx(mean_flat, rel=1e-5)
    for a, b in zip(grads_grouped, grads_flat):
        np.testing.assert_allclose(tf.convert_to_tensor(a), tf.convert_to_tensor(b), rtol=1e-4, atol=1e-6)


def test_encoder_runs_once_per_image_and_pools_for_pooled_decoders():
    calls = []
    inputs = keras.Input((8, 8, 3))
    encoder = keras.Model(inputs, keras.layers.Conv2D(12, 3, strides=4, padding="same")(inputs))
    counting = lambda images, training=False: calls.append(int(images.shape[0])) or encoder(images)  # noqa: E731
    decoder = architectures.build_decoder("merge", [12], vocab_size=20, embedding_dim=8, units=16)
    grouped = GroupedDecoder(decoder, encoder, pooled=True)
    grouped.encoder = counting
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype(np.uint8)
    _, tokens = _batch([12])
    out = grouped({"images": images, "tokens": tokens})
    assert calls == [4] and out.shape == (4, 3, 7, 20)
    pooled = tf.reduce_mean(encoder(images.astype(np.float32)), axis=[1, 2])
    np.testing.assert_allclose(grouped.features_of(images), pooled, rtol=1e-6)


def test_crops_and_flips_are_seeded_and_keep_the_size():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (32, 48, 3)), tf.uint8)
    seed = tf.constant([3, 4], tf.int32)
    first, again = image_inputs.crop_and_flip(image, seed), image_inputs.crop_and_flip(image, seed)
    other = image_inputs.crop_and_flip(image, tf.constant([5, 6], tf.int32))
    assert first.shape == (32, 48, 3) and first.dtype == tf.uint8
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    draws = [image_inputs.crop_and_flip(image, tf.constant([i, 7], tf.int32)).numpy() for i in range(12)]
    assert not any(np.array_equal(d, image.numpy()) for d in draws)  # a crop of 60-100% always changes it
