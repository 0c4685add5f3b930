"""What every encoder family shares: the `Encoder` interface, its identity and its feature descriptions."""
from __future__ import annotations

import copy
import hashlib
import re
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

import numpy as np

from captioner.errors import InputError

if TYPE_CHECKING:
    import keras


class EncoderError(InputError, ValueError):
    """An encoder name, file or weights that cannot be loaded, or that differ from what the features were made with."""


class Encoder:
    """Base of every encoder family: images [N, h, w, 3] uint8 -> {"pooled", "spatial"} arrays."""

    input_size: Tuple[int, int]
    identity: dict
    _info: dict  # {"pooled": {...}, "spatial": {...}}, set by each family
    _num_threads: Optional[int] = None
    _reload: Optional[Callable] = None  # set by the registry: how a copy is made again from the identity
    _untrainable = "it has no Keras model"  # why a family cannot be trained, and which encoder can

    def feature_info(self) -> dict:
        """Per-image `{shape, dtype, scale, zero_point}` of each output, as the manifest stores it."""
        return copy.deepcopy(self._info)

    def encode(self, images: np.ndarray) -> dict:
        raise NotImplementedError

    def trainable_model(self) -> keras.Model:
        """A Keras model to fine-tune this encoder with a decoder.

        It maps float32 pixels 0..255 [B, h, w, 3] to the encoder's feature map
        (rank 4, the "spatial" output), or to its vector (rank 2) when it has no
        map, with the preprocessing inside. Its weights can be trained, and saved
        with `model.save("x.keras")` it loads back through the `.keras` encoder
        family (load_encoder("x.keras")) and encodes the same.
        """
        raise EncoderError(f"encoder {self.identity['name']!r} cannot be trained: {self._untrainable}")

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


class GraphEncoder(Encoder):
    """An encoder whose forward pass is one `tf.function` (`self._infer`) over a whole uint8 batch, so TensorFlow
    runs it on the GPU when there is one (the keras.applications and `.keras` families)."""

    _infer: Callable

    def encode(self, images: np.ndarray) -> dict:
        images = self._check_images(images)
        if len(images) == 0:
            return self._empty()
        return {key: value.numpy() for key, value in self._infer(images).items()}


def make_identity(name: str, source: str, weights: str, weights_sha256: str, spatial: bool,
                  input_size: Tuple[int, int], preprocessing: str) -> dict:
    """What the manifest and the bundle record about an encoder, enough to load the same one again.

    `preprocessing` says in a few words what the pixels go through before the
    model (for people reading a manifest; nothing checks it, and older
    manifests without it still load).
    """
    return {"name": name, "source": source, "weights": weights, "weights_sha256": weights_sha256,
            "spatial": bool(spatial), "input_size": [int(input_size[0]), int(input_size[1])],
            "preprocessing": preprocessing}


def model_weights_sha256(model: keras.Model) -> str:
    """sha256 over every weight array's bytes, in `get_weights()` order: the same weights re-saved keep it."""
    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


_BLOCK = re.compile(r"^[A-Za-z]+_?\d+")


def encoder_blocks(model: keras.Model) -> List[List[str]]:
    """Names of the layers with weights, grouped into blocks in model order, so a trainer can unfreeze the top N.

    A block is the leading name token `^[A-Za-z]+_?\\d+`: block13_pointwise -> block13,
    keras MobileNetV2's block_16_project -> block_16, Conv_1_bn -> Conv_1. A layer
    whose name does not match joins the previous block (the first one when none
    came before it).
    """
    blocks: Dict[str, List[str]] = {}
    leading: List[str] = []  # unmatched names before the first block
    current = None
    for layer in model.layers:
        if not layer.weights:
            continue
        match = _BLOCK.match(layer.name)
        current = match.group(0) if match else current
        (blocks.setdefault(current, []) if current else leading).append(layer.name)
    grouped = list(blocks.values()) or [[]]
    grouped[0] = leading + grouped[0]
    return [block for block in grouped if block]


def feature(shape, dtype: str, scale: Optional[float] = None, zero_point: int = 0) -> dict:
    """One `feature_info` entry (per-image shape, stored dtype, dequantization params)."""
    return {"shape": [int(d) for d in shape], "dtype": str(dtype),
            "scale": None if scale is None else float(scale), "zero_point": int(zero_point)}
