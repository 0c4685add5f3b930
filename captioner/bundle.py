"""The captioner bundle (JOB_DIR/export/) and `Captioner`, the one public way to load and use it.

A bundle is self-contained and pickle-free:
    decoder.keras    the decoder (built-in layers only: loads with safe_mode=True, no project import needed)
    vocabulary.txt   the token table in id order, `token<TAB>count` lines (PAD, OOV, START, END first),
                     so `text.decoder_tokens(parse_vocabulary(...))` rebuilds the very same ids
    bundle.json      bundle and schema versions, decoder, the features it consumes (manifest info),
                     max_length (of the training captions; decoding takes caption.max_length), the manifest's
                     encoder identity, the training config (its caption section: how the bundle decodes by default)
    encoder/         a copy of the encoder file (e.g. the .tflite) when the manifest names one by path

The trainer writes it (`trainer/export.py`, with `describe` below); the caption job and the
trainer's own evaluation read it through `Captioner.load`, so both see the same thing.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from typing import List, Mapping, Optional, Tuple

import keras
import numpy as np

from captioner import encoders, photos, schema, storage, text
from captioner.decoder import search
from captioner.decoder.decoding import Decoding
from captioner.config.sections import CaptionConfig
from captioner.errors import InputError
from captioner.threads import limit_tensorflow_threads
from captioner.layout import BUNDLE_FILE, BUNDLE_VOCABULARY_FILE, EXPORT_DIR, MODEL_FILE

BUNDLE_VERSION = 2  # 2: the bundle may carry a fine-tuned encoder (encoder/encoder.keras)
READABLE_BUNDLE_VERSIONS = (1, 2)
_CAPTION_DEFAULTS = dataclasses.asdict(CaptionConfig())  # for bundles whose recorded config predates a key


class BundleError(InputError, ValueError):
    """A folder that is not a readable captioner bundle of this version."""


def describe(decoder: str, feature: str, info: Mapping, max_length: int, vocabulary_size: int, encoder: Mapping,
             encoder_files: Mapping[str, str], config: Mapping, trained_on: Mapping,
             checksums: Mapping[str, str], cleaning: str) -> dict:
    """bundle.json's content (JSON-ready): what a loader needs to rebuild the captioner.

    `checksums` (sha256 of decoder.keras and vocabulary.txt) let a loader tell a whole export from one whose
    files come from two exports (a re-export into a gs:// job dir interrupted halfway); bundles written
    before they were kept have none and load as before.
    """
    return {
        "bundle_version": BUNDLE_VERSION,
        "schema_version": schema.SCHEMA_VERSION,
        "decoder": decoder,
        "consumes": [feature],
        "features": {feature: dict(info)},
        "max_length": int(max_length),
        "vocabulary": {"file": BUNDLE_VOCABULARY_FILE, "size": int(vocabulary_size),
                       "special_tokens": list(text.SPECIAL_TOKENS)},
        "encoder": dict(encoder),
        "encoder_files": dict(encoder_files),
        "config": dict(config),
        "trained_on": dict(trained_on),
        "checksums": dict(checksums),
        "text": {"cleaning": cleaning},  # how its training captions were cleaned: references are cleaned alike
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def read_info(export_dir: str) -> dict:
    """Reads and checks bundle.json of a local or gs:// export folder (no model is loaded)."""
    path = storage.join(export_dir, BUNDLE_FILE)
    if not storage.exists(path):
        inside = storage.join(export_dir, EXPORT_DIR)
        hint = (f"; did you mean {inside}?" if storage.exists(storage.join(inside, BUNDLE_FILE)) else
                ": point at the export/ folder of a finished `python -m trainer.task` job (JOB_DIR/export)")
        raise BundleError(f"{export_dir} holds no {BUNDLE_FILE}{hint}")
    info = json.loads(storage.read_text(path))
    if info.get("schema_version") not in schema.READABLE_VERSIONS or \
            info.get("bundle_version") not in READABLE_BUNDLE_VERSIONS:
        raise BundleError(f"{export_dir} is a bundle of schema {info.get('schema_version')} / bundle version "
                          f"{info.get('bundle_version')}; this code reads schemas {schema.READABLE_VERSIONS} / "
                          f"bundle versions {READABLE_BUNDLE_VERSIONS}: retrain or caption with the matching version")
    return info


def check_files(folder: str, info: Mapping, shown: str = "") -> None:
    """Every file bundle.json has a sha256 of (bundles exported before they were kept have none) must match it: an
    export interrupted halfway, or a damaged or replaced model file, is refused before it is loaded."""
    for name, sha in info.get("checksums", {}).items():
        path = storage.join(folder, *name.split("/"))
        if not storage.exists(path) or storage.file_sha256(path) != sha:
            raise BundleError(f"{shown or folder}: {name} is missing or does not match bundle.json (the export is "
                              "incomplete, damaged, or mixes two exports); re-run the trainer with the same "
                              "--job_dir to export again")


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
        # how it decodes unless a caller says otherwise: the caption section of the config it was trained with
        self.decoding = Decoding.from_config({**_CAPTION_DEFAULTS, **bundle.get("config", {}).get("caption", {})})
        self.decoder = search.SequenceDecoder(model, len(self.tokens))
        self.num_threads = num_threads
        self._encoder = None

    @classmethod
    def load(cls, export_dir: str, num_threads: Optional[int] = None) -> "Captioner":
        """Loads a bundle from a local or gs:// folder (a gs:// one is copied to a temporary folder first).

        `num_threads` caps the encoder's and TensorFlow's threads (one per worker when several share the cores).
        """
        if num_threads:
            limit_tensorflow_threads(num_threads)
        info = read_info(export_dir)
        local = storage.copy_folder_to_local(export_dir, tempfile.mkdtemp(prefix="captioner-bundle-")) \
            if storage.is_remote(export_dir) else export_dir
        for name in (MODEL_FILE, BUNDLE_VOCABULARY_FILE):
            if not os.path.exists(os.path.join(local, name)):
                raise BundleError(f"{export_dir} holds no {name}: the export is incomplete; re-run the trainer "
                                  "with the same --job_dir to export again")
        check_files(local, info, export_dir)
        words = [w for w, _ in text.parse_vocabulary(storage.read_text(os.path.join(local, BUNDLE_VOCABULARY_FILE)))]
        tokens = text.decoder_tokens(words)
        model = keras.saving.load_model(os.path.join(local, MODEL_FILE), safe_mode=True, compile=False)
        if model.output_shape[-1] != len(tokens):
            raise BundleError(f"{export_dir}: the decoder predicts {model.output_shape[-1]} tokens but "
                              f"{BUNDLE_VOCABULARY_FILE} holds {len(tokens)}: the bundle is damaged; export it again")
        return cls(model, tokens, info, export_dir, local, num_threads)

    # --- captioning -----------------------------------------------------------------------------
    def caption_features(self, features: Mapping[str, np.ndarray],
                         decoding: Optional[Decoding] = None) -> List[Tuple[str, float]]:
        """(caption, total log-probability) per image, from features in the stored dtype (e.g. uint8).

        The images are decoded as one batch: callers batch (the caption job's RunInference does).
        `decoding` defaults to `self.decoding`, the caption config the bundle was trained with.
        """
        return [best for best, *_ in self.rank_features(features, decoding, top=1)]

    def rank_features(self, features: Mapping[str, np.ndarray], decoding: Optional[Decoding] = None,
                      top: int = 1) -> List[List[Tuple[str, float]]]:
        """The `top` best (caption, log-probability) per image, best first (`top` <= the beam size)."""
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
        ids, scores = self.decoder.ranked(schema.dequantize(values, info), decoding or self.decoding, top)
        return [[(" ".join(search.ids_to_words(row, self.tokens)), float(score)) for row, score in zip(*image)]
                for image in zip(ids, scores)]

    @property
    def encoder(self):
        """The bundle's encoder, loaded on first use (with the copied encoder file when there is one)."""
        if self._encoder is None:
            identity = dict(self.bundle["encoder"])
            for key, relative in self.bundle["encoder_files"].items():
                identity[key] = os.path.join(self.local_dir, relative)
            self._encoder = encoders.encoder_from_identity(identity, num_threads=self.num_threads)
        return self._encoder

    def caption_images(self, images: np.ndarray, decoding: Optional[Decoding] = None) -> List[Tuple[str, float]]:
        """Images uint8 [N, h, w, 3], already resized to the encoder's input_size -> (caption, log-prob)."""
        features = self.encoder.encode(np.asarray(images))
        return self.caption_features(features, decoding)

    # --- photos of any size (captioner/photos.py) ----------------------------------------------------
    def caption_files(self, paths, decoding: Optional[Decoding] = None, top: int = 1) -> List[photos.Caption]:
        """Image files, local or gs:// -> a `photos.Caption` each (its `error` says why one has no caption).

        With `top` > 1 (at most the beam size) each result also carries the next best captions.
        """
        return photos.caption_files(self, paths, decoding, top=top)

    def caption_pil(self, images, decoding: Optional[Decoding] = None, top: int = 1) -> List[photos.Caption]:
        """Pillow images of any mode and size -> a `photos.Caption` each."""
        return photos.caption_pil(self, images, decoding, top=top)

    def caption_arrays(self, arrays, decoding: Optional[Decoding] = None, top: int = 1) -> List[photos.Caption]:
        """uint8 arrays [h, w, 3] (or [h, w]) of any size -> a `photos.Caption` each."""
        return photos.caption_arrays(self, arrays, decoding, top=top)
