"""Reads a TFLite graph as plain data: its ops in execution order, their options and float weights.

The converter (`from_tflite.py`) rebuilds a Keras model from this, so it needs
what the interpreter hides: each op's options (strides, padding, fused
activation), read from the flatbuffer with TensorFlow's own generated schema,
and each weight tensor dequantized to float32 with its quantization parameters
(per tensor or per channel), so the float model computes what the uint8 one
approximates.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as tflite_schema

from captioner import quiet
from captioner.encoders.base import EncoderError

ACTIVATIONS = {0: None, 1: "relu", 3: "relu6"}  # TFLite ActivationFunctionType -> Keras activation
PADDINGS = {0: "same", 1: "valid"}               # TFLite Padding -> Keras padding (TF SAME is Keras "same")


@dataclasses.dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    shape: List[int]
    dtype: np.dtype
    scales: np.ndarray       # empty when the tensor is not quantized
    zero_points: np.ndarray
    axis: int                # the quantized dimension of per-channel scales


@dataclasses.dataclass(frozen=True)
class Op:
    kind: str                # e.g. "CONV_2D", as the interpreter names it
    inputs: List[int]        # tensor indices (-1: an optional input left out)
    outputs: List[int]
    options: dict            # the flatbuffer's builtin options, e.g. {"strideW": 2, "padding": 0, ...}


class Graph:
    """One TFLite model's first subgraph: tensors by index, ops in execution order, constant values."""

    def __init__(self, content: bytes, source: str):
        self.source = source
        self._interpreter = _interpreter(content, source)
        self.tensors: Dict[int, Tensor] = {d["index"]: _tensor(d) for d in self._interpreter.get_tensor_details()}
        details = self._interpreter._get_ops_details()  # no public API lists ops in execution order
        options = _op_options(content, len(details))
        self.ops = [Op(d["op_name"], [int(i) for i in d["inputs"]], [int(i) for i in d["outputs"]], options[d["index"]])
                    for d in details]
        inputs = self._interpreter.get_input_details()
        self.input: Optional[Tensor] = self.tensors[inputs[0]["index"]] if len(inputs) == 1 else None

    def value(self, index: int) -> np.ndarray:
        """A constant tensor's stored values (e.g. uint8 weights, int32 biases)."""
        return self._interpreter.get_tensor(index)

    def weights(self, index: int) -> np.ndarray:
        """A uint8 weight tensor dequantized: (q - zero_point) * scale, per tensor or along its channel axis."""
        tensor = self.tensors[index]
        values = self.value(index).astype(np.float32)
        if tensor.scales.size == 0:
            return values
        return (values - _along(tensor, tensor.zero_points)) * _along(tensor, tensor.scales)

    def bias(self, index: int, input_index: int, weights_index: int) -> np.ndarray:
        """An int32 bias dequantized with scale = input scale x weight scale (per output channel)."""
        values = self.value(index).astype(np.float32)
        scale_in, scale_w = self.tensors[input_index].scales, self.tensors[weights_index].scales
        if scale_in.size == 0 or scale_w.size == 0:
            return values
        return values * (scale_in[0] * scale_w).astype(np.float32)


def _interpreter(content: bytes, source: str) -> tf.lite.Interpreter:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        try:
            with quiet.filtered_stderr():
                # Without the default (XNNPACK) delegate, ops stay one by one, as the flatbuffer lists them.
                interpreter = tf.lite.Interpreter(
                    model_content=content,
                    experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
                interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise EncoderError(f"{source} is not a readable TFLite model: {error}") from error
    return interpreter


def _tensor(detail: dict) -> Tensor:
    quantization = detail["quantization_parameters"]
    return Tensor(int(detail["index"]), detail["name"], [int(d) for d in detail["shape"]], np.dtype(detail["dtype"]),
                  np.asarray(quantization["scales"], np.float32), np.asarray(quantization["zero_points"], np.float32),
                  int(quantization["quantized_dimension"]))


def _along(tensor: Tensor, values: np.ndarray) -> np.ndarray:
    """Per-channel parameters shaped to broadcast along the tensor's quantized axis."""
    if values.size == 1:
        return values.reshape([])
    shape = [1] * len(tensor.shape)
    shape[tensor.axis] = -1
    return values.reshape(shape)


def _op_options(content: bytes, count: int) -> List[dict]:
    """Each operator's builtin options as a dict, in the flatbuffer's (= the interpreter's) op order."""
    model = tflite_schema.ModelT.InitFromObj(tflite_schema.Model.GetRootAs(content, 0))
    operators = model.subgraphs[0].operators or []
    if len(operators) != count:
        raise EncoderError(f"the TFLite graph lists {len(operators)} operators but the interpreter runs {count}")
    return [dict(vars(op.builtinOptions)) if op.builtinOptions is not None else {} for op in operators]
