"""The kept images as the encoder's input during fine-tuning: decoded, and in training randomly cropped and flipped.

Records written with `extract.keep_images` hold each image as JPEG at the encoder's input size (the image the
stored features were computed from). Fine-tuning feeds them to the encoder; in training each is augmented as
the published fine-tuned captioners do (random crops and horizontal flips, e.g. aaronma2020/caption_zoo):
a random crop of CROP_AREA of the image's area with an aspect ratio within CROP_ASPECT, resized back to the
input size, then a coin-flip mirror. Every row draws its own stateless seed from a seeded stream, so an
epoch's augmentations depend on `train.seed` only, whatever the thread count.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

CROP_AREA = (0.6, 1.0)        # a crop keeps most of the image: captions name what is in it
CROP_ASPECT = (3 / 4, 4 / 3)


def decode(jpeg: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
    """JPEG bytes -> uint8 [h, w, 3] of the encoder's input size (what extraction stored)."""
    image = tf.io.decode_jpeg(jpeg, channels=3)
    image.set_shape([int(size[0]), int(size[1]), 3])
    return image


def crop_and_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A random resized crop and a random horizontal flip of uint8 [h, w, 3], decided by `seed` [2]."""
    size = tf.shape(image)[:2]
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=CROP_ASPECT, area_range=CROP_AREA,
        use_image_if_no_bounding_boxes=True)
    cropped = tf.slice(image, begin, crop_size)
    resized = tf.image.resize(cropped, size, method="bilinear", antialias=True)
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    flipped = tf.image.stateless_random_flip_left_right(resized, seed=seed + 1)
    flipped.set_shape(image.shape)
    return flipped


def decode_rows(ds: tf.data.Dataset, size: Sequence[int], augment: bool, seed: int) -> tf.data.Dataset:
    """(JPEG bytes, caption rows) -> (uint8 image [h, w, 3], caption rows), augmented when `augment`."""
    if not augment:
        return ds.map(lambda jpeg, ids: (decode(jpeg, size), ids), num_parallel_calls=tf.data.AUTOTUNE,
                      deterministic=True)
    seeds = tf.data.Dataset.random(seed=seed + 4).batch(2)
    return tf.data.Dataset.zip((ds, seeds)).map(
        lambda row, pair: (crop_and_flip(decode(row[0], size), tf.cast(pair % (2 ** 31), tf.int32)), row[1]),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
