"""Writes the captioner bundle (captioner/bundle.py describes the format) for a trained decoder."""
from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Dict, Mapping, Optional, Tuple

import keras

from captioner import bundle, encoders, manifest, storage, text
from captioner.layout import BUNDLE_FILE, BUNDLE_VOCABULARY_FILE, ENCODER_DIR, FINE_TUNED_ENCODER_FILE, MODEL_FILE

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


def _fine_tuned_encoder(encoder: keras.Model, export_dir: str, features) -> Tuple[dict, dict, Dict[str, str]]:
    """Saves a fine-tuned encoder as encoder/encoder.keras; (its identity, the features it makes, encoder_files).

    Both come from loading the saved file through the encoder registry, so they are what an extraction with
    that file records: features re-extracted with the bundle's encoder pass the caption job's check, the
    features the decoder was first trained on (made by the encoder before fine-tuning) do not.
    """
    relative = f"{ENCODER_DIR}/{FINE_TUNED_ENCODER_FILE}"
    path = os.path.join(export_dir, *relative.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    encoder.save(path)
    loaded = encoders.load_encoder(path, spatial=bool(features.manifest["encoder"].get("spatial")))
    before = features.manifest["encoder"]
    identity = dict(loaded.identity, source=FINE_TUNED_ENCODER_FILE,
                    finetuned_from={key: before.get(key) for key in ("name", "source", "weights_sha256")})
    return identity, loaded.feature_info()[features.feature], {"source": relative}


def export(model: keras.Model, export_dir: str, config, features, encoder: Optional[keras.Model] = None) -> str:
    """Writes the bundle for `model` trained on `features` (a data.FeaturesFolder) into a local folder; with the
    `encoder` it was fine-tuned with (trainer/finetune.py), that encoder goes into the bundle too."""
    if os.path.isdir(export_dir):
        shutil.rmtree(export_dir)
    os.makedirs(export_dir)
    plain_copy(model).save(os.path.join(export_dir, MODEL_FILE))
    counts = dict(text.parse_vocabulary(storage.read_text(
        os.path.join(features.folder, features.manifest["vocabulary"]["file"]))))
    lines = [f"{token}\t{counts.get(token, 0)}" for token in features.tokens]
    storage.write_text(os.path.join(export_dir, BUNDLE_VOCABULARY_FILE), "\n".join(lines) + "\n")
    if encoder is None:
        identity, feature_info = dict(features.manifest["encoder"]), features.info
        encoder_files = _copy_encoder_files(identity, export_dir)
    else:
        identity, feature_info, encoder_files = _fine_tuned_encoder(encoder, export_dir, features)
    files = [MODEL_FILE, BUNDLE_VOCABULARY_FILE] + [relative for relative in encoder_files.values()]
    checksums = {name: storage.file_sha256(os.path.join(export_dir, *name.split("/"))) for name in files}
    info = bundle.describe(
        decoder=config.train.decoder, feature=features.feature, info=feature_info,
        max_length=config.train.max_length, vocabulary_size=len(features.tokens), encoder=identity,
        encoder_files=encoder_files, config=config.to_dict(),
        trained_on={"features": features.source, "counts": features.manifest["counts"]}, checksums=checksums,
        cleaning=manifest.cleaning_of(features.manifest))
    storage.write_text(os.path.join(export_dir, BUNDLE_FILE), json.dumps(info, indent=2, sort_keys=True) + "\n")
    return export_dir
