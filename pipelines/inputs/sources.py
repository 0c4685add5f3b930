"""Where a pipeline's images and captions come from, as PCollections read in parallel.

Images are (id, path) pairs (ids in captioner/input_files/listings.py): from a glob, from
listing files, or from the dead letters of an earlier run (to retry them).
Caption, split and include files become (key, value) pairs keyed as the file
keys images (file name or id), ready for `joins.JoinByName`; nothing per image
is ever a side input.
"""
from __future__ import annotations

import io
import json
import os
import posixpath
from typing import Dict, Optional

import apache_beam as beam
from apache_beam.io import fileio

from captioner import storage
from captioner.errors import InputError
from captioner.input_files import annotations, listings
from captioner.input_files import captions as caption_files

BAD_LINES = "bad_lines"  # caption-file lines that are not captions


class ImagesFromPattern(beam.PTransform):
    """A file pattern (local or gs://, `*` and `**`) -> (id, path), the id relative to the pattern's fixed prefix."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = pattern

    def expand(self, pipeline):
        prefix = listings.fixed_prefix(self.pattern)
        return (pipeline
                | "Match" >> fileio.MatchFiles(self.pattern, empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
                | "Id" >> beam.Map(lambda metadata: (listings.relative_id(metadata.path, prefix), metadata.path)))


def _folder(path: str) -> str:
    return posixpath.dirname(path) if storage.is_remote(path) else os.path.dirname(path)


class _ParseListingLine(beam.DoFn):
    def __init__(self, fmt: str, header):
        self.fmt, self.header = fmt, list(header)

    def process(self, element):
        filename, line = element
        try:
            entry = listings.parse_listing_line(line, self.fmt, self.header, _folder(filename), filename)
        except InputError:
            yield beam.pvalue.TaggedOutput(BAD_LINES, line[:200])
            return
        if entry:
            yield entry


class ImagesFromListing(beam.PTransform):
    """Listing files (a path or a glob) -> {"images": (id, path) once each, "captions": (id, raw caption), or
    None for a listing without captions, BAD_LINES: lines that name no image}."""

    def __init__(self, listing: str):
        super().__init__()
        self.listing = listing
        self.format, self.header = listings.listing_format(caption_files.first_listed_line(listing), listing)

    def expand(self, pipeline):
        entries = (pipeline
                   | "Read" >> beam.io.ReadFromTextWithFilename(self.listing)
                   | "Parse" >> beam.ParDo(_ParseListingLine(self.format, self.header)).with_outputs(
                       BAD_LINES, main="entries"))
        images = entries.entries | "Images" >> beam.Map(lambda e: (e[0], e[1])) | "OnceEach" >> beam.Distinct()
        captions = None  # a listing without a caption column leaves the captions to a caption file
        if listings.carries_captions(self.format, self.header):
            captions = entries.entries | "Captions" >> beam.FlatMap(lambda e: [(e[0], c) for c in e[2]])
        return {"images": images, "captions": captions, BAD_LINES: entries[BAD_LINES]}


class ImagesFromDeadLetters(beam.PTransform):
    """Dead-letter files of an earlier run (a path or a glob) -> the (id, path) of every image in them."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = pattern

    def expand(self, pipeline):
        return (pipeline
                | "Read" >> beam.io.ReadFromText(self.pattern)
                | "Parse" >> beam.Map(json.loads)
                | "Image" >> beam.Map(lambda record: (record["image_id"], record["path"]))
                | "OnceEach" >> beam.Distinct())


def read_images(pipeline, image_list: Optional[str], retry_dead_letters: Optional[str], pattern: Optional[str]):
    """Both jobs' images from the one source given: a listing file, dead letters to retry, or a glob.

    Returns the (id, path) PCollection, the captions a listing file carries (else None) and the PCollections
    of refused listing lines (to be dead letters).
    """
    if image_list:
        listed = pipeline | "ImageList" >> ImagesFromListing(image_list)
        return listed["images"], listed["captions"], [listed[BAD_LINES]]
    if retry_dead_letters:
        return pipeline | "DeadLetters" >> ImagesFromDeadLetters(retry_dead_letters), None, []
    return pipeline | "MatchImages" >> ImagesFromPattern(pattern), None, []


