"""Writes the captioner bundle (captioner/bundle.py describes the format) for a trained decoder."""
from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Dict, Mapping

import keras

from captioner import bundle, manifest, storage, text
from captioner.layout import BUNDLE_FILE, BUNDLE_VOCABULARY_FILE, ENCODER_DIR, MODEL_FILE

log = logging.getLogger("trainer")

_ENCODER_PATH_KEYS = ("source", "weights")  # identity entries that may name a file to carry along


def _is_file(path) -> bool:
    if not isinstance(path, str) or not path:
        return False
    return storage.exists(path) if storage.is_remote(path) else os.path.isfile(path)


def _copy_encoder_files(encoder: Mapping, export_dir: str) -> Dict[str, str]:
    """Copies the identity's file paths (model source, weights file) into export/encoder/."""
    copied = {}
    for key in _ENCODER_PATH_KEYS:
        path = encoder.get(key)
        if not _is_file(path):
            if isinstance(path, str) and path.endswith((".tflite", ".h5")):
                log.warning("encoder %s %s is not reachable from here: the bundle will need it there", key, path)
            continue
        relative = f"{ENCODER_DIR}/{os.path.basename(path.rstrip('/'))}"
        storage.write_bytes(os.path.join(export_dir, relative), storage.read_bytes(path))
        copied[key] = relative
    return copied


def _float32_layer(layer):
    """A copy of a layer computing in float32 (the keras.ops operations of a functional model have no dtype)."""
    config = layer.get_config()
    if "dtype" in config:
        config["dtype"] = "float32"
    return layer.__class__.from_config(config)


def plain_copy(model: keras.Model) -> keras.Model:
    """The same architecture and weights, uncompiled, outside any distribution strategy, in float32.

    A model trained under a mixed precision policy is exported with every layer in float32 (its variables
    already are), so a bundle decodes the same on any machine.
    """
    plain = keras.models.clone_model(model, clone_function=_float32_layer)
    plain.set_weights(model.get_weights())
    return plain


def export(model: keras.Model, export_dir: str, config, features) -> str:
    """Writes the bundle for `model` trained on `features` (a data.FeaturesFolder) into a local folder."""
    if os.path.isdir(export_dir):
        shutil.rmtree(export_dir)
    os.makedirs(export_dir)
    plain_copy(model).save(os.path.join(export_dir, MODEL_FILE))
    counts = dict(text.parse_vocabulary(storage.read_text(
        os.path.join(features.folder, features.manifest["vocabulary"]["file"]))))
    lines = [f"{token}\t{counts.get(token, 0)}" for token in features.tokens]
    storage.write_text(os.path.join(export_dir, BUNDLE_VOCABULARY_FILE), "\n".join(lines) + "\n")
    checksums = {name: storage.file_sha256(os.path.join(export_dir, name)) for name in (MODEL_FILE,
                                                                                      BUNDLE_VOCABULARY_FILE)}
    encoder = dict(features.manifest["encoder"])
    info = bundle.describe(
        decoder=config.train.decoder, feature=features.feature, info=features.info,
        max_length=config.train.max_length, vocabulary_size=len(features.tokens), encoder=encoder,
        encoder_files=_copy_encoder_files(encoder, export_dir), config=config.to_dict(),
        trained_on={"features": features.source, "counts": features.manifest["counts"]}, checksums=checksums,
        cleaning=manifest.cleaning_of(features.manifest))
    storage.write_text(os.path.join(export_dir, BUNDLE_FILE), json.dumps(info, indent=2, sort_keys=True) + "\n")
    return export_dir
