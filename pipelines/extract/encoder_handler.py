"""RunInference for the project's encoders, without Beam's tensorflow_inference module.

Beam's own TensorFlow handler imports tensorflow_hub, which drags in tf-keras and
a second TensorFlow wheel; this small ModelHandler loads the encoder once per
worker process and encodes whole batches in one call.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from captioner import encoders

_LOG = logging.getLogger(__name__)


class EncoderModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """Batches of uint8 images [h, w, 3] -> one dict of feature arrays per image."""

    def __init__(self, identity: Dict, batch_size: int, num_threads: Optional[int] = None):
        # A fixed batch size: each new size makes a TFLite interpreter re-allocate its tensors.
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size)
        self.identity = dict(identity)
        self.num_threads = num_threads

    def load_model(self):
        _LOG.info("loading encoder %s", self.identity["name"])
        return encoders.encoder_from_identity(self.identity, num_threads=self.num_threads)

    def run_inference(self, batch: Sequence[np.ndarray], model, inference_args=None) -> Iterable[PredictionResult]:
        outputs = model.encode(np.stack(batch))
        return [PredictionResult(example, {name: values[i] for name, values in outputs.items()})
                for i, example in enumerate(batch)]

    def get_metrics_namespace(self) -> str:
        return "captioner_encoder"