class _ParseCaptionLine(beam.DoFn):
    def __init__(self, fmt: str):
        self.fmt = fmt

    def process(self, line: str):
        try:
            parsed = caption_files.parse_line(line, self.fmt)
        except caption_files.CaptionFileError:
            yield beam.pvalue.TaggedOutput(BAD_LINES, line[:200])
            return
        if parsed:
            yield parsed


class _ParseAnnotationFile(beam.DoFn):
    """One COCO or Karpathy JSON file -> (name, raw caption); tagged "split" and "coco_id" (name, value) pairs
    and BAD_LINES for entries that name nothing usable."""

    def __init__(self, fmt: str):
        self.fmt = fmt

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        with readable.open() as handle:
            try:
                document = json.load(io.TextIOWrapper(handle, encoding="utf-8-sig"))
            except ValueError as error:
                raise InputError(f"{path} is not one JSON document ({error}); a COCO or Karpathy caption file is "
                                 "a single JSON object") from None
        for kind, name, value in annotations.entries(document, self.fmt, path):
            if kind == annotations.CAPTION:
                yield name, value
            elif kind == annotations.BAD:
                yield beam.pvalue.TaggedOutput(BAD_LINES, value)
            else:
                yield beam.pvalue.TaggedOutput(kind, (name, value))


class ReadCaptionPairs(beam.PTransform):
    """A caption file (or glob) -> {"pairs": (key, raw caption), BAD_LINES: what is not a caption,
    "splits": (name, split) from a Karpathy file, "coco_ids": (name, COCO id)}; the last two are None when
    the format has no such thing.

    The format is read from the first bytes when the transform is made (before the job starts): a Flickr8k
    token file or `image,caption` CSV is read line by line in parallel, a COCO or Karpathy JSON file whole,
    by one worker per file (annotations.py). A line or entry that does not parse goes to BAD_LINES, which
    the job reports with a count.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.format = caption_files.file_format(path)

    def expand(self, pipeline):
        if self.format not in annotations.FORMATS:
            parsed = (pipeline
                      | "Read" >> beam.io.ReadFromText(self.path)
                      | "Parse" >> beam.ParDo(_ParseCaptionLine(self.format)).with_outputs(BAD_LINES, main="pairs"))
            return {"pairs": parsed.pairs, BAD_LINES: parsed[BAD_LINES], "splits": None, "coco_ids": None}
        parsed = (pipeline
                  | "Match" >> fileio.MatchFiles(self.path)
                  | "ReadMatches" >> fileio.ReadMatches()
                  | "ParseJson" >> beam.ParDo(_ParseAnnotationFile(self.format)).with_outputs(
                      BAD_LINES, annotations.SPLIT, annotations.COCO_ID, main="pairs"))
        splits = parsed[annotations.SPLIT] if self.format == annotations.KARPATHY_FORMAT else None
        return {"pairs": parsed.pairs | "Spread" >> beam.Reshuffle(), BAD_LINES: parsed[BAD_LINES],
                "splits": splits, "coco_ids": parsed[annotations.COCO_ID]}


class ReadNames(beam.PTransform):
    """A file of image names or ids, one a line (a split list, an include list) -> (name, value)."""

    def __init__(self, path: str, value):
        super().__init__()
        self.path, self.value = path, value

    def expand(self, pipeline):
        value = self.value
        return (pipeline
                | "Read" >> beam.io.ReadFromText(self.path)
                | "Names" >> beam.FlatMap(lambda line: [(listings.strip_bom(line).strip(), value)]
                                          if line.strip() else []))


class ReadSplits(beam.PTransform):
    """The split lists of a folder (Flickr_8k.{train,dev,test}Images.txt) -> (name, split)."""

    def __init__(self, folder: str):
        super().__init__()
        self.files: Dict[str, str] = caption_files.split_files(folder)

    def expand(self, pipeline):
        splits = [pipeline | f"Read{split}" >> ReadNames(path, split) for split, path in sorted(self.files.items())]
        return splits | "AllSplits" >> beam.Flatten()
