"""RunInference for the trainer's export bundle: encoder + decoder loaded once per worker process, or shared.

Captions whole batches with the bundle's batched beam search (one tf.function
call per batch), from decoded images or from already-extracted features. With
`share_model`, Beam loads `model_copies` copies per machine in a process of
their own and every worker process calls them (Beam's share_model_across_processes):
one copy of the model on a GPU, every core busy decoding and feeding it.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from captioner.bundle import Captioner
from captioner.decoder.decoding import Decoding

_LOG = logging.getLogger(__name__)

IMAGES = "images"
FEATURES = "features"


class CaptionerModelHandler(ModelHandler[Any, PredictionResult, Captioner]):
    """Batches of uint8 images (IMAGES) or of stored feature dicts (FEATURES) -> (caption, log-probability)."""

    def __init__(self, export_dir: str, source: str, batch_size: int, decoding: Decoding,
                 threads: Optional[int] = None, share_model: bool = False, model_copies: int = 1):
        super().__init__(min_batch_size=1, max_batch_size=batch_size)
        if source not in (IMAGES, FEATURES):
            raise ValueError(f"source must be {IMAGES!r} or {FEATURES!r}, not {source!r}")
        self.export_dir = export_dir
        self.source = source
        self.decoding = decoding
        self.threads = threads
        self.shared, self.copies = bool(share_model), int(model_copies)

    def load_model(self) -> Captioner:
        _LOG.info("loading the captioner bundle %s%s", self.export_dir, " (shared by this machine's workers)"
                  if self.shared else "")
        return Captioner.load(self.export_dir, num_threads=self.threads)

    def run_inference(self, batch: Sequence, model: Captioner, inference_args=None) -> Iterable[PredictionResult]:
        if self.source == IMAGES:
            results = model.caption_images(np.stack(batch), self.decoding)
        else:
            stacked = {name: np.stack([example[name] for example in batch]) for name in batch[0]}
            results = model.caption_features(stacked, self.decoding)
        return [PredictionResult(None, result) for result in results]

    def share_model_across_processes(self) -> bool:
        return self.shared

    def model_copies(self) -> int:
        return self.copies

    def get_metrics_namespace(self) -> str:
        return "captioner_decoder"
