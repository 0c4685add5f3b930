"""The built-in `thumbnail` encoder: a toy for the generated demo data, no download, no weights."""
from __future__ import annotations

import hashlib

import numpy as np

from captioner.encoders.base import Encoder, feature, make_identity

NAME = "thumbnail"
_SIZE = (64, 64)
_GRID = 8
_CHANNELS = 5  # mean R, G, B, |d/dx|, |d/dy|
SUMMARY = (f"toy for the generated demo data, not real photos: 64x64 -> spatial {_GRID}x{_GRID}x{_CHANNELS} "
           f"per 8x8 block (mean RGB in [0,1], mean |d/dx| and |d/dy| of brightness), pooled "
           f"{_GRID * _GRID * _CHANNELS} float32 (the map flattened); weights: none")


class ThumbnailEncoder(Encoder):
    """The 64x64 image pooled in 8x8 blocks to an 8x8x5 map (spatial, float32).

    Per block: the mean RGB in [0, 1], and the mean absolute horizontal and
    vertical brightness change, which tell a square's straight edges from a
    triangle's slanted ones and a circle's curve; pooled is that map flattened
    to 320 floats. That is all synthetic shape-and-colour scenes need.
    """

    _untrainable = ("it is a fixed computation without weights; for a trainable encoder use a .keras file "
                    "(e.g. from `python -m captioner.encoders.from_tflite IN.tflite OUT.keras`) or a "
                    "keras.applications name")

    def __init__(self, spatial: bool = False):
        self.input_size = _SIZE
        self.spatial = spatial
        self.identity = make_identity(NAME, NAME, "none", hashlib.sha256(b"thumbnail-v2").hexdigest(), spatial,
                                      self.input_size, "pixels / 255, 8x8 block means")
        self._info = {"pooled": feature([_GRID * _GRID * _CHANNELS], "float32")}
        if spatial:
            self._info["spatial"] = feature([_GRID, _GRID, _CHANNELS], "float32")

    def encode(self, images: np.ndarray) -> dict:
        images = self._check_images(images)
        if len(images) == 0:
            return self._empty()
        n, (h, w) = len(images), self.input_size
        pixels = images.astype(np.float32) / 255.0
        gray = pixels.mean(axis=3)
        dx = np.abs(np.diff(gray, axis=2, append=gray[:, :, -1:]))
        dy = np.abs(np.diff(gray, axis=1, append=gray[:, -1:, :]))
        channels = np.concatenate([pixels, dx[..., None], dy[..., None]], axis=3)
        blocks = channels.reshape(n, _GRID, h // _GRID, _GRID, w // _GRID, _CHANNELS)
        spatial_map = blocks.mean(axis=(2, 4)).astype(np.float32)
        out = {"pooled": spatial_map.reshape(n, -1)}
        if self.spatial:
            out["spatial"] = spatial_map
        return out
