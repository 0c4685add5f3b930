"""The manifest beside the shards: what was extracted, with which encoder, and how many.

The trainer and the caption job read it before anything else and refuse inputs
that do not match what they expect, with a message that says what to do.
"""
from __future__ import annotations

import json
from typing import Mapping, Optional

from captioner import schema, storage
from captioner.layout import DEAD_LETTER_FILE, MANIFEST_FILE, VOCABULARY_FILE, shard_prefix


class ManifestError(ValueError):
    """The features folder does not hold what the caller needs."""


def build(encoder: Mapping, features: Mapping, counts: Mapping[str, int],
          dead_letters: int, images_matched: int, min_word_count: int,
          vocabulary_size: int) -> dict:
    """The manifest as a plain dict (JSON-ready)."""
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "encoder": dict(encoder),
        "features": {name: dict(info) for name, info in features.items()},
        "counts": {split: int(counts.get(split, 0)) for split in schema.SPLITS},
        "dead_letters": int(dead_letters),
        "images_matched": int(images_matched),
        "vocabulary": {"file": VOCABULARY_FILE, "min_count": int(min_word_count),
                       "size": int(vocabulary_size)},
        "dead_letter_file": DEAD_LETTER_FILE,
        "shards": {split: shard_prefix(split) + "-*.tfrecord" for split in schema.SPLITS},
    }


def write(folder: str, manifest: Mapping) -> str:
    path = storage.join(folder, MANIFEST_FILE)
    storage.write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def read(folder: str) -> dict:
    """Reads and checks a features folder's manifest."""
    path = storage.join(folder, MANIFEST_FILE)
    if not storage.exists(path):
        raise ManifestError(
            f"{path} does not exist: point --features at the --output folder of "
            "`python -m pipelines.extract_features` (it writes manifest.json there when it finishes)")
    manifest = json.loads(storage.read_text(path))
    version = manifest.get("schema_version")
    if version != schema.SCHEMA_VERSION:
        raise ManifestError(
            f"{path} has schema version {version}, this code reads version {schema.SCHEMA_VERSION}: "
            "re-run the extraction pipeline with this version of the project")
    return manifest


def check_compatible(manifest: Mapping, expected_encoder: Optional[Mapping] = None,
                     expected_features: Optional[Mapping] = None, source: str = "features") -> None:
    """Raises ManifestError when the encoder identity or feature shapes differ from what a model was trained on."""
    if expected_encoder is not None:
        for key in ("name", "weights_sha256"):
            if manifest["encoder"].get(key) != expected_encoder.get(key):
                raise ManifestError(
                    f"{source} were extracted with encoder {key}={manifest['encoder'].get(key)!r}, "
                    f"but the model expects {expected_encoder.get(key)!r}: extract features with the "
                    "same encoder the model was trained on")
    if expected_features is not None:
        for name, info in expected_features.items():
            have = manifest["features"].get(name)
            if have is None or list(have["shape"]) != list(info["shape"]):
                raise ManifestError(
                    f"{source} have {name} features {have and have['shape']}, the model expects "
                    f"{info['shape']}: extract features with the matching encoder")
