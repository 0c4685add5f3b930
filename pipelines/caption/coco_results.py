"""The caption job's COCO results files: `[{"image_id": ..., "caption": ...}]`, the format the official
MS-COCO caption evaluation (pycocoevalcap's `COCO.loadRes`) reads, so anyone can re-score a run with it.

Each shard is one JSON array (a Beam sink writes the shards in parallel, as it writes the other outputs);
`image_id` is the COCO id when the references came from a COCO or Karpathy file that has one, else the
project's image id.
"""
from __future__ import annotations

import json
from typing import Dict

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io.filebasedsink import FileBasedSink


def result(row: Dict) -> Dict:
    """One caption row -> its COCO results entry."""
    image_id = row["coco_id"] if row.get("coco_id") is not None else row["image_id"]
    return {"image_id": image_id, "caption": row["caption"]}


class _ArrayFile:
    """A shard being written: '[' first, a comma before every entry but the first, ']' at close."""

    def __init__(self, handle):
        self.handle, self.entries = handle, 0

    def add(self, encoded: bytes):
        self.handle.write(b",\n" if self.entries else b"\n")
        self.handle.write(encoded)
        self.entries += 1

    def close(self):
        self.handle.write(b"\n]\n")
        self.handle.close()


class _JsonArraySink(FileBasedSink):
    def __init__(self, prefix: str, num_shards: int):
        super().__init__(prefix, coder=coders.ToBytesCoder(), file_name_suffix=".json", num_shards=num_shards,
                         mime_type="application/json")

    def open(self, temp_path):
        handle = super().open(temp_path)
        handle.write(b"[")
        return _ArrayFile(handle)

    def write_encoded_record(self, file_handle: _ArrayFile, encoded_value: bytes):
        file_handle.add(encoded_value)


class WriteCocoResults(beam.PTransform):
    """Caption rows -> `<prefix>-SSSSS-of-NNNNN.json` COCO results shards; returns the file names."""

    def __init__(self, prefix: str, num_shards: int = 0):
        super().__init__()
        self.prefix, self.num_shards = prefix, num_shards

    def expand(self, rows):
        return (rows
                | "Result" >> beam.Map(lambda row: json.dumps(result(row), ensure_ascii=False).encode("utf-8"))
                | "Write" >> beam.io.Write(_JsonArraySink(self.prefix, self.num_shards)))
