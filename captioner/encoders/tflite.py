"""TFLite models as encoders, from a `.tflite` path (local or gs://).

Input: the model's single [1, h, w, 3] input. Pixels go in as the model's
input dtype expects them:
  uint8    raw RGB 0..255 (quantized image models fold their (p - 128) / 128
           input scaling into the input's quantization parameters);
  int8     RGB - 128 (the int8 twin of the above);
  float32  RGB scaled to [-1, 1] (p / 127.5 - 1), as MobileNet and Inception expect.
Output: "pooled" is the model's (first) output flattened to a vector, stored as
produced; "spatial" (on request) is the last 4-D activation with H, W > 1,
read with `experimental_preserve_all_tensors`. Quantized outputs stay
quantized; their scale and zero point go into `feature_info()`.

The interpreter is built for batch 1; `encode` resizes its input to the batch
size so that a batch is one invoke, and falls back to one invoke per image for
models whose graph fixes the batch at 1 (e.g. a Reshape to [1, 1001]).
"""
from __future__ import annotations

import hashlib
import os
import threading
import warnings
from typing import Optional

import numpy as np
import tensorflow as tf

from captioner import quiet, storage
from captioner.encoders.base import Encoder, EncoderError, feature, make_identity

_INPUT_DTYPES = {np.uint8: "uint8 (raw RGB 0..255)", np.int8: "int8 (RGB - 128)",
                 np.float32: "float32 (RGB scaled to [-1, 1])"}
_PREPROCESSING = {np.uint8: "the model's input quantization (uint8 raw RGB)",
                  np.int8: "RGB - 128, then the model's input quantization (int8)",
                  np.float32: "pixels / 127.5 - 1 (float32 input)"}


def _quantization(detail: dict) -> tuple:
    scale, zero_point = detail["quantization"]
    return (float(scale), int(zero_point)) if scale else (None, 0)


class TFLiteEncoder(Encoder):
    _untrainable = ("a TFLite interpreter cannot train; rebuild it as a float Keras model with "
                    "`python -m captioner.encoders.from_tflite IN.tflite OUT.keras` and use OUT.keras")

    def __init__(self, path: str, spatial: bool = False, num_threads: Optional[int] = None):
        if not storage.exists(path):
            raise EncoderError(f"TFLite model {path!r} does not exist: give a .tflite file path, local or gs://")
        self._path = path
        self._content = storage.read_bytes(path)
        self._threads = num_threads or os.cpu_count() or 1
        self.spatial = spatial
        self._lock = threading.Lock()  # an interpreter serves one invoke at a time
        self._interpreter = self._new_interpreter()
        self._batch, self._can_batch = 1, True

        inputs = self._interpreter.get_input_details()
        shape = [int(d) for d in inputs[0]["shape"]] if inputs else []
        if len(inputs) != 1 or len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise EncoderError(f"TFLite model {path} has input(s) {[list(d['shape']) for d in inputs]}; "
                             "an image encoder needs exactly one input of shape [1, h, w, 3]")
        self._input = inputs[0]
        if self._input["dtype"] not in _INPUT_DTYPES:
            raise EncoderError(f"TFLite model {path} takes {np.dtype(self._input['dtype']).name} input; "
                             f"accepted input dtypes are {', '.join(_INPUT_DTYPES.values())}")
        self.input_size = (shape[1], shape[2])

        self._output = self._interpreter.get_output_details()[0]
        out_shape = [int(d) for d in self._output["shape"]]
        self._info = {"pooled": feature([int(np.prod(out_shape[1:]))], np.dtype(self._output["dtype"]).name,
                                        *_quantization(self._output))}
        if spatial:
            self._spatial = self._find_spatial_map()
            self._info["spatial"] = feature(self._spatial["shape"][1:], np.dtype(self._spatial["dtype"]).name,
                                            *_quantization(self._spatial))
        sha = hashlib.sha256(self._content).hexdigest()
        self.identity = make_identity(os.path.basename(path), path, "file", sha, spatial, self.input_size,
                                      _PREPROCESSING[self._input["dtype"]])

    def _new_interpreter(self) -> tf.lite.Interpreter:
        with warnings.catch_warnings():
            # tf.lite.Interpreter warns that it moves to ai_edge_litert, and that keeping every
            # tensor (needed to read the spatial map) costs memory; both are known and accepted.
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            warnings.filterwarnings("ignore", message=r"(?s).*experimental_preserve_all_tensors")
            try:
                with quiet.filtered_stderr():  # "Created TensorFlow Lite XNNPACK delegate" per interpreter
                    interpreter = tf.lite.Interpreter(model_content=self._content, num_threads=self._threads,
                                                      experimental_preserve_all_tensors=self.spatial)
                    interpreter.allocate_tensors()
            except ValueError as error:
                raise EncoderError(f"{self._path} is not a readable TFLite model: {error}") from error
        return interpreter

    def _find_spatial_map(self) -> dict:
        """The last op output (in execution order) shaped [1, H, W, C] with H, W > 1."""
        details = {d["index"]: d for d in self._interpreter.get_tensor_details()}
        for op in reversed(self._interpreter._get_ops_details()):  # no public API lists ops in order
            for index in reversed(list(op["outputs"])):
                shape = list(details[index]["shape"]) if index in details else []
                if len(shape) == 4 and shape[0] == 1 and shape[1] > 1 and shape[2] > 1:
                    return details[index]
        raise EncoderError(f"TFLite model {self._path} has no [1, H, W, C] activation with H, W > 1 to use "
                         "as the spatial map; load it with spatial=False")

    def _to_input(self, images: np.ndarray) -> np.ndarray:
        dtype = self._input["dtype"]
        if dtype == np.uint8:
            return images
        if dtype == np.int8:
            return (images.astype(np.int16) - 128).astype(np.int8)
        return images.astype(np.float32) / 127.5 - 1.0

    def _use_batch(self, n: int) -> bool:
        """Resizes the interpreter to batch n; False when the model cannot take it (then batch stays 1)."""
        if n == self._batch:
            return True
        if not self._can_batch:
            return False
        try:
            self._interpreter.resize_tensor_input(self._input["index"], [n, *self.input_size, 3])
            self._interpreter.allocate_tensors()
            checked = [self._output] + ([self._spatial] if self.spatial else [])
            if any(self._interpreter.get_tensor(d["index"]).shape[0] != n for d in checked):
                raise RuntimeError(f"an output does not follow the batch size {n}")
            self._batch = n
            return True
        except (RuntimeError, ValueError):
            self._can_batch = False  # a graph with batch 1 built in: one invoke per image from now on
            self._interpreter, self._batch = self._new_interpreter(), 1
            return n == 1

    def _invoke(self, batch: np.ndarray) -> dict:
        interpreter = self._interpreter
        interpreter.set_tensor(self._input["index"], batch)
        interpreter.invoke()
        out = {"pooled": interpreter.get_tensor(self._output["index"]).reshape(len(batch), -1)}
        if self.spatial:
            out["spatial"] = interpreter.get_tensor(self._spatial["index"])
        return out

    def encode(self, images: np.ndarray) -> dict:
        images = self._check_images(images)
        if len(images) == 0:
            return self._empty()
        pixels = self._to_input(images)
        with self._lock:
            if self._use_batch(len(pixels)):
                return self._invoke(pixels)
            self._use_batch(1)
            parts = [self._invoke(pixels[i:i + 1]) for i in range(len(pixels))]
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
