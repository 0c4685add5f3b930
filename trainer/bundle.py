"""The export bundle (job_dir/export/) and `Captioner`, the API the caption job loads it with.

A bundle is self-contained and pickle-free:
    decoder.keras    the decoder (built-in layers only: loads with safe_mode=True, no project import needed)
    vocabulary.txt   the token table in id order, `token<TAB>count` lines (PAD, OOV, START, END first),
                     so `text.decoder_tokens(parse_vocabulary(...))` rebuilds the very same ids
    bundle.json      schema version, decoder, the features it consumes (manifest info), max_length,
                     the manifest's encoder identity, the training config
    encoder/         a copy of the encoder file (e.g. the .tflite) when the manifest names one by path
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Dict, List, Mapping, Optional, Tuple

import keras
import numpy as np

from captioner import schema, storage, text

from trainer import decoding

log = logging.getLogger("trainer")

BUNDLE_VERSION = 1
BUNDLE_FILE = "bundle.json"
MODEL_FILE = "decoder.keras"
VOCABULARY_FILE = "vocabulary.txt"
ENCODER_DIR = "encoder"
_ENCODER_PATH_KEYS = ("source", "weights")


def _is_file(path: str) -> bool:
    if not isinstance(path, str) or not path:
        return False
    return storage.exists(path) if storage.is_remote(path) else os.path.isfile(path)


def _copy_encoder_files(encoder: Mapping, export_dir: str) -> Dict[str, str]:
    """Copies the identity's file paths (model source, weights file) into export/encoder/."""
    copied = {}
    for key in _ENCODER_PATH_KEYS:
        path = encoder.get(key)
        if not _is_file(path):
            if isinstance(path, str) and (path.endswith(".tflite") or path.endswith(".h5")):
                log.warning("encoder %s %s is not reachable from here: the bundle will need it there", key, path)
            continue
        relative = f"{ENCODER_DIR}/{os.path.basename(path.rstrip('/'))}"
        storage.write_bytes(os.path.join(export_dir, relative), storage.read_bytes(path))
        copied[key] = relative
    return copied


def _plain_copy(model: keras.Model) -> keras.Model:
    """The same architecture and weights, uncompiled and outside any distribution strategy."""
    plain = keras.models.clone_model(model)
    plain.set_weights(model.get_weights())
    return plain


