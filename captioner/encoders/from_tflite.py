"""Rebuilds a uint8-quantized TFLite MobileNet as a float32 Keras model that can be trained and run on a GPU.

    python -m captioner.encoders.from_tflite mobilenet_v1.tflite mobilenet_v1.keras
    python -m captioner.encoders.from_tflite mobilenet_v2.tflite mobilenet_v2_classifier.keras --classifier

Why: the shipped TFLite encoders are the only offline ImageNet weights, but an
interpreter can neither train them nor use a GPU. Their weights dequantized
(uint8 -> float, int32 biases with scale = input scale x weight scale) give a
plain Keras model that computes the same features (cosine ~0.998 with the
TFLite map) and can be fine-tuned with the decoder.

The model takes float RGB pixels 0..255 (its first layer, `preprocess`, is the
TFLite input quantization as a Rescaling) and outputs the last 7x7 map, or with
--classifier the 1001 ImageNet logits. Its layers are named block{N}_{part}
(block0_conv, block1_depthwise, ...), so a trainer can unfreeze the top N
blocks. Use OUT.keras as an encoder (--encoder OUT.keras); it loads with
`keras.saving.load_model(OUT, safe_mode=True)` and needs nothing of this project.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from typing import List, Optional, Tuple

import keras
import numpy as np

from captioner import cli, storage
from captioner.encoders.base import EncoderError
from captioner.encoders.tflite_graph import ACTIVATIONS, PADDINGS, Graph, Op
from captioner.errors import UsageError

SUPPORTED = ("supports the MobileNet v1 and v2 TFLite graphs (uint8-quantized, 224x224 input, as in "
             "google-coral/test_data); for other models use a keras.applications encoder or your own .keras file")
_LETTERS = {"CONV_2D": "C", "DEPTHWISE_CONV_2D": "D", "ADD": "A", "AVERAGE_POOL_2D": "P", "RESHAPE": "R",
            "SOFTMAX": "S"}
_FAMILIES = {"MobileNet v1": r"C(?:DC){13}", "MobileNet v2": r"CDC(?:CDCA?){16}C"}  # the ops up to the 7x7 map
_HEAD = "PCR"  # average pool, 1x1 conv to the classes, reshape to logits (a softmax may follow)


def _refuse(graph: Graph, reason: str) -> EncoderError:
    return EncoderError(f"{graph.source} is not a graph this converter knows ({reason}); it {SUPPORTED}")


def _family(graph: Graph, classifier: bool) -> Tuple[str, int]:
    """(family name, number of ops up to the 7x7 feature map); refuses any other graph with one line."""
    unknown = sorted({op.kind for op in graph.ops} - set(_LETTERS))
    if unknown:
        raise _refuse(graph, f"op type {', '.join(unknown)}")
    tensor = graph.input
    if tensor is None or tensor.shape != [1, 224, 224, 3] or tensor.dtype != np.uint8 or tensor.scales.size != 1:
        found = "several inputs" if tensor is None else f"input {tensor.dtype.name} {tensor.shape}"
        raise _refuse(graph, f"{found}, not one quantized uint8 [1, 224, 224, 3] image")
    letters = "".join(_LETTERS[op.kind] for op in graph.ops)
    for family, features in _FAMILIES.items():
        match = re.fullmatch(f"({features})(P(?:CRS?)?)?", letters)
        if match:
            count = len(match.group(1))
            map_shape = graph.tensors[graph.ops[count - 1].outputs[0]].shape
            if map_shape[1:3] != [7, 7]:
                raise _refuse(graph, f"its last map is {map_shape[1:]}, not 7x7")
            if classifier and not (match.group(2) or "").startswith(_HEAD):
                raise EncoderError(f"--classifier: {graph.source} ({family}) has no classifier head to convert; "
                                   "leave --classifier out to convert its 7x7 feature map")
            return family, count
    raise _refuse(graph, f"its ops run {letters[:24]}... (C conv, D depthwise, A add, P pool), in an order "
                         "that is neither")


def _layer_names(letters: str, family: str, head: bool) -> List[str]:
    """block{N}_{part} per op: a depthwise (or v2's 1x1 expansion before it) starts a block; see the docstring."""
    names, block = [], 0
    for i, letter in enumerate(letters):
        before, after = (names[-1] if names else ""), letters[i + 1:i + 2]
        if i == 0:
            part = "conv"
        elif letter == "D":
            block += 0 if before.endswith("_expand") else 1
            part = "depthwise"
        elif letter == "C" and before.endswith("_depthwise"):
            part = "pointwise" if family.endswith("v1") else "project"
        elif letter == "C" and after == "D":
            block, part = block + 1, "expand"
        elif letter == "A":
            part = "add"
        else:  # v2's final 1x1 convolution to 1280 channels
            block, part = block + 1, "conv"
        names.append(f"block{block}_{part}")
    return names + ([f"block{block + 1}_{part}" for part in ("pool", "conv", "logits")] if head else [])


def _option(graph: Graph, table: dict, code: int, what: str):
    if code not in table:
        raise _refuse(graph, f"{what} code {code}")
    return table[code]


def _conv_layer(graph: Graph, op: Op, name: str) -> Tuple[keras.layers.Layer, list]:
    """Conv2D / DepthwiseConv2D with the TFLite op's strides, padding and fused activation, and float weights."""
    options, (source, weights_index) = op.options, op.inputs[:2]
    weights = graph.weights(weights_index)  # TFLite: conv [out, h, w, in], depthwise [1, h, w, in x multiplier]
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias = graph.bias(op.inputs[2], source, weights_index)
    else:  # an optional bias left out
        bias = np.zeros(graph.tensors[op.outputs[0]].shape[-1], np.float32)
    common = dict(kernel_size=weights.shape[1:3], strides=(options["strideH"], options["strideW"]),
                  padding=_option(graph, PADDINGS, options["padding"], "padding"),
                  activation=_option(graph, ACTIVATIONS, options["fusedActivationFunction"], "fused activation"),
                  dilation_rate=(options["dilationHFactor"], options["dilationWFactor"]), name=name)
    if op.kind == "CONV_2D":  # Keras kernel [h, w, in, out]
        return keras.layers.Conv2D(weights.shape[0], **common), [weights.transpose(1, 2, 3, 0), bias]
    channels = graph.tensors[source].shape[3]  # Keras depthwise kernel [h, w, in, multiplier]
    multiplier = weights.shape[3] // channels
    kernel = weights.reshape(*weights.shape[1:3], channels, multiplier)
    return keras.layers.DepthwiseConv2D(depth_multiplier=multiplier, **common), [kernel, bias]


def _layer(graph: Graph, op: Op, name: str) -> Tuple[keras.layers.Layer, list]:
    """The Keras layer for one op, and the weights to set once the model is built."""
    if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return _conv_layer(graph, op, name)
    if op.options.get("fusedActivationFunction"):
        raise _refuse(graph, f"a fused activation on {op.kind}")
    if op.kind == "ADD":
        return keras.layers.Add(name=name), []
    if op.kind == "AVERAGE_POOL_2D":
        options = op.options
        return keras.layers.AveragePooling2D((options["filterHeight"], options["filterWidth"]),
                                             strides=(options["strideH"], options["strideW"]),
                                             padding=_option(graph, PADDINGS, options["padding"], "padding"),
                                             name=name), []
    return keras.layers.Reshape(graph.tensors[op.outputs[0]].shape[1:], name=name), []  # RESHAPE


def convert(path: str, classifier: bool = False) -> Tuple[keras.Model, str]:
    """(the float Keras model of a TFLite MobileNet at `path`, its family name); EncoderError for other graphs."""
    if not storage.exists(path):
        raise EncoderError(f"TFLite model {path!r} does not exist; give a .tflite file path, local or gs://")
    graph = Graph(storage.read_bytes(path), path)
    family, count = _family(graph, classifier)
    ops = graph.ops[:count + (len(_HEAD) if classifier else 0)]
    names = _layer_names("".join(_LETTERS[op.kind] for op in ops[:count]), family, classifier)
    scale, zero_point = float(graph.input.scales[0]), float(graph.input.zero_points[0])
    pixels = keras.Input(shape=tuple(graph.input.shape[1:]), name="pixels")  # float RGB 0..255
    produced = {graph.input.index: keras.layers.Rescaling(scale, offset=-zero_point * scale, name="preprocess")(pixels)}
    weights = []
    for op, name in zip(ops, names):
        layer, values = _layer(graph, op, name)
        sources = op.inputs[:2] if op.kind == "ADD" else op.inputs[:1]
        if any(index not in produced for index in sources):
            raise _refuse(graph, f"its op {op.kind} for {name} reads a tensor that no earlier op makes")
        tensors = [produced[index] for index in sources]
        produced[op.outputs[0]] = layer(tensors if op.kind == "ADD" else tensors[0])
        weights.append((layer, values))
    kind = "classifier" if classifier else "features"
    model = keras.Model(pixels, produced[ops[-1].outputs[0]], name=f"{family.lower().replace(' ', '_')}_{kind}")
    for layer, values in weights:
        if values:
            layer.set_weights(values)
    return model, family


def save(model: keras.Model, target: str) -> None:
    """Saves as .keras to a local path or gs:// (written locally, then copied)."""
    if not storage.is_remote(target):
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        model.save(target)
        return
    with tempfile.TemporaryDirectory(prefix="from-tflite-") as folder:
        local = os.path.join(folder, os.path.basename(target))
        model.save(local)
        with open(local, "rb") as handle:
            storage.write_bytes(target, handle.read())


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m captioner.encoders.from_tflite", description=__doc__,
                                formatter_class=cli.HelpFormatter)
    parser.add_argument("input", metavar="IN.tflite",
                        help="the uint8-quantized TFLite MobileNet v1 or v2 (224x224), local or gs://")
    parser.add_argument("output", metavar="OUT.keras",
                        help="where to write the float Keras model, local or gs:// (the name must end in .keras)")
    parser.add_argument("--classifier", action="store_true",
                        help="MobileNet v2 only: output the 1001 ImageNet logits (average pool + 1x1 conv + reshape) "
                             "instead of the 7x7 map, e.g. to check the conversion against the TFLite classifier")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.output.endswith(".keras"):
        raise UsageError(f"OUT.keras {args.output!r} does not end in .keras; Keras saves models only under that "
                         "suffix, e.g. mobilenet_v1.keras")
    model, family = convert(args.input, classifier=args.classifier)
    save(model, args.output)
    print(f"wrote {args.output}: {family} {'classifier' if args.classifier else 'features'}, "
          f"{len(model.layers)} layers, {model.count_params():,} parameters, output {list(model.output.shape[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
