"""Captioning photos of any size from Python: files (local or gs://), Pillow images or arrays.

    from captioner.bundle import Captioner
    captioner = Captioner.load("runs/flickr8k/job/export")
    for result in captioner.caption_files(["photos/dog.jpg", "photos/beach.png"]):
        print(result.path, result.caption if result.ok else result.error)
    best, *others = captioner.caption_files(["photos/dog.jpg"], top=3)[0].ranked  # the 3 best beams


Every image goes through the code the pipelines use (`images.decode_image`, `images.fit_image`: EXIF
orientation, any mode to RGB, the encoder's input size), then the bundle's own encoder and decoder, in
batches. A file that cannot be read or is not an image gets its reason in its result; the others are captioned.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from captioner import storage
from captioner.decoder.decoding import Decoding
from captioner.errors import InputError
from captioner.images import ImageRejected, decode_image, fit_image

BATCH_SIZE = 16  # images per encoder and decoder call: a bounded batch, so memory stays flat in the count


@dataclasses.dataclass(frozen=True)
class Caption:
    """One image's result: its caption and total log-probability, or why it has none (`error`).

    `alternatives` are the next best (caption, log-probability) pairs, best first, when more than one was asked.
    """
    caption: Optional[str]
    log_prob: Optional[float]
    path: Optional[str] = None
    error: Optional[str] = None
    alternatives: Tuple[Tuple[str, float], ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ranked(self) -> List[Tuple[str, float]]:
        """The caption and its alternatives, best first, as (caption, log-probability) pairs."""
        return [(self.caption, self.log_prob), *self.alternatives] if self.ok else []


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def caption_arrays(captioner, arrays: Iterable[np.ndarray], decoding: Optional[Decoding] = None,
                   batch_size: int = BATCH_SIZE, top: int = 1) -> List[Caption]:
    """uint8 (or float 0-255) arrays [h, w, 3] or [h, w] of any size -> a Caption each, in order."""
    return caption_pil(captioner, [Image.fromarray(np.asarray(a).astype(np.uint8)) for a in arrays], decoding,
                       batch_size, top)


def caption_pil(captioner, images: Iterable[Image.Image], decoding: Optional[Decoding] = None,
                batch_size: int = BATCH_SIZE, top: int = 1) -> List[Caption]:
    """Pillow images of any mode and size -> a Caption each, in order."""
    size = captioner.bundle["encoder"]["input_size"]
    return _caption_pixels(captioner, [fit_image(image, size) for image in images], decoding, batch_size, top)


def caption_files(captioner, paths: Iterable[str], decoding: Optional[Decoding] = None,
                  batch_size: int = BATCH_SIZE, top: int = 1, max_pixels: int = 50_000_000) -> List[Caption]:
    """Image files (local or gs://) -> a Caption each, in order; an unreadable one carries its `error`."""
    size, results = captioner.bundle["encoder"]["input_size"], []
    for batch in _batches(list(paths), batch_size):
        pixels, failed = [], {}
        for index, path in enumerate(batch):
            try:
                pixels.append(decode_image(storage.read_bytes(path), size, max_pixels))
            except ImageRejected as rejected:
                failed[index] = f"not captioned: {rejected.reason}"
            except InputError as missing:
                failed[index] = f"not captioned: {missing}"
            except OSError as error:
                failed[index] = f"not captioned: cannot read it ({error.strerror or error})"
        captioned = iter(_caption_pixels(captioner, pixels, decoding, batch_size, top))
        results += [Caption(None, None, path, failed[index]) if index in failed
                    else dataclasses.replace(next(captioned), path=path) for index, path in enumerate(batch)]
    return results


def _caption_pixels(captioner, pixels: List[np.ndarray], decoding: Optional[Decoding], batch_size: int,
                    top: int) -> List[Caption]:
    results: List[List[Tuple[str, float]]] = []
    for batch in _batches(pixels, batch_size):
        results += captioner.rank_features(captioner.encoder.encode(np.stack(batch)), decoding, top)
    return [Caption(caption, log_prob, alternatives=tuple(others)) for (caption, log_prob), *others in results]
