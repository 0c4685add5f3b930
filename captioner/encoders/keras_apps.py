"""keras.applications CNNs as encoders (the registry in captioner/encoders/registry.py names them).

Each app is built once per Encoder as one Keras model with a "pooled" output
(and a "spatial" one when asked) and run through a `tf.function` on the whole
batch; the app's own `preprocess_input` runs inside it, on the uint8 pixels.
`trainable_model()` builds the app again with that preprocessing as keras.ops
inside one flat functional model (the layers keep their names, e.g. block_16_*),
which saves as a `.keras` file that the `.keras` encoder family loads.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from typing import Callable, Optional, Tuple

import keras
import tensorflow as tf

from captioner import storage
from captioner.encoders.base import EncoderError, GraphEncoder, feature, make_identity, model_weights_sha256


@dataclasses.dataclass(frozen=True)
class KerasApp:
    constructor: Callable          # keras.applications.X
    preprocess: Callable           # its preprocess_input: float pixels 0..255 RGB -> model input
    input_size: Tuple[int, int]
    include_top: bool              # weights files must match: with the classifier head (vgg16) or "notop"
    pooled_layer: Optional[str]    # a layer's output, or None for the global average of the spatial map
    spatial_layer: str
    preprocessing: str             # what preprocess does, for the identity
    summary: str


APPS = {
    "vgg16": KerasApp(
        keras.applications.VGG16, keras.applications.vgg16.preprocess_input, (224, 224), True,
        "fc2", "block5_pool", "vgg16.preprocess_input: RGB to BGR, minus the ImageNet channel means",
        "keras VGG16, 224x224, caffe BGR mean-subtracted; pooled fc2 4096 (as the classic Flickr8k "
        "tutorials), spatial block5_pool 7x7x512; weights imagenet|none|PATH (full model, with top)"),
    "inception_v3": KerasApp(
        keras.applications.InceptionV3, keras.applications.inception_v3.preprocess_input, (299, 299), False,
        None, "mixed10", "inception_v3.preprocess_input: pixels / 127.5 - 1",
        "keras InceptionV3, 299x299, pixels to [-1,1]; pooled 2048 global average, spatial mixed10 "
        "8x8x2048; weights imagenet|none|PATH (notop)"),
    "mobilenet_v2": KerasApp(
        keras.applications.MobileNetV2, keras.applications.mobilenet_v2.preprocess_input, (224, 224), False,
        None, "out_relu", "mobilenet_v2.preprocess_input: pixels / 127.5 - 1",
        "keras MobileNetV2 1.0, 224x224, pixels to [-1,1]; pooled 1280 global average, spatial out_relu "
        "7x7x1280; weights imagenet|none|PATH (notop)"),
    "efficientnet_b0": KerasApp(
        keras.applications.EfficientNetB0, keras.applications.efficientnet.preprocess_input, (224, 224), False,
        None, "top_activation", "inside the model (EfficientNetB0's own Rescaling and Normalization)",
        "keras EfficientNetB0, 224x224, rescales inside the model; pooled 1280 global average, spatial "
        "top_activation 7x7x1280; weights imagenet|none|PATH (notop)"),
}


def _build_base(name: str, app: KerasApp, weights: str) -> Tuple[keras.Model, Optional[str]]:
    """The keras.applications model with `weights` ("imagenet", "none" or a file) and the file's sha256."""
    shape = (*app.input_size, 3)
    if weights == "none":
        keras.utils.set_random_seed(0)  # the same random weights on every load (reseeds globally)
        return app.constructor(weights=None, include_top=app.include_top, input_shape=shape), None
    if weights == "imagenet":
        try:
            return app.constructor(weights="imagenet", include_top=app.include_top, input_shape=shape), None
        except Exception as error:  # noqa: BLE001 - Keras's download raises a bare Exception for network errors
            raise EncoderError(f"could not download the ImageNet weights of {name!r} ({str(error).splitlines()[0]}): "
                               "without network access pass a weights file (--weights PATH.h5, local or gs://), or "
                               "use a .keras or .tflite encoder file (python -m captioner.encoders.from_tflite "
                               "rebuilds the shipped MobileNets)") from error
    if not storage.exists(weights):
        raise EncoderError(f"weights {weights!r} for encoder {name!r} are neither 'imagenet', 'none' "
                         "nor an existing weights file (local path or gs://)")
    tmp_dir, local = None, weights
    try:
        if storage.is_remote(weights):
            tmp_dir = tempfile.mkdtemp(prefix="encoder-weights-")
            local = os.path.join(tmp_dir, os.path.basename(weights))  # keep the suffix Keras reads
            with open(local, "wb") as handle:
                handle.write(storage.read_bytes(weights))
        sha = storage.file_sha256(local)
        try:
            return app.constructor(weights=local, include_top=app.include_top, input_shape=shape), sha
        except (ValueError, OSError) as error:
            top = "with the classifier head" if app.include_top else "without the classifier head (notop)"
            raise EncoderError(f"could not load weights {weights!r} into {name!r}: it needs a Keras weights "
                             f"file (.h5 or .weights.h5) of that model {top}; Keras said: {error}") from error
    finally:
        if tmp_dir:
            shutil.rmtree(tmp_dir, ignore_errors=True)


class KerasEncoder(GraphEncoder):
    """One keras.applications model per encoder, with a "pooled" (and, on request, "spatial") output."""

    def __init__(self, name: str, weights: str = "none", spatial: bool = False):
        app = APPS[name]
        self._app = app
        self.input_size = app.input_size
        self.spatial = spatial
        self._base, file_sha = _build_base(name, app, weights)
        outputs = self._outputs(self._base)
        self._model = keras.Model(self._base.input, outputs, name=f"{name}_encoder")
        self._info = {key: feature(tensor.shape[1:], tensor.dtype) for key, tensor in outputs.items()}
        sha = file_sha or model_weights_sha256(self._model)
        self.identity = make_identity(name, name, weights, sha, spatial, self.input_size, app.preprocessing)
        h, w = self.input_size
        self._infer = tf.function(self._forward, input_signature=[tf.TensorSpec([None, h, w, 3], tf.uint8)])

    def _outputs(self, base: keras.Model) -> dict:
        """{"pooled"[, "spatial"]}: the app's tensors that this encoder outputs."""
        spatial_map = base.get_layer(self._app.spatial_layer).output
        if self._app.pooled_layer:
            pooled = base.get_layer(self._app.pooled_layer).output
        else:
            pooled = keras.layers.GlobalAveragePooling2D(name="pooled")(spatial_map)
        return {"pooled": pooled, "spatial": spatial_map} if self.spatial else {"pooled": pooled}

    def trainable_model(self) -> keras.Model:
        """Pixels 0..255 -> preprocess (keras.ops) -> the app up to its spatial map (or pooled vector); see Encoder."""
        pixels = keras.Input((*self.input_size, 3), name="pixels")
        full = self._app.constructor(weights=None, include_top=self._app.include_top,
                                     input_tensor=self._app.preprocess(pixels))
        full.set_weights(self._base.get_weights())  # the same architecture: the weights line up one by one
        output = self._outputs(full)["spatial" if self.spatial else "pooled"]
        return keras.Model(pixels, output, name=f"{self._base.name}_trainable")

    def _forward(self, images: tf.Tensor) -> dict:
        pixels = self._app.preprocess(tf.cast(images, tf.float32))
        return self._model(pixels, training=False)
