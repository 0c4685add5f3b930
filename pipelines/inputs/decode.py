"""Reading and decoding images inside a pipeline: each becomes pixels or a dead letter with its reason.

One bad file never takes a batch down: files are decoded here, before inference
(captioner/images.py says what is rejected and why). Apply it after a shuffle
(a join, or a Reshuffle), which spreads the reads across workers.
"""
from __future__ import annotations

from typing import Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from captioner import images
from pipelines.inputs.dead_letters import DEAD_LETTER, NAMESPACE, dead_letter


class _ReadAndDecode(beam.DoFn):
    """(id, path, *payload) -> (id, path, *payload, uint8 pixels at the encoder's size), or a dead letter."""

    def __init__(self, size: Tuple[int, int], max_pixels: int):
        self.size = tuple(size)
        self.max_pixels = max_pixels
        self.decoded = Metrics.counter(NAMESPACE, "images_decoded")
        self.rejected = Metrics.counter(NAMESPACE, "images_dead_lettered")

    def process(self, element):
        image_id, path = element[0], element[1]
        try:
            with FileSystems.open(path) as handle:
                data = handle.read()
            pixels = images.decode_image(data, self.size, self.max_pixels)
        except images.ImageRejected as rejected:
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(image_id, path, rejected.reason, "decode"))
            return
        except OSError as error:
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(image_id, path, f"unreadable: {error}", "read"))
            return
        self.decoded.inc()
        yield (*element, pixels)


class DecodeImages(beam.PTransform):
    """(id, path, *payload) -> (id, path, *payload, pixels), plus DEAD_LETTER records."""

    def __init__(self, size: Tuple[int, int], max_pixels: int):
        super().__init__()
        self.size = size
        self.max_pixels = max_pixels

    def expand(self, images_in):
        return images_in | "ReadAndDecode" >> beam.ParDo(_ReadAndDecode(self.size, self.max_pixels)).with_outputs(
            DEAD_LETTER, main="images")
