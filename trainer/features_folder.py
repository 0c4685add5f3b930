"""The trainer's input folder: a features folder checked against the config, seen through a local path.

A gs:// folder is copied to a local cache first (TensorFlow is only handed local
paths). Every check runs before any training: schema version, the feature the
decoder needs, the vocabulary, and that the manifest describes the stored bytes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from captioner import manifest as manifest_lib
from captioner import schema, storage, text
from captioner.manifest import ManifestError

log = logging.getLogger("trainer")

FEATURE_KEYS = {"pooled": schema.POOLED, "spatial": schema.SPATIAL}
_EXPECTED_RANK = {"pooled": 1, "spatial": 3}
MAX_CAPTIONS_PER_ROW = 8  # an image with more captions than a row holds makes several rows


@dataclasses.dataclass
class Counts:
    """What one pass over a split found: images, (image, caption) examples, target tokens, and the rows its
    images make for each C = 1 .. MAX_CAPTIONS_PER_ROW captions per row (trainer/data.py)."""
    images: int
    examples: int
    tokens: int
    rows_by_width: Tuple[int, ...] = ()

    @property
    def tokens_per_caption(self) -> float:
        return self.tokens / max(1, self.examples)

    @property
    def captions_per_row(self) -> int:
        """C for a batch row: the split's mean captions per image, rounded (Flickr8k and COCO: 5)."""
        return min(MAX_CAPTIONS_PER_ROW, max(1, round(self.examples / max(1, self.images))))

    def rows(self, captions_per_row: int) -> int:
        return self.rows_by_width[captions_per_row - 1]


@dataclasses.dataclass
class FeaturesFolder:
    """A features folder that has passed the checks, seen through local paths."""
    source: str              # what the user passed (local or gs://)
    folder: str              # local path (a cached copy when `source` is gs://)
    manifest: dict
    tokens: List[str]        # the decoder's token table: PAD=0, OOV, START, END, then the words
    feature: str             # the feature the decoder consumes: "pooled" | "spatial"
    shards: Dict[str, List[str]] = dataclasses.field(default_factory=dict)  # local shard files per split

    @property
    def info(self) -> dict:
        return self.manifest["features"][self.feature]

    @property
    def shape(self) -> List[int]:
        return [int(d) for d in self.info["shape"]]

    @property
    def kept_images(self) -> Optional[dict]:
        """The manifest's description of the images the records keep (extract.keep_images), or None."""
        return manifest_lib.kept_images(self.manifest)

    @property
    def image_size(self) -> List[int]:
        """(height, width) of the kept images: the encoder's input size."""
        return [int(d) for d in (self.kept_images or {}).get("size") or self.manifest["encoder"]["input_size"]]

    def files(self, split: str) -> List[str]:
        """The split's shards as the manifest lists them: files of other runs in the folder are never read."""
        return self.shards[split]


def _cache(path: str, source: str, cache_dir: str) -> str:
    """Copies one listed file of a gs:// features folder (or of a folder it was merged with) to the cache."""
    relative = manifest_lib.relative_to(source, path)
    if storage.is_remote(relative):  # a shard kept from an earlier folder by an incremental extraction
        relative = os.path.join("earlier", hashlib.sha1(path.encode()).hexdigest()[:10] + "-" + path.rsplit("/", 1)[-1])
    local = os.path.join(cache_dir, *relative.split("/"))
    storage.copy_file(path, local)
    return local


