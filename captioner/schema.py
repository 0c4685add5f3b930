"""The TFRecord schema shared by every stage: the only place feature keys are spelled.

One `tf.train.Example` per image holds its identity (and its COCO id when a COCO or
Karpathy caption file gave one), split, all of its captions
(cleaned, space-joined tokens, plus the originals) and the encoder output as raw
bytes in the dtype the encoder produced (a uint8-quantized encoder stays uint8,
so shards stay small). Shapes, dtypes and quantization live in the manifest.

Version 2 adds `image/jpeg`: with `extract.keep_images`, the image as the encoder
saw it (resized to its input size), JPEG-encoded, for fine-tuning the encoder
(the manifest's "images" entry says whether records hold it). Version 1 records
are version 2 records without it, so both are read.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # what this code reads: version 1 is version 2 without kept images

IMAGE_ID = "image/id"
IMAGE_PATH = "image/path"
SPLIT = "image/split"
COCO_ID = "image/coco_id"  # optional: only records whose captions came with a COCO id have it
CAPTIONS = "caption/clean"
RAW_CAPTIONS = "caption/raw"
POOLED = "features/pooled"
SPATIAL = "features/spatial"
IMAGE = "image/jpeg"  # optional (extract.keep_images): the encoder's input image as JPEG bytes

SPLITS = ("train", "dev", "test", "unsplit")


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def make_example(image_id: str, image_path: str, split: str,
                 captions: Sequence[str], raw_captions: Sequence[str],
                 pooled: np.ndarray, spatial: Optional[np.ndarray] = None, coco_id: Optional[int] = None,
                 image_jpeg: Optional[bytes] = None) -> bytes:
    """Serializes one image's record; arrays are stored as C-order raw bytes."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    feature = {
        IMAGE_ID: _bytes([image_id.encode("utf-8")]),
        IMAGE_PATH: _bytes([image_path.encode("utf-8")]),
        SPLIT: _bytes([split.encode("utf-8")]),
        CAPTIONS: _bytes([c.encode("utf-8") for c in captions]),
        RAW_CAPTIONS: _bytes([c.encode("utf-8") for c in raw_captions]),
        POOLED: _bytes([np.ascontiguousarray(pooled).tobytes()]),
    }
    if spatial is not None:
        feature[SPATIAL] = _bytes([np.ascontiguousarray(spatial).tobytes()])
    if image_jpeg is not None:
        feature[IMAGE] = _bytes([image_jpeg])
    if coco_id is not None:
        feature[COCO_ID] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(coco_id)]))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


def feature_spec(with_spatial: bool, with_image: bool = False) -> dict:
    """The `tf.io.parse_*_example` spec for a shard written by `make_example` (`with_image`: kept images)."""
    spec = {
        IMAGE_ID: tf.io.FixedLenFeature([], tf.string),
        IMAGE_PATH: tf.io.FixedLenFeature([], tf.string),
        SPLIT: tf.io.FixedLenFeature([], tf.string),
        CAPTIONS: tf.io.VarLenFeature(tf.string),
        RAW_CAPTIONS: tf.io.VarLenFeature(tf.string),
        POOLED: tf.io.FixedLenFeature([], tf.string),
    }
    if with_spatial:
        spec[SPATIAL] = tf.io.FixedLenFeature([], tf.string)
    if with_image:
        spec[IMAGE] = tf.io.FixedLenFeature([], tf.string)
    return spec


def decode_tensor(raw: tf.Tensor, dtype: str, shape: Sequence[int],
                  scale: Optional[float] = None, zero_point: int = 0) -> tf.Tensor:
    """Turns stored bytes back into a float32 tensor of `shape` (dequantizing when `scale` is set)."""
    values = tf.io.decode_raw(raw, tf.dtypes.as_dtype(dtype))
    values = tf.reshape(values, list(shape))
    values = tf.cast(values, tf.float32)
    if scale is not None:
        values = (values - float(zero_point)) * float(scale)
    return values


def parse_example_py(serialized: bytes) -> dict:
    """Parses one record into plain Python values (for Beam and tests; tf.data uses `feature_spec`)."""
    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature

    def strings(key: str) -> list:
        return [v.decode("utf-8") for v in feature[key].bytes_list.value]

    record = {
        "image_id": strings(IMAGE_ID)[0],
        "image_path": strings(IMAGE_PATH)[0],
        "split": strings(SPLIT)[0],
        "captions": strings(CAPTIONS),
        "raw_captions": strings(RAW_CAPTIONS),
        "pooled": feature[POOLED].bytes_list.value[0],
        "spatial": feature[SPATIAL].bytes_list.value[0] if SPATIAL in feature else None,
        "coco_id": feature[COCO_ID].int64_list.value[0] if COCO_ID in feature else None,
        "image_jpeg": feature[IMAGE].bytes_list.value[0] if IMAGE in feature else None,
    }
    return record


def array_from_bytes(raw: bytes, info: Mapping) -> np.ndarray:
    """Decodes stored feature bytes with the manifest's `{shape, dtype}` entry, no dequantization."""
    return np.frombuffer(raw, dtype=np.dtype(info["dtype"])).reshape(info["shape"])


def dequantize(values: np.ndarray, info: Mapping) -> np.ndarray:
    """Stored encoder output -> float32, with the manifest's `scale`/`zero_point` when quantized."""
    values = np.asarray(values, dtype=np.float32)
    if info.get("scale") is not None:
        values = (values - float(info.get("zero_point", 0))) * float(info["scale"])
    return values
