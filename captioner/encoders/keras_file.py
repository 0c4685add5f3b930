"""A Keras model file (`PATH.keras`, local or gs://) as an encoder: trainable, and run on a GPU when there is one.

The convention such a file follows (from_tflite.py writes them, and so does
`model.save("x.keras")` of any encoder's `trainable_model()`):
  input   one image input [None, h, w, 3] taking float RGB pixels 0..255; the
          model does its own preprocessing (e.g. a first Rescaling layer);
  output  one tensor: a map [H, W, C] ("spatial" is the map, "pooled" its mean
          over the H x W positions) or a vector [C] ("pooled" only).
The file is loaded with `safe_mode=True`: built-in layers and keras.ops only,
no Lambda layers or custom code. Its identity's sha256 is over the weight arrays
(not the file bytes), so the same weights saved again keep the same identity.
The model computes in float32; its outputs are handed out (and stored) as
float16: half the bytes of a 7x7x1024 map per record (100 KB), at a relative
rounding of 5e-4, far below what separates two images' features.
"""
from __future__ import annotations

import os
import tempfile

import keras
import tensorflow as tf

from captioner import storage
from captioner.encoders.base import EncoderError, GraphEncoder, feature, make_identity, model_weights_sha256

SUMMARY = ("Keras model file (local or gs://), float RGB 0..255 in at its input size, preprocessing inside; "
           "output a HxWxC map (spatial; pooled = its mean) or a vector (pooled only), stored as float16; "
           "weights: the file")
STORED_DTYPE = "float16"


def _load(path: str) -> keras.Model:
    """The model in a local or gs:// .keras file, loaded with safe_mode (no code runs from the file)."""
    if not storage.exists(path):
        raise EncoderError(f"Keras model {path!r} does not exist: give a .keras file path, local or gs://")
    with tempfile.TemporaryDirectory(prefix="keras-encoder-") as folder:
        local = path
        if storage.is_remote(path):
            local = os.path.join(folder, os.path.basename(path))
            storage.copy_file(path, local)
        try:
            return keras.saving.load_model(local, safe_mode=True, compile=False)
        except (ValueError, TypeError, KeyError, OSError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise EncoderError(f"{path} is not a Keras model file that loads with safe_mode=True (built-in layers "
                               f"only, no Lambda or custom code): {message}") from error


def _preprocessing(model: keras.Model) -> str:
    """What the model does to the pixels first, as the identity records it."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Rescaling):
            config = layer.get_config()
            return f"inside the model: Rescaling(scale={config['scale']}, offset={config['offset']})"
    return "inside the model (float RGB 0..255 in)"


class KerasFileEncoder(GraphEncoder):
    """One saved Keras model, run through a `tf.function` on whole uint8 batches."""

    def __init__(self, path: str, spatial: bool = False):
        model = _load(path)
        inputs, outputs = model.inputs, model.outputs
        in_shape = tuple(inputs[0].shape) if len(inputs) == 1 else ()
        out_shape = tuple(outputs[0].shape) if len(outputs) == 1 else ()
        if len(in_shape) != 4 or in_shape[3] != 3 or None in in_shape[1:] or len(out_shape) not in (2, 4):
            raise EncoderError(f"{path} maps {[list(t.shape) for t in inputs]} to {[list(t.shape) for t in outputs]}; "
                               "an encoder file needs one input [None, h, w, 3] (RGB 0..255) and one output, a "
                               "map [None, H, W, C] or a vector [None, C]")
        if spatial and len(out_shape) == 2:
            raise EncoderError(f"{path} outputs a vector {list(out_shape[1:])}, which has no spatial map; load it "
                               "with spatial=False (extract.spatial: false) or use a model that outputs its map")
        self._model = model
        self.spatial = spatial
        self.input_size = (int(in_shape[1]), int(in_shape[2]))
        pooled = [out_shape[3]] if len(out_shape) == 4 else [out_shape[1]]
        self._info = {"pooled": feature(pooled, STORED_DTYPE)}
        if spatial:
            self._info["spatial"] = feature(out_shape[1:], STORED_DTYPE)
        self.identity = make_identity(os.path.basename(path), path, "file", model_weights_sha256(model), spatial,
                                      self.input_size, _preprocessing(model))
        h, w = self.input_size
        self._infer = tf.function(self._forward, input_signature=[tf.TensorSpec([None, h, w, 3], tf.uint8)])

    def _forward(self, images: tf.Tensor) -> dict:
        output = tf.cast(self._model(tf.cast(images, tf.float32), training=False), tf.float32)
        outputs = {"pooled": output} if output.shape.rank == 2 else {"pooled": tf.reduce_mean(output, axis=[1, 2])}
        if self.spatial:
            outputs["spatial"] = output
        return {key: tf.cast(value, STORED_DTYPE) for key, value in outputs.items()}

    def trainable_model(self) -> keras.Model:
        """The loaded model itself: pixels 0..255 -> its map or vector (see Encoder.trainable_model)."""
        return self._model