def export(model: keras.Model, export_dir: str, config: Mapping, features) -> str:
    """Writes the bundle for `model` trained on `features` (a data.FeaturesFolder) into a local folder."""
    if os.path.isdir(export_dir):
        shutil.rmtree(export_dir)
    os.makedirs(export_dir)
    _plain_copy(model).save(os.path.join(export_dir, MODEL_FILE))
    counts = dict(text.parse_vocabulary(storage.read_text(
        os.path.join(features.folder, features.manifest["vocabulary"]["file"]))))
    lines = [f"{token}\t{counts.get(token, 0)}" for token in features.tokens]
    storage.write_text(os.path.join(export_dir, VOCABULARY_FILE), "\n".join(lines) + "\n")
    encoder = dict(features.manifest["encoder"])
    bundle = {
        "bundle_version": BUNDLE_VERSION,
        "schema_version": schema.SCHEMA_VERSION,
        "decoder": config["train"]["decoder"],
        "consumes": [features.feature],
        "features": {features.feature: dict(features.info)},
        "max_length": int(config["train"]["max_length"]),
        "vocabulary": {"file": VOCABULARY_FILE, "size": len(features.tokens),
                       "special_tokens": list(text.SPECIAL_TOKENS)},
        "encoder": encoder,
        "encoder_files": _copy_encoder_files(encoder, export_dir),
        "config": dict(config),
        "trained_on": {"features": features.source, "counts": features.manifest.get("counts", {})},
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    storage.write_text(os.path.join(export_dir, BUNDLE_FILE), json.dumps(bundle, indent=2, sort_keys=True) + "\n")
    return export_dir


class Captioner:
    """A loaded bundle: captions stored features, or images through the bundle's encoder."""

    def __init__(self, model: keras.Model, tokens: List[str], bundle: Mapping, export_dir: str, local_dir: str,
                 num_threads: Optional[int] = None):
        self.model, self.tokens, self.bundle = model, list(tokens), dict(bundle)
        self.export_dir, self.local_dir = export_dir, local_dir
        self.feature = bundle["consumes"][0]
        self.feature_info: dict = {name: dict(bundle["features"][name]) for name in bundle["consumes"]}
        self.identity: dict = {"decoder": bundle["decoder"], "encoder": dict(bundle["encoder"]),
                               "export_dir": export_dir}
        self.max_length = int(bundle["max_length"])
        self.batch_size = int(bundle.get("config", {}).get("caption", {}).get("batch_size", 64))
        self.decoder = decoding.SequenceDecoder(model, len(self.tokens))
        self.num_threads = num_threads
        self._encoder = None

    @classmethod
    def load(cls, export_dir: str, num_threads: Optional[int] = None) -> "Captioner":
        """Loads a bundle from a local or gs:// folder (a gs:// one is copied to a temporary folder first).

        `num_threads` caps the encoder's and TensorFlow's threads (one per worker when several share the cores).
        """
        if num_threads:
            from captioner.encoders_keras import limit_tensorflow_threads
            limit_tensorflow_threads(num_threads)
        local = storage.copy_folder_to_local(export_dir, tempfile.mkdtemp(prefix="captioner-bundle-")) \
            if storage.is_remote(export_dir) else export_dir
        path = os.path.join(local, BUNDLE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{export_dir} holds no {BUNDLE_FILE}: point at the export/ folder of a "
                                    "finished `python -m trainer.task` job")
        bundle = json.loads(storage.read_text(path))
        if bundle.get("schema_version") != schema.SCHEMA_VERSION or bundle.get("bundle_version") != BUNDLE_VERSION:
            raise ValueError(f"{export_dir} is a bundle of schema {bundle.get('schema_version')} / bundle version "
                             f"{bundle.get('bundle_version')}; this code reads {schema.SCHEMA_VERSION} / "
                             f"{BUNDLE_VERSION}: retrain or caption with the matching version")
        words = [w for w, _ in text.parse_vocabulary(storage.read_text(os.path.join(local, VOCABULARY_FILE)))]
        tokens = text.decoder_tokens(words)
        model = keras.saving.load_model(os.path.join(local, MODEL_FILE), safe_mode=True, compile=False)
        if model.output_shape[-1] != len(tokens):
            raise ValueError(f"{export_dir}: the decoder predicts {model.output_shape[-1]} tokens but "
                             f"{VOCABULARY_FILE} holds {len(tokens)}: the bundle is damaged; export it again")
        return cls(model, tokens, bundle, export_dir, local, num_threads)

    # --- captioning -----------------------------------------------------------------------------
    def caption_features(self, features: Mapping[str, np.ndarray], beam_size: int = 1,
                         length_penalty: float = 0.0, max_length: Optional[int] = None) -> List[Tuple[str, float]]:
        """(caption, total log-probability) per image, from features in the stored dtype (e.g. uint8)."""
        if self.feature not in features:
            raise ValueError(f"this decoder consumes {self.feature!r} features, got {sorted(features)}")
        info = self.feature_info[self.feature]
        values = np.asarray(features[self.feature])
        if list(values.shape[1:]) != list(info["shape"]):
            raise ValueError(f"{self.feature} features of shape {list(values.shape[1:])}, the decoder was trained "
                             f"on {info['shape']}: extract features with the same encoder "
                             f"({self.identity['encoder'].get('name')})")
        if np.issubdtype(np.dtype(info["dtype"]), np.integer) and not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{self.feature} features are stored as {info['dtype']} (quantized); pass them as "
                             f"stored, not as {values.dtype}: they are dequantized here")
        values = schema.dequantize(values, info)
        max_length = int(max_length or self.max_length)
        results: List[Tuple[str, float]] = []
        for start in range(0, len(values), self.batch_size):
            ids, scores = self.decoder.decode(values[start:start + self.batch_size], beam_size=int(beam_size),
                                              max_length=max_length, length_penalty=float(length_penalty))
            results.extend((" ".join(decoding.ids_to_words(row, self.tokens)), float(score))
                           for row, score in zip(ids, scores))
        return results

    @property
    def encoder(self):
        """The bundle's encoder, loaded on first use (with the copied encoder file when there is one)."""
        if self._encoder is None:
            from captioner import encoders  # lazy: only image captioning needs it
            identity = dict(self.bundle["encoder"])
            for key, relative in self.bundle.get("encoder_files", {}).items():
                identity[key] = os.path.join(self.local_dir, relative)
            self._encoder = encoders.encoder_from_identity(identity, num_threads=self.num_threads)
        return self._encoder

    def caption_images(self, images: np.ndarray, **kwargs) -> List[Tuple[str, float]]:
        """Images uint8 [N, h, w, 3], already resized to the encoder's input_size -> (caption, log-prob)."""
        features = self.encoder.encode(np.asarray(images))
        return self.caption_features(features, **kwargs)
