"""Joins of images with per-image data by key, shuffles only: memory per worker stays flat in the set size.

`JoinByName` gives each image the captions, splits, references or include
entries of its key (the file name, or the id, as the data file keys images);
`DropExisting` leaves out the images an earlier run already has. Both are
`CoGroupByKey`s: nothing per image is copied to every worker as a side input.
"""
from __future__ import annotations

from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from captioner.input_files import listings
from pipelines.inputs.dead_letters import DEAD_LETTER, NAMESPACE, dead_letter

IMAGES = "images"
ORPHANS = "orphans"      # keys that have data but no image
EXCLUDED = "excluded"    # images whose key lacks the required data (not on the include list)
SKIPPED = "skipped"      # images an earlier run already has


class _Assign(beam.DoFn):
    def __init__(self, tags: Sequence[str], ambiguous_tags: Sequence[str], required: Optional[str]):
        self.tags, self.ambiguous_tags, self.required = tuple(tags), tuple(ambiguous_tags), required
        self.ambiguous = Metrics.counter(NAMESPACE, "images_with_ambiguous_names")
        self.excluded = Metrics.counter(NAMESPACE, "images_excluded")

    def process(self, element):
        key, groups = element
        images = sorted(groups[IMAGES])
        values = {tag: list(groups[tag]) for tag in self.tags}
        if not images:
            if any(values[tag] for tag in self.ambiguous_tags):
                yield beam.pvalue.TaggedOutput(ORPHANS, key)
            return
        if self.required and not values[self.required]:
            for image in images:
                self.excluded.inc()
                yield beam.pvalue.TaggedOutput(EXCLUDED, image[0])
            return
        with_data = [tag for tag in self.ambiguous_tags if values[tag]]
        if len(images) > 1 and with_data:
            paths = ", ".join(image[1] for image in images)
            for image_id, path, *_ in images:
                self.ambiguous.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                    image_id, path, f"file name {key!r} matches {len(images)} images ({paths}) and the "
                    f"{'/'.join(with_data)} file keys images by file name; give them unique names or list them "
                    "by path", "join"))
            return
        for image in images:
            yield (*image, values)


class JoinByName(beam.PTransform):
    """(id, path, ...) images + {tag: (key, value)} -> (id, path, ..., {tag: [values]}) per image.

    `scheme` says what the data files key images by (listings.BY_NAME or BY_ID). An image
    without `required` data goes to EXCLUDED; several images sharing a key that has
    `ambiguous_tags` data all become dead letters naming each other; keys with such data
    but no image go to ORPHANS.
    """

    def __init__(self, scheme: str, ambiguous_tags: Sequence[str] = (), required: Optional[str] = None, **data):
        super().__init__()
        self.scheme, self.ambiguous_tags, self.required, self.data = scheme, ambiguous_tags, required, data

    def expand(self, images):
        scheme = self.scheme
        keyed = images | "KeyBy" >> beam.Map(lambda image: (listings.join_key(image[0], image[1], scheme), image))
        joined = {IMAGES: keyed, **self.data} | "Join" >> beam.CoGroupByKey()
        return joined | "Assign" >> beam.ParDo(_Assign(list(self.data), self.ambiguous_tags, self.required)) \
            .with_outputs(DEAD_LETTER, ORPHANS, EXCLUDED, main=IMAGES)


class _KeepNew(beam.DoFn):
    def __init__(self):
        self.skipped = Metrics.counter(NAMESPACE, "images_skipped_existing")

    def process(self, element):
        _, groups = element
        if list(groups["existing"]):
            for image in groups["new"]:
                self.skipped.inc()
                yield beam.pvalue.TaggedOutput(SKIPPED, image[0])
            return
        yield from groups["new"]


class DropExisting(beam.PTransform):
    """(id, ...) images minus those whose id is in `existing_ids` (an anti-join); the dropped ids go to SKIPPED."""

    def __init__(self, existing_ids):
        super().__init__()
        self.existing_ids = existing_ids

    def expand(self, images):
        joined = ({"new": images | "KeyById" >> beam.Map(lambda image: (image[0], image)),
                   "existing": self.existing_ids | "Existing" >> beam.Map(lambda image_id: (image_id, None))}
                  | "Join" >> beam.CoGroupByKey())
        return joined | "KeepNew" >> beam.ParDo(_KeepNew()).with_outputs(SKIPPED, main=IMAGES)
