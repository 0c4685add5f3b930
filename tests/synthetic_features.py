"""Writes a small but real features folder whose captions are determined by the features (test helper).

Each image has three attributes (colour, shape, place). The spatial map is a
2x2 grid of uint8 channels: the object's colour and shape one-hots at one
random position, the place one-hot everywhere, noise elsewhere; pooled is the
grid's mean. Captions are templates of the attributes in three phrasings, so
a decoder that reads the features can reach BLEU ~1 on held-out images.

`encoder="thumbnail"` (or the path of a `.keras` encoder taking 64x64 images,
e.g. `tiny_keras_encoder`'s) makes real 64x64 images instead (a coloured block
on a place-coloured background) and encodes them with that encoder, for tests
that caption images end to end; `keep_images` keeps them in the records, as
`extract.keep_images` does, for encoder fine-tuning.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
from typing import List, Tuple

import numpy as np
import tensorflow as tf

from captioner import config as config_lib
from captioner import manifest as manifest_lib
from captioner import schema, storage, text
from captioner.images import KEPT_JPEG_QUALITY, encode_jpeg
from captioner.layout import VOCABULARY_FILE, WORD_COUNTS_FILE, shard_prefix

COLORS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle", "star")
PLACES = ("grass", "beach", "snow")
TEMPLATES = ("a {color} {shape} on the {place}", "there is a {color} {shape} on the {place}",
             "the {color} {shape} sits on the {place}")
GRID, SCALE = 2, 0.01
CLEANING = text.TUTORIAL  # what the synthetic records are cleaned with, as their manifest says
CHANNELS = len(COLORS) + len(SHAPES) + len(PLACES) + 1  # + one noise-only channel

THUMB_COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220), "black": (10, 10, 10), "white": (250, 250, 250)}
THUMB_PLACES = {"grass": (40, 160, 40), "beach": (230, 200, 120), "sky": (120, 180, 250)}
THUMB_TEMPLATES = ("a {color} block on the {place}", "there is a {color} block on the {place}")


def _attributes(n: int, rng: np.random.Generator, choices) -> List[tuple]:
    """n attribute tuples cycling through every combination (shuffled), so train covers them all."""
    combos = list(itertools.product(*choices))
    rng.shuffle(combos)
    return [combos[i % len(combos)] for i in range(n)]


def _synthetic_arrays(attrs: tuple, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    color, shape, place = attrs
    grid = rng.uniform(0.0, 0.15, size=(GRID, GRID, CHANNELS))
    row, col = rng.integers(GRID), rng.integers(GRID)
    grid[row, col, COLORS.index(color)] = 2.0
    grid[row, col, len(COLORS) + SHAPES.index(shape)] = 2.0
    grid[:, :, len(COLORS) + len(SHAPES) + PLACES.index(place)] = 1.0
    spatial = np.clip(np.round(grid / SCALE), 0, 255).astype(np.uint8)
    pooled = np.clip(np.round(spatial.astype(np.float32).mean(axis=(0, 1))), 0, 255).astype(np.uint8)
    return pooled, spatial


def thumbnail_scenes(n: int, seed: int = 0) -> Tuple[np.ndarray, List[List[str]]]:
    """n uint8 64x64 images (a coloured block on a coloured background) and their captions."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for color, place in _attributes(n, rng, (list(THUMB_COLORS), list(THUMB_PLACES))):
        image = np.empty((64, 64, 3), np.uint8)
        image[:] = THUMB_PLACES[place]
        top, left = rng.integers(0, 33, size=2)
        image[top:top + 32, left:left + 32] = THUMB_COLORS[color]
        images.append(image)
        captions.append([t.format(color=color, place=place) for t in THUMB_TEMPLATES])
    return np.stack(images), captions


def tiny_keras_encoder(path: str, seed: int = 0) -> str:
    """Saves a small random CNN as a `.keras` encoder: 64x64 RGB 0..255 -> an 8x8x16 map, three blocks."""
    import keras
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Rescaling(1 / 255, name="preprocess")(inputs)
    for block, width in enumerate((8, 16, 16)):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu6", name=f"block{block}_conv")(x)
    keras.Model(inputs, x, name="tiny_encoder").save(path)
    return path


