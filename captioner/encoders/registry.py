"""The encoder registry: a name or a path -> a loaded encoder of the right family.

Extraction and captioning both load their encoder here, so the features a
model was trained on and the features it is fed later come from one place;
`encoder_from_identity` loads the encoder a manifest or a bundle names and
checks that its weights are still the same ones.
"""
from __future__ import annotations

import os
from typing import Optional

from captioner.encoders import keras_file, thumbnail
from captioner.encoders.base import Encoder, EncoderError
from captioner.errors import UsageError
from captioner.encoders.keras_apps import APPS, KerasEncoder
from captioner.encoders.tflite import TFLiteEncoder
from captioner.threads import limit_tensorflow_threads

THUMBNAIL = thumbnail.NAME


def load_encoder(name_or_path: str, weights: str = "none", spatial: bool = False,
                 num_threads: Optional[int] = None) -> Encoder:
    """Loads an encoder by registry name or from a `.tflite` or `.keras` path (see `describe_encoders()`).

    `weights` applies to the keras.applications names: "imagenet" (downloaded by
    Keras), "none" (random, seeded, reproducible) or a weights file path, local
    or gs://. A TFLite or Keras file carries its own weights ("file"); thumbnail
    has none. `num_threads` sets the TFLite interpreter's threads, or TensorFlow's
    op threads for a Keras model when this process has not run TensorFlow yet
    (default: all cores).
    """
    name = str(name_or_path)
    suffix = os.path.splitext(name.lower())[1]
    if suffix in (".tflite", ".keras") and weights not in ("none", "file"):
        raise EncoderError(f"weights={weights!r} given for model file {name}: a {suffix} file carries its own "
                           "weights; leave weights at 'none' (or 'file')")
    if suffix == ".tflite":
        encoder = TFLiteEncoder(name, spatial=spatial, num_threads=num_threads)
    elif suffix == ".keras":
        if num_threads:
            limit_tensorflow_threads(num_threads)
        encoder = keras_file.KerasFileEncoder(name, spatial=spatial)
    elif name == THUMBNAIL:
        if weights != "none":
            raise EncoderError(f"the {THUMBNAIL} encoder has no weights; got weights={weights!r}, use 'none'")
        encoder = thumbnail.ThumbnailEncoder(spatial=spatial)
    elif name in APPS:
        if num_threads:
            limit_tensorflow_threads(num_threads)
        encoder = KerasEncoder(name, weights=weights, spatial=spatial)
    else:
        raise UsageError(f"unknown encoder {name!r}; accepted are a registry name or a path ending in "
                           f".tflite or .keras:\n{describe_encoders()}")
    encoder._num_threads = num_threads
    encoder._reload = encoder_from_identity
    return encoder


def encoder_from_identity(identity: dict, num_threads: Optional[int] = None) -> Encoder:
    """Loads the encoder a manifest or model bundle names, and checks its weights are the same ones."""
    missing = [k for k in ("source", "weights", "weights_sha256", "spatial") if k not in identity]
    if missing:
        raise EncoderError(f"encoder identity {identity!r} lacks {missing}: it should come from Encoder.identity")
    weights = "none" if identity["weights"] == "file" else identity["weights"]
    encoder = load_encoder(identity["source"], weights=weights, spatial=bool(identity["spatial"]),
                           num_threads=num_threads)
    have, want = encoder.identity["weights_sha256"], identity["weights_sha256"]
    if have != want:
        raise EncoderError(
            f"encoder {identity['source']!r} (weights {identity['weights']!r}) now has weights sha256 {have}, "
            f"but the features/model were made with sha256 {want}: point at the same weights that were "
            "used for extraction, or re-extract the features")
    return encoder


def describe_encoders() -> str:
    """One line per registry entry (for --help texts)."""
    lines = [f"  {name:<16}{app.summary}" for name, app in APPS.items()]
    lines.append(f"  {'PATH.tflite':<16}TFLite model (local or gs://), input [1,h,w,3] uint8/int8/float32; "
                 "pooled = its output as a vector, spatial = its last HxWxC map; weights: the file")
    lines.append(f"  {'PATH.keras':<16}{keras_file.SUMMARY}")
    lines.append(f"  {THUMBNAIL:<16}{thumbnail.SUMMARY}")
    return "\n".join(lines)
