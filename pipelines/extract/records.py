"""From an image joined with its captions and split to its one TFRecord: the record assembly's DoFns."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from captioner import images, schema, text
from pipelines.inputs.dead_letters import DEAD_LETTER, NAMESPACE, dead_letter

TRAIN_CAPTIONS = "train_captions"  # the cleaned captions of every train record, for the vocabulary


class AssignSplit(beam.DoFn):
    """(id, path, {"captions": [...], "splits": [...], "coco_id": [...]}) -> (id, path, split, sorted raw
    captions, COCO id or None).

    An image in no split list is 'unsplit'; one listed in two splits, or given two COCO ids, is a dead letter
    naming them.
    """

    def __init__(self):
        self.uncaptioned = Metrics.counter(NAMESPACE, "images_without_captions")

    def process(self, element):
        image_id, path, data = element
        splits = sorted(set(data.get("splits", [])))
        if len(splits) > 1:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                image_id, path, f"listed in {len(splits)} split files ({', '.join(splits)}); list it in one", "join"))
            return
        coco_ids = sorted(set(data.get("coco_id", [])))
        if len(coco_ids) > 1:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                image_id, path, f"given {len(coco_ids)} COCO ids ({', '.join(map(str, coco_ids))}) by the caption "
                "files; an image has one", "join"))
            return
        captions = tuple(sorted(data.get("captions", [])))
        if not captions:
            self.uncaptioned.inc()
        yield image_id, path, splits[0] if splits else "unsplit", captions, coco_ids[0] if coco_ids else None


class AssembleRecord(beam.DoFn):
    """((id, path, split, raw captions, COCO id), encoder result) -> (split, serialized Example); train captions
    tagged. With `keep_images`, the record also keeps the encoder's input image as JPEG (schema.IMAGE)."""

    def __init__(self, cleaning: str, keep_images: bool = False):
        self.cleaning = cleaning
        self.keep_images = bool(keep_images)
        self.records = Metrics.counter(NAMESPACE, "records_written")

    def process(self, element):
        (image_id, path, split, raw, coco_id), result = element
        features = result.inference
        cleaned = [c for c in (text.clean_caption(r, self.cleaning) for r in raw) if c]
        self.records.inc()
        jpeg = images.encode_jpeg(result.example) if self.keep_images else None
        yield split, schema.make_example(image_id, path, split, cleaned, list(raw), features["pooled"],
                                         features.get("spatial"), coco_id, jpeg)
        if split == "train":
            yield beam.pvalue.TaggedOutput(TRAIN_CAPTIONS, cleaned)