def _split_records(split: str, n: int, seed: int, spatial: bool, encoder, keep_images: bool = False):
    """(image_id, captions, pooled, spatial, JPEG or None) tuples of one split."""
    offset = {"train": 0, "dev": 1, "test": 2, "unsplit": 3}[split]
    if encoder is not None:
        images, captions = thumbnail_scenes(n, seed=seed * 10 + offset)
        out = encoder.encode(images) if n else {"pooled": [], "spatial": []}
        return [(f"{split}_{i:04d}", captions[i], out["pooled"][i], out["spatial"][i] if spatial else None,
                 encode_jpeg(images[i]) if keep_images else None) for i in range(n)]
    rng = np.random.default_rng(seed * 10 + offset)
    records = []
    for i, (color, shape, place) in enumerate(_attributes(n, rng, (COLORS, SHAPES, PLACES))):
        pooled, grid = _synthetic_arrays((color, shape, place), rng)
        captions = [t.format(color=color, shape=shape, place=place) for t in TEMPLATES]
        records.append((f"{split}_{i:04d}", captions, pooled, grid if spatial else None, None))
    return records


def write_synthetic_features(folder: str, num_train: int = 120, num_dev: int = 24, num_test: int = 24,
                             spatial: bool = True, seed: int = 0, encoder: str = "synthetic",
                             num_shards: int = 2, keep_images: bool = False) -> dict:
    """Writes manifest.json, vocabulary.txt, dead_letter.jsonl and shards into `folder` (local or gs://)."""
    thumbnail = None
    if encoder == "thumbnail" or encoder.endswith(".keras"):
        from captioner import encoders
        thumbnail = encoders.load_encoder(encoder, spatial=spatial)
        identity, info = thumbnail.identity, thumbnail.feature_info()
    else:
        identity = {"name": encoder, "source": encoder, "weights": "none",
                    "weights_sha256": hashlib.sha256(encoder.encode()).hexdigest(), "spatial": bool(spatial),
                    "input_size": [32, 32]}
        info = {"pooled": {"shape": [CHANNELS], "dtype": "uint8", "scale": SCALE, "zero_point": 0}}
        if spatial:
            info["spatial"] = {"shape": [GRID, GRID, CHANNELS], "dtype": "uint8", "scale": SCALE, "zero_point": 0}

    staging = tempfile.mkdtemp(prefix="synthetic-features-") if storage.is_remote(folder) else folder
    counts, files, train_captions = {"unsplit": 0}, {"unsplit": []}, []
    for split, n in (("train", num_train), ("dev", num_dev), ("test", num_test)):
        records = _split_records(split, n, seed, spatial, thumbnail, keep_images)
        counts[split] = len(records)
        shards = max(1, min(num_shards, len(records))) if records else 0
        os.makedirs(os.path.join(staging, split), exist_ok=True)
        files[split] = [f"{shard_prefix(split)}-{s:05d}-of-{shards:05d}.tfrecord" for s in range(shards)]
        for s in range(shards):
            path = os.path.join(staging, files[split][s])
            with tf.io.TFRecordWriter(path) as writer:
                for image_id, captions, pooled, grid, jpeg in records[s::shards]:
                    cleaned = [text.clean_caption(c, CLEANING) for c in captions]
                    writer.write(schema.make_example(image_id, f"/images/{image_id}.jpg", split, cleaned,
                                                     captions, pooled, grid, image_jpeg=jpeg))
        if split == "train":
            train_captions = [text.clean_caption(c, CLEANING) for r in records for c in r[1]]
    lines = text.vocabulary_lines(text.count_words(train_captions), min_count=1)
    for name in (VOCABULARY_FILE, WORD_COUNTS_FILE):
        with open(os.path.join(staging, name), "w") as handle:
            handle.write("\n".join(lines) + "\n")
    total = sum(counts.values())
    this_run = {"images_matched": total, "records_written": total, "dead_letters": 0, "skipped_existing": 0}
    manifest = manifest_lib.build(identity, {k: v for k, v in info.items() if spatial or k == "pooled"}, counts,
                                  shards=files, dead_letter_files=[], min_word_count=1, vocabulary_size=len(lines),
                                  this_run=this_run, cleaning=CLEANING,
                                  images=manifest_lib.images_entry((64, 64), KEPT_JPEG_QUALITY) if keep_images else None)
    manifest_lib.write(staging, manifest)
    if staging != folder:
        storage.copy_folder_from_local(staging, folder)
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def tiny_config(**train) -> config_lib.Config:
    """The local config with a decoder small enough to learn the synthetic set in seconds."""
    values = dict(decoder="attention", features="spatial", embedding_dim=16, units=32, dropout=0.0,
                  max_length=12, batch_size=16, epochs=6, learning_rate=0.01, lr_schedule="cosine",
                  warmup_epochs=0, label_smoothing=0.0, early_stopping_patience=3, strategy="mirrored",
                  shuffle_buffer=256, sort_window_batches=2, seed=7)
    return config_lib.load("local").with_values("tiny_config", train={**values, **train}, caption={"batch_size": 64})


def overrides(config: config_lib.Config) -> list:
    """`--set train.K=V` flags that give a trainer process the same train section."""
    return [arg for key, value in config.to_dict()["train"].items() for arg in ("--set", f"train.{key}={value}")]
