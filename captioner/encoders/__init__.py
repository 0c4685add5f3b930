"""Image encoders: a name or a path -> a model that turns images into features.

    name or path          family (module)                   weights                                 trainable
    vgg16, inception_v3,  keras.applications (keras_apps)   imagenet | none | PATH (local or gs://)  yes
    mobilenet_v2,
    efficientnet_b0
    PATH.keras            saved Keras model (keras_file)    the file itself                         yes
    PATH.tflite           TFLite interpreter (tflite)       the file itself                         no
    thumbnail             toy 8x8 map (thumbnail)           none                                    no

`registry` picks the family. Every encoder takes uint8 RGB batches already
resized to `input_size` (by captioner/images.py) and does its own preprocessing
inside `encode`. Outputs stay in the dtype the model produces; `feature_info()`
says how to read them and `identity` (name, source, weights and their sha256,
preprocessing) goes into the manifest. A trainable encoder's `trainable_model()`
is a Keras model (pixels 0..255 -> features) to fine-tune with the decoder, and
`encoder_blocks(model)` groups its layers into blocks to unfreeze from the top.
`python -m captioner.encoders.from_tflite` turns a TFLite MobileNet into a
trainable `.keras` file.
"""
from captioner.encoders.base import Encoder, EncoderError, encoder_blocks
from captioner.encoders.registry import THUMBNAIL, describe_encoders, encoder_from_identity, load_encoder

__all__ = ["Encoder", "EncoderError", "THUMBNAIL", "describe_encoders", "encoder_blocks", "encoder_from_identity",
           "load_encoder"]
