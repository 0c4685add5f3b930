"""The encoder registry: a name or a path -> a model that turns images into features.

Extraction and captioning both load their encoder here, so the features a
model was trained on and the features it is fed later come from one place.

    name or path          family (module)                       weights
    vgg16, inception_v3,  keras.applications (encoders_keras)   imagenet | none | PATH (local or gs://)
    mobilenet_v2,
    efficientnet_b0
    PATH.tflite           TFLite interpreter (encoders_tflite)  the file itself
    thumbnail             toy 8x8 map of mean colour and edges   none

Every encoder takes uint8 RGB batches already resized to `input_size` (by
captioner/images.py) and does its own preprocessing inside `encode`. Outputs
stay in the dtype the model produces; `feature_info()` says how to read them
and `identity` (name, source, weights and their sha256) goes into the manifest.
"""
from __future__ import annotations

import copy
import hashlib
from typing import Optional, Tuple

import numpy as np

THUMBNAIL = "thumbnail"
_THUMBNAIL_SIZE = (64, 64)
_THUMBNAIL_GRID = 8
_THUMBNAIL_CHANNELS = 5  # mean R, G, B, |d/dx|, |d/dy|


class Encoder:
    """Base of every encoder family: images [N, h, w, 3] uint8 -> {"pooled", "spatial"} arrays."""

    input_size: Tuple[int, int]
    identity: dict
    _info: dict  # {"pooled": {...}, "spatial": {...}}, set by each family
    _num_threads: Optional[int] = None

    def feature_info(self) -> dict:
        """Per-image `{shape, dtype, scale, zero_point}` of each output, as the manifest stores it."""
        return copy.deepcopy(self._info)

    def encode(self, images: np.ndarray) -> dict:
        raise NotImplementedError

    def _check_images(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        h, w = self.input_size
        if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (h, w, 3):
            raise ValueError(
                f"encoder {self.identity['name']!r} takes uint8 RGB batches of shape [N, {h}, {w}, 3], "
                f"got {images.dtype} {list(images.shape)}: resize images to input_size {list(self.input_size)} "
                "before encode()")
        return images

    def _empty(self) -> dict:
        """What `encode` returns for a batch of zero images."""
        return {name: np.zeros([0] + info["shape"], np.dtype(info["dtype"])) for name, info in self._info.items()}

    def __reduce__(self):
        # Pickles (e.g. inside a Beam DoFn) as "load this identity again", never as model state.
        return _reload, (self.identity, self._num_threads)


def make_identity(name: str, source: str, weights: str, weights_sha256: str, spatial: bool,
                  input_size: Tuple[int, int]) -> dict:
    return {"name": name, "source": source, "weights": weights, "weights_sha256": weights_sha256,
            "spatial": bool(spatial), "input_size": [int(input_size[0]), int(input_size[1])]}


def feature(shape, dtype: str, scale: Optional[float] = None, zero_point: int = 0) -> dict:
    """One `feature_info` entry (per-image shape, stored dtype, dequantization params)."""
    return {"shape": [int(d) for d in shape], "dtype": str(dtype),
            "scale": None if scale is None else float(scale), "zero_point": int(zero_point)}


class ThumbnailEncoder(Encoder):
    """A toy for the generated demo data, not for real photos: no download, no weights.

    The 64x64 image is pooled in 8x8 blocks to an 8x8x5 map (spatial, float32):
    the block's mean RGB in [0, 1], and its mean absolute horizontal and vertical
    brightness change, which tell a square's straight edges from a triangle's
    slanted ones and a circle's curve; pooled is that map flattened to 320
    floats. That is all synthetic shape-and-colour scenes need.
    """

    def __init__(self, spatial: bool = False):
        self.input_size = _THUMBNAIL_SIZE
        self.spatial = spatial
        grid = _THUMBNAIL_GRID
        self.identity = make_identity(THUMBNAIL, THUMBNAIL, "none",
                                      hashlib.sha256(b"thumbnail-v2").hexdigest(), spatial, self.input_size)
        self._info = {"pooled": feature([grid * grid * _THUMBNAIL_CHANNELS], "float32")}
        if spatial:
            self._info["spatial"] = feature([grid, grid, _THUMBNAIL_CHANNELS], "float32")

    def encode(self, images: np.ndarray) -> dict:
        images = self._check_images(images)
        if len(images) == 0:
            return self._empty()
        n, (h, w), grid = len(images), self.input_size, _THUMBNAIL_GRID
        pixels = images.astype(np.float32) / 255.0
        gray = pixels.mean(axis=3)
        dx = np.abs(np.diff(gray, axis=2, append=gray[:, :, -1:]))
        dy = np.abs(np.diff(gray, axis=1, append=gray[:, -1:, :]))
        channels = np.concatenate([pixels, dx[..., None], dy[..., None]], axis=3)
        blocks = channels.reshape(n, grid, h // grid, grid, w // grid, _THUMBNAIL_CHANNELS)
        spatial_map = blocks.mean(axis=(2, 4)).astype(np.float32)
        out = {"pooled": spatial_map.reshape(n, -1)}
        if self.spatial:
            out["spatial"] = spatial_map
        return out


def _keras_apps() -> dict:
    from captioner import encoders_keras  # imported late: it builds on Encoder, defined above
    return encoders_keras.APPS


def load_encoder(name_or_path: str, weights: str = "none", spatial: bool = False,
                 num_threads: Optional[int] = None) -> Encoder:
    """Loads an encoder by registry name or from a `.tflite` path (see `describe_encoders()`).

    `weights` applies to the keras.applications names: "imagenet" (downloaded by
    Keras), "none" (random, seeded, reproducible) or a weights file path, local
    or gs://. A TFLite file carries its own weights ("file"); thumbnail has none.
    `num_threads` sets the TFLite interpreter's threads, or TensorFlow's op threads
    for a Keras model when this process has not run TensorFlow yet (default: all cores).
    """
    name = str(name_or_path)
    if name.lower().endswith(".tflite"):
        if weights not in ("none", "file"):
            raise ValueError(f"weights={weights!r} given for TFLite model {name}: a .tflite file carries "
                             "its own weights; leave weights at 'none' (or 'file')")
        from captioner import encoders_tflite
        encoder = encoders_tflite.TFLiteEncoder(name, spatial=spatial, num_threads=num_threads)
    elif name == THUMBNAIL:
        if weights != "none":
            raise ValueError(f"the {THUMBNAIL} encoder has no weights; got weights={weights!r}, use 'none'")
        encoder = ThumbnailEncoder(spatial=spatial)
    elif name in _keras_apps():
        from captioner import encoders_keras
        if num_threads:
            encoders_keras.limit_tensorflow_threads(num_threads)
        encoder = encoders_keras.KerasEncoder(name, weights=weights, spatial=spatial)
    else:
        raise ValueError(f"unknown encoder {name!r}; accepted are a registry name or a path ending in "
                         f".tflite:\n{describe_encoders()}")
    encoder._num_threads = num_threads
    return encoder


def encoder_from_identity(identity: dict, num_threads: Optional[int] = None) -> Encoder:
    """Loads the encoder a manifest or model bundle names, and checks its weights are the same ones."""
    missing = [k for k in ("source", "weights", "weights_sha256", "spatial") if k not in identity]
    if missing:
        raise ValueError(f"encoder identity {identity!r} lacks {missing}: it should come from Encoder.identity")
    weights = "none" if identity["weights"] == "file" else identity["weights"]
    encoder = load_encoder(identity["source"], weights=weights, spatial=bool(identity["spatial"]),
                           num_threads=num_threads)
    have, want = encoder.identity["weights_sha256"], identity["weights_sha256"]
    if have != want:
        raise ValueError(
            f"encoder {identity['source']!r} (weights {identity['weights']!r}) now has weights sha256 {have}, "
            f"but the features/model were made with sha256 {want}: point at the same weights that were "
            "used for extraction, or re-extract the features")
    return encoder


def _reload(identity: dict, num_threads: Optional[int]) -> Encoder:
    return encoder_from_identity(identity, num_threads=num_threads)


def describe_encoders() -> str:
    """One line per registry entry (for --help texts)."""
    lines = [f"  {name:<16}{app.summary}" for name, app in _keras_apps().items()]
    lines.append(f"  {'PATH.tflite':<16}TFLite model (local or gs://), input [1,h,w,3] uint8/int8/float32; "
                 "pooled = its output as a vector, spatial = its last HxWxC map; weights: the file")
    lines.append(f"  {THUMBNAIL:<16}toy for the generated demo data, not real photos: 64x64 -> spatial 8x8x3 "
                 "mean RGB in [0,1], pooled 192 float32; weights: none")
    return "\n".join(lines)
