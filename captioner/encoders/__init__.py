"""Image encoders: a name or a path -> a model that turns images into features.

    name or path          family (module)                 weights
    vgg16, inception_v3,  keras.applications (keras_apps)  imagenet | none | PATH (local or gs://)
    mobilenet_v2,
    efficientnet_b0
    PATH.tflite           TFLite interpreter (tflite)       the file itself
    thumbnail             toy 8x8 map (thumbnail)           none

`registry` picks the family. Every encoder takes uint8 RGB batches already
resized to `input_size` (by captioner/images.py) and does its own preprocessing
inside `encode`. Outputs stay in the dtype the model produces; `feature_info()`
says how to read them and `identity` (name, source, weights and their sha256)
goes into the manifest.
"""
from captioner.encoders.base import Encoder, EncoderError
from captioner.encoders.registry import THUMBNAIL, describe_encoders, encoder_from_identity, load_encoder

__all__ = ["Encoder", "EncoderError", "THUMBNAIL", "describe_encoders", "encoder_from_identity", "load_encoder"]
