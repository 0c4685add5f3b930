"""What every encoder family shares: the `Encoder` interface, its identity and its feature descriptions."""
from __future__ import annotations

import copy
from typing import Callable, Optional, Tuple

import numpy as np

from captioner.errors import InputError


class EncoderError(InputError, ValueError):
    """An encoder name, file or weights that cannot be loaded, or that differ from what the features were made with."""


class Encoder:
    """Base of every encoder family: images [N, h, w, 3] uint8 -> {"pooled", "spatial"} arrays."""

    input_size: Tuple[int, int]
    identity: dict
    _info: dict  # {"pooled": {...}, "spatial": {...}}, set by each family
    _num_threads: Optional[int] = None
    _reload: Optional[Callable] = None  # set by the registry: how a copy is made again from the identity

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
        # Travels (e.g. inside a Beam DoFn) as "load this identity again", never as model state.
        if self._reload is None:
            raise TypeError(f"encoder {self.identity.get('name')!r} was not loaded through the registry "
                            "(captioner.encoders.load_encoder), so it cannot be sent to workers")
        return self._reload, (self.identity, self._num_threads)


def make_identity(name: str, source: str, weights: str, weights_sha256: str, spatial: bool,
                  input_size: Tuple[int, int]) -> dict:
    """What the manifest and the bundle record about an encoder, enough to load the same one again."""
    return {"name": name, "source": source, "weights": weights, "weights_sha256": weights_sha256,
            "spatial": bool(spatial), "input_size": [int(input_size[0]), int(input_size[1])]}


def feature(shape, dtype: str, scale: Optional[float] = None, zero_point: int = 0) -> dict:
    """One `feature_info` entry (per-image shape, stored dtype, dequantization params)."""
    return {"shape": [int(d) for d in shape], "dtype": str(dtype),
            "scale": None if scale is None else float(scale), "zero_point": int(zero_point)}
