"""The manifest beside the shards: what was extracted, with which encoder, and how many.

The trainer and the caption job read it before anything else and refuse inputs
that do not match what they expect, with a message that says what to do.
"""
from __future__ import annotations

import json
import os
from typing import List, Mapping, Optional, Sequence

from captioner import schema, storage, text
from captioner.errors import InputError
from captioner.layout import MANIFEST_FILE, VOCABULARY_FILE, WORD_COUNTS_FILE


class ManifestError(InputError, ValueError):
    """The features folder does not hold what the caller needs."""


def build(encoder: Mapping, features: Mapping, counts: Mapping[str, int], shards: Mapping[str, Sequence[str]],
          dead_letter_files: Sequence[str], min_word_count: int, vocabulary_size: int,
          this_run: Mapping, cleaning: str, images: Optional[Mapping] = None) -> dict:
    """The manifest as a plain dict (JSON-ready).

    `shards` lists the exact files of each split (relative to the folder, or full paths for shards an
    incremental run keeps from an earlier folder): readers read those and nothing else, so files of an
    earlier or unfinished run in the same folder are never mixed in. `this_run` holds what this extraction
    saw: images_matched == records_written + dead_letters + skipped_existing. `images` describes the kept
    images (`kept_images`); None when the records hold none.
    """
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "encoder": dict(encoder),
        "features": {name: dict(info) for name, info in features.items()},
        "counts": {split: int(counts[split]) for split in schema.SPLITS},
        "shards": {split: sorted(shards[split]) for split in schema.SPLITS},
        "dead_letters": int(this_run["dead_letters"]),
        "images_matched": int(this_run["images_matched"]),
        "dead_letter_files": sorted(dead_letter_files),
        "vocabulary": {"file": VOCABULARY_FILE, "counts_file": WORD_COUNTS_FILE, "min_count": int(min_word_count),
                       "size": int(vocabulary_size)},
        "this_run": dict(this_run),
        "text": {"cleaning": cleaning},
        "images": dict(images) if images else {"kept": False},
    }


def kept_images(manifest: Mapping) -> Optional[dict]:
    """What a manifest says of the images its records keep ({"kept": True, "format", "size", "quality"}), or None."""
    images = manifest.get("images") or {}
    return dict(images) if images.get("kept") else None


def images_entry(input_size, quality: int) -> dict:
    """The manifest's "images" entry for records that keep their image as JPEG at the encoder's input size."""
    return {"kept": True, "format": "jpeg", "size": [int(input_size[0]), int(input_size[1])], "quality": int(quality)}


def cleaning_of(recorded: Mapping) -> str:
    """The caption cleaning a manifest or bundle.json records (the tutorial's in those written before it did)."""
    return recorded.get("text", {}).get("cleaning", text.LEGACY_CLEANING)


def relative_to(folder: str, path: str) -> str:
    """`path` relative to `folder` when it lies inside it (how a manifest lists its own files), else as is."""
    base = folder.rstrip("/") + "/" if storage.is_remote(folder) else os.path.abspath(folder) + os.sep
    full = path if storage.is_remote(path) else os.path.abspath(path)
    return full[len(base):].replace(os.sep, "/") if full.startswith(base) else path


def shard_files(manifest: Mapping, folder: str, split: str) -> List[str]:
    """The full paths of a split's shards: the files the manifest lists (a glob in manifests before lists)."""
    listed = manifest["shards"][split]
    if isinstance(listed, str):
        return storage.match(storage.join(folder, listed))
    return [path if storage.is_remote(path) or os.path.isabs(path) else storage.join(folder, *path.split("/"))
            for path in listed]


def listed_files(manifest: Mapping, folder: str) -> List[str]:
    """Every file a finished extraction's manifest names as its own (full paths; shards an incremental run took
    from an earlier folder lie outside `folder`): what --overwrite may delete."""
    named = [path for split in schema.SPLITS for path in shard_files(manifest, folder, split)]
    named += [storage.join(folder, *name.split("/")) for name in manifest.get("dead_letter_files", [])]
    vocabulary = manifest.get("vocabulary", {})
    named += [storage.join(folder, vocabulary[key]) for key in ("file", "counts_file") if key in vocabulary]
    encoder = str(manifest.get("encoder", {}).get("source", ""))
    return named + ([encoder] if encoder.endswith(".keras") else [])


def write(folder: str, manifest: Mapping) -> str:
    path = storage.join(folder, MANIFEST_FILE)
    storage.write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def read(folder: str, flag: str = "--features") -> dict:
    """Reads and checks a features folder's manifest (`flag` names the flag that gave the folder)."""
    path = storage.join(folder, MANIFEST_FILE)
    if not storage.exists(path):
        raise ManifestError(
            f"{path} does not exist: point {flag} at the --output folder of "
            "`python -m pipelines.extract_features` (it writes manifest.json there when it finishes)")
    manifest = json.loads(storage.read_text(path))
    version = manifest.get("schema_version")
    if version not in schema.READABLE_VERSIONS:
        raise ManifestError(
            f"{path} has schema version {version}, this code reads versions "
            f"{', '.join(map(str, schema.READABLE_VERSIONS))}: re-run the extraction pipeline with this version "
            "of the project")
    return manifest


def check_compatible(manifest: Mapping, expected_encoder: Optional[Mapping] = None,
                     expected_features: Optional[Mapping] = None, source: str = "features") -> None:
    """Raises ManifestError when the encoder identity or feature shapes differ from what a model was trained on."""
    if expected_encoder is not None:
        for key in ("name", "weights_sha256"):
            if manifest["encoder"].get(key) != expected_encoder.get(key):
                fine_tuned = " (the model fine-tuned its encoder: features of the encoder it started from do "\
                             "not fit it)" if expected_encoder.get("finetuned_from") else ""
                raise ManifestError(
                    f"{source} were extracted with encoder {key}={manifest['encoder'].get(key)!r}, "
                    f"but the model expects {expected_encoder.get(key)!r}{fine_tuned}: caption from the images "
                    "(--images), which go through the model's own encoder, or re-extract the features with "
                    "the model's encoder (EXPORT/encoder/)")
    if expected_features is not None:
        for name, info in expected_features.items():
            have = manifest["features"].get(name)
            if have is None or list(have["shape"]) != list(info["shape"]):
                raise ManifestError(
                    f"{source} have {name} features {have and have['shape']}, the model expects "
                    f"{info['shape']}: extract features with the matching encoder")
