"""The inputs both pipelines share: matching images, decoding them with a dead-letter output, caption files.

Every matched file leaves here either as a decoded image or as a dead letter
with its reason, so nothing is dropped silently. Duplicate image ids (the same
file name in two folders) keep the first path in sorted order; the others are
dead-lettered, because the caption files key captions by file name.
"""
from __future__ import annotations

import json
from typing import Iterable, Optional, Tuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from captioner import captions as caption_files
from captioner import images

DEAD_LETTER = "dead_letter"
NAMESPACE = "captioner"


def dead_letter(path: str, reason: str, stage: str) -> dict:
    return {"path": path, "image_id": images.image_id(path), "stage": stage, "reason": reason}


def dead_letter_json(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True)


class _KeepFirstPath(beam.DoFn):
    """(image id, [paths]) -> (image id, first path); later paths become dead letters."""

    def __init__(self):
        self.duplicates = Metrics.counter(NAMESPACE, "duplicate_image_ids")

    def process(self, element: Tuple[str, Iterable[str]]):
        image_id, paths = element
        first, *others = sorted(paths)
        yield image_id, first
        for other in others:
            self.duplicates.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, dead_letter(other, f"duplicate image id {image_id!r}, kept {first}", "match"))


class MatchImages(beam.PTransform):
    """A file pattern (local or gs://, `*` and `**`) -> every matched path (fails when nothing matches)."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = pattern

    def expand(self, pipeline):
        return (pipeline
                | "Match" >> fileio.MatchFiles(self.pattern, empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
                | "Paths" >> beam.Map(lambda metadata: metadata.path))


class KeepFirstPerId(beam.PTransform):
    """Paths -> (image id, path), one per id, grouped by id (this shuffle spreads the reads across workers).

    Outputs: `images` (image id, path) and DEAD_LETTER dicts for the duplicate ids.
    """

    def expand(self, paths):
        return (paths
                | "KeyById" >> beam.Map(lambda path: (images.image_id(path), path))
                | "GroupById" >> beam.GroupByKey()
                | "KeepFirst" >> beam.ParDo(_KeepFirstPath()).with_outputs(DEAD_LETTER, main="images"))


class _ReadAndDecode(beam.DoFn):
    """(image id, path) -> (image id, path, uint8 pixels at the encoder's size), or a dead letter."""

    def __init__(self, size: Tuple[int, int], max_pixels: int):
        self.size = tuple(size)
        self.max_pixels = max_pixels
        self.decoded = Metrics.counter(NAMESPACE, "images_decoded")
        self.rejected = Metrics.counter(NAMESPACE, "images_dead_lettered")

    def process(self, element: Tuple[str, str]):
        image_id, path = element
        try:
            with FileSystems.open(path) as handle:
                data = handle.read()
            pixels = images.decode_image(data, self.size, self.max_pixels)
        except images.ImageRejected as rejected:
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(path, rejected.reason, "decode"))
            return
        except OSError as error:
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(path, f"unreadable: {error}", "read"))
            return
        self.decoded.inc()
        yield image_id, path, pixels


class DecodeImages(beam.PTransform):
    """(image id, path) -> (image id, path, pixels) plus DEAD_LETTER dicts.

    Apply it to KeepFirstPerId's output: its GroupById is the shuffle that spreads
    the reads across workers (what a Reshuffle after MatchFiles would do).
    """

    def __init__(self, size: Tuple[int, int], max_pixels: int):
        super().__init__()
        self.size = size
        self.max_pixels = max_pixels

    def expand(self, keyed_paths):
        return (keyed_paths
                | "ReadAndDecode" >> beam.ParDo(_ReadAndDecode(self.size, self.max_pixels)).with_outputs(
                    DEAD_LETTER, main="images"))


class ReadCaptionPairs(beam.PTransform):
    """A Flickr8k token file or `image,caption` CSV -> (image id, raw caption); empty when `path` is None."""

    def __init__(self, path: Optional[str]):
        super().__init__()
        self.path = path

    def expand(self, pipeline):
        if not self.path:
            return pipeline | "NoCaptions" >> beam.Create([])
        fmt = caption_files.detect_format(caption_files.first_line(self.path), self.path)
        return (pipeline
                | "Read" >> beam.io.ReadFromText(self.path)
                | "Parse" >> beam.FlatMap(lambda line: filter(None, [caption_files.parse_line(line, fmt)])))