def open_features(source: str, train_cfg, cache_dir: str) -> FeaturesFolder:
    """Reads and checks the manifest, copies what it lists of a gs:// folder to `cache_dir`, refuses what the
    config cannot train on."""
    manifest = manifest_lib.read(source)
    feature = check_manifest(manifest, train_cfg, source)
    shards = {split: manifest_lib.shard_files(manifest, source, split) for split in schema.SPLITS}
    vocabulary_path = storage.join(source, manifest["vocabulary"]["file"])
    if not storage.exists(vocabulary_path):
        raise ManifestError(f"{source} has no {manifest['vocabulary']['file']} although its manifest names it: "
                            "the extraction did not finish; re-run it")
    folder = source
    if storage.is_remote(source):
        log.info("copying the features %s lists to the local cache %s", source, cache_dir)
        shards = {split: [_cache(path, source, cache_dir) for path in paths] for split, paths in shards.items()}
        vocabulary_path, folder = _cache(vocabulary_path, source, cache_dir), cache_dir
    missing = [path for paths in shards.values() for path in paths if not os.path.exists(path)]
    if missing:
        raise ManifestError(f"{source}: its manifest lists {len(missing)} shard files that do not exist "
                            f"(e.g. {missing[0]}); re-run the extraction")
    words = [w for w, _ in text.parse_vocabulary(storage.read_text(vocabulary_path))]
    if not words:
        raise ManifestError(f"{source} has an empty vocabulary (extract.min_word_count="
                            f"{manifest['vocabulary'].get('min_count')} is above every train word's count): a decoder "
                            "trained on it could only say nothing; re-extract with a lower extract.min_word_count")
    if len(words) != int(manifest["vocabulary"]["size"]):
        raise ManifestError(f"{vocabulary_path} holds {len(words)} words, the manifest says "
                            f"{manifest['vocabulary']['size']}: the folder mixes two extractions; re-run it")
    result = FeaturesFolder(source, folder, manifest, text.decoder_tokens(words), feature, shards)
    if not result.files("train") or not manifest["counts"]["train"]:
        raise ManifestError(f"{source} has no train records (records per split: {manifest['counts']}): extract "
                            "with --splits (or a caption file with splits) that assigns images to train")
    _check_first_record(result)
    return result


def check_manifest(manifest: Mapping, train_cfg, source: str = "features") -> str:
    """Returns the feature name the configured decoder consumes, or raises ManifestError saying what to do."""
    feature = train_cfg.features
    have = manifest.get("features", {})
    if feature not in have:
        hint = ("re-extract with --set extract.spatial=true, or train on pooled features with "
                "--set train.features=pooled") if feature == "spatial" else "re-extract the features"
        raise ManifestError(f"train.features={feature} but {source} has no {feature!r} features "
                            f"(the manifest lists: {', '.join(sorted(have)) or 'none'}): {hint}")
    info = have[feature]
    shape = list(info.get("shape", []))
    if len(shape) != _EXPECTED_RANK[feature] or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ManifestError(f"{source}: {feature} features have shape {shape}, expected "
                            f"{'[C]' if feature == 'pooled' else '[H, W, C]'} of positive ints")
    try:
        np.dtype(info["dtype"])
    except (TypeError, KeyError) as error:
        raise ManifestError(f"{source}: {feature} features have an unknown dtype {info.get('dtype')!r}") from error
    return feature


def _check_first_record(features: FeaturesFolder) -> None:
    """The manifest's shape and dtype must describe the bytes really stored (else every batch fails late)."""
    first = next(iter(tf.data.TFRecordDataset(features.files("train")[:1]).take(1)), None)
    if first is None:
        return
    raw = schema.parse_example_py(first.numpy())[features.feature]
    want = math.prod(features.shape) * np.dtype(features.info["dtype"]).itemsize
    if raw is None or len(raw) != want:
        raise ManifestError(
            f"{features.source}: a train record holds {0 if raw is None else len(raw)} bytes of {features.feature} "
            f"features, the manifest's shape {features.shape} x {features.info['dtype']} needs {want}: "
            "the shards and the manifest come from different extractions; re-run it")


def describe(features: FeaturesFolder, counts: Mapping[str, Optional[Counts]]) -> str:
    enc = features.manifest["encoder"]
    parts = [f"features {features.source}: encoder {enc.get('name')} ({enc.get('source')}), "
             f"{features.feature} {features.shape} {features.info['dtype']}, vocabulary {len(features.tokens)} tokens"]
    for split, c in counts.items():
        if c is not None:
            parts.append(f"{split}: {c.images} images, {c.examples} examples, "
                         f"{c.tokens_per_caption:.1f} target tokens per caption")
    return "; ".join(parts)

