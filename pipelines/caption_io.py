"""Reading a caption file inside a pipeline: (image id, raw caption) pairs, streamed, any supported format."""
from __future__ import annotations

from typing import Optional

import apache_beam as beam

from captioner import captions as caption_files


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
