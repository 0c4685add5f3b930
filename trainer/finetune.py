"""Fine-tuning the encoder with the decoder (`train.finetune_encoder_epochs`), on the images the records keep.

After the cross-entropy epochs on stored features, the CNN and the decoder train together for N epochs: the
kept images (JPEG at the encoder's input size, `extract.keep_images`) go through the encoder's own trainable
Keras model (`Encoder.trainable_model`: its preprocessing inside), randomly cropped and flipped
(trainer/image_inputs.py), once per image for all its captions (trainer/grouped.py). Only the top
`train.finetune_encoder_blocks` blocks train; the encoder learns at `train.encoder_learning_rate`, the decoder
at `train.finetune_learning_rate`, both on one cosine over the phase (EncoderRateAdam). The encoder runs in
inference mode (batch norm statistics stay as trained on ImageNet; the rebuilt MobileNets have none).

The phase is a `fit` like the cross-entropy one (trainer/training.py, job_folder.ENCODER_FINETUNING): resumed
from its backup after a kill, best epoch by dev loss. When it ends, the best encoder and decoder weights are
written to finetune/ (FINETUNE_ENCODER, FINETUNE_DECODER): the commit point after which a re-run goes on with
self-critical training and the export, which carries the fine-tuned encoder (trainer/export.py).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from captioner import encoders, schema
from captioner.encoders import EncoderError
from captioner.manifest import ManifestError
from trainer import data
from trainer.grouped import GroupedDecoder
from trainer.job_folder import ENCODER_FINETUNING, FINETUNE_DECODER, FINETUNE_ENCODER, JobFolder

log = logging.getLogger("trainer")

_FROZEN_FAMILIES = (".tflite", encoders.THUMBNAIL)  # encoders with no trainable Keras model


def check_inputs(features, train_cfg) -> None:
    """Refuses, before any work, a fine-tuning job whose features keep no images or whose encoder cannot train."""
    if not train_cfg.finetune_encoder_epochs:
        return
    if not features.kept_images:
        raise ManifestError(f"train.finetune_encoder_epochs={train_cfg.finetune_encoder_epochs} needs the images, "
                            f"but the records of {features.source} keep none: re-extract with --set "
                            "extract.keep_images=true")
    source = str(features.manifest["encoder"].get("source", ""))
    if source.endswith(_FROZEN_FAMILIES[0]) or source == _FROZEN_FAMILIES[1]:
        raise EncoderError(f"train.finetune_encoder_epochs needs a trainable encoder, but {features.source} was "
                           f"extracted with {source}: convert a TFLite MobileNet with `python -m "
                           "captioner.encoders.from_tflite IN.tflite OUT.keras` and extract with --encoder OUT.keras")


def has_finished(folder: JobFolder) -> bool:
    return folder.exists(FINETUNE_ENCODER) and folder.exists(FINETUNE_DECODER)


def has_started(folder: JobFolder) -> bool:
    """True once the phase has begun: the cross-entropy epochs are over and must not run again."""
    return has_finished(folder) or folder.exists(ENCODER_FINETUNING.history)


def encoder_model(identity: dict, blocks: int) -> keras.Model:
    """The features' encoder as a Keras model, its top `blocks` blocks trainable; build it in the strategy's scope."""
    return train_top_blocks(encoders.encoder_from_identity(identity).trainable_model(), blocks, identity.get("name"))


def train_top_blocks(model: keras.Model, blocks: int, name: str = "") -> keras.Model:
    """Freezes every layer of an encoder model but those of its top `blocks` blocks (encoders.encoder_blocks)."""
    groups = encoders.encoder_blocks(model)
    trained = {name for group in groups[-blocks:] for name in group}
    for layer in model.layers:
        layer.trainable = layer.name in trained
    log.info("encoder %s: %d of its %d blocks train (%s .. %s), %d trainable parameters", name or model.name,
             min(blocks, len(groups)), len(groups), groups[-min(blocks, len(groups))][0], groups[-1][-1],
             sum(int(np.prod(v.shape)) for v in model.trainable_weights))
    return model


class EncoderRateAdam(keras.optimizers.Adam):
    """Adam whose encoder variables take `encoder_scale` times its learning rate (the decoder's)."""

    def __init__(self, encoder_variables, encoder_scale: float, **kwargs):
        super().__init__(**kwargs)
        self._encoder_ids = {id(v) for v in encoder_variables}
        self._encoder_indices = set()
        self.encoder_scale = float(encoder_scale)

    def build(self, variables):
        super().build(variables)
        self._encoder_indices = {i for i, v in enumerate(variables) if id(v) in self._encoder_ids}

    def update_step(self, gradient, variable, learning_rate):
        # _get_variable_index is how Adam itself finds a variable's slots, replicas' copies included
        if self._get_variable_index(variable) in self._encoder_indices:
            learning_rate = learning_rate * self.encoder_scale
        super().update_step(gradient, variable, learning_rate)


def compile_model(model: GroupedDecoder, train_cfg, steps_per_epoch: int, loss) -> None:
    """EncoderRateAdam on a cosine over the phase, the cross-entropy phase's loss; call inside the strategy's scope."""
    total = max(1, train_cfg.finetune_encoder_epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(train_cfg.finetune_learning_rate, decay_steps=total)
    optimizer = EncoderRateAdam(model.encoder.trainable_variables,
                                train_cfg.encoder_learning_rate / train_cfg.finetune_learning_rate,
                                learning_rate=schedule)
    model.compile(optimizer=optimizer, loss=loss, jit_compile=bool(train_cfg.xla))


def save_finished(model: GroupedDecoder, folder: JobFolder) -> None:
    """The phase's commit point: its best encoder and decoder weights, apart."""
    os.makedirs(os.path.dirname(folder.path(FINETUNE_ENCODER)), exist_ok=True)
    model.decoder.save_weights(folder.path(FINETUNE_DECODER))
    model.encoder.save_weights(folder.path(FINETUNE_ENCODER))
    folder.sync()


def load_finished(model: GroupedDecoder, folder: JobFolder, decoder_too: bool) -> None:
    """The fine-tuned encoder (and, unless self-critical training has its own, decoder) of a finished phase."""
    model.encoder.load_weights(folder.path(FINETUNE_ENCODER))
    if decoder_too:
        model.decoder.load_weights(folder.path(FINETUNE_DECODER))


def encode_function(model: GroupedDecoder) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images [B, h, w, 3] -> float32 features the decoder reads, through the (fine-tuned) encoder."""
    encode = tf.function(lambda images: model.features_of(images, training=False), reduce_retracing=True)
    return lambda images: encode(tf.convert_to_tensor(images)).numpy()


def features_cache(model: GroupedDecoder, caption_data, folder: str, batch_size: int):
    """The fine-tuned encoder's features of the train and dev images, computed once into local shards (float16,
    as the exported encoder.keras gives them), and a CaptionData over them: self-critical epochs read these
    instead of running the frozen CNN on every image every epoch. Disk, not memory: any number of images."""
    features, encode = caption_data.features, encode_function(model)
    images = caption_data.for_images(False)
    shards = {split: [] for split in features.shards}
    for split in ("train", "dev"):
        if not features.files(split):
            continue
        path = os.path.join(folder, split, "records-00000-of-00001.tfrecord")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tf.io.TFRecordWriter(path) as writer:
            for ids, pixels, references in images.images(split, batch_size):
                for image_id, values, refs in zip(ids, encode(pixels).astype(np.float16), references):
                    captions = [" ".join(words) for words in refs]
                    pooled = values if values.ndim == 1 else values.mean(axis=(0, 1)).astype(np.float16)
                    writer.write(schema.make_example(image_id, "", split, captions, captions, pooled,
                                                     None if values.ndim == 1 else values))
        shards[split] = [path]
    info = {"shape": list(features.shape), "dtype": "float16", "scale": None, "zero_point": 0}
    pooled_info = dict(info, shape=[features.shape[-1]])
    manifest = dict(features.manifest, features={"pooled": pooled_info, **({"spatial": info} if features.feature ==
                                                                             "spatial" else {})})
    cached = dataclasses.replace(features, source=folder, folder=folder, manifest=manifest, shards=shards)
    log.info("self-critical epochs read the fine-tuned encoder's features of the train and dev images from %s",
             folder)
    return data.CaptionData(cached, caption_data.max_length, caption_data.seed, caption_data.sort_window_batches,
                            caption_data.captions_per_row)

