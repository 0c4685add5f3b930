"""TFRecord shards read record by record with their checksums checked, a damaged shard named, never a traceback.

Beam's own reader raises a bare ValueError deep in a worker when a shard was cut short
or changed after it was written (the TFRecord length and CRC32C checks). Here that stops
the job with one line naming the shard, or, when the user asks to go on
(`skip_damaged`), the shard's unread rest is left out and counted: the records before
the damage still go through, the shard goes to the `damaged` output with how many
records it gave. Records stream one by one, so memory stays flat in the shard's size.
"""
from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil
from apache_beam.metrics import Metrics

from captioner.errors import DamagedInput
from pipelines.inputs.dead_letters import NAMESPACE

DAMAGED = "damaged"
SKIP_FLAG = "--skip_damaged_shards"
log = logging.getLogger(__name__)


class _ReadShard(beam.DoFn):
    def __init__(self, skip_damaged: bool):
        self.skip_damaged = skip_damaged
        self.records_read = Metrics.counter(NAMESPACE, "records_read")
        self.damaged = Metrics.counter(NAMESPACE, "damaged_shards")

    def process(self, path: str):
        read = 0
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                while (record := _TFRecordUtil.read_record(handle)) is not None:  # noqa: SLF001 - Beam's CRC check
                    read += 1
                    self.records_read.inc()
                    yield record
        except ValueError as error:
            what = f"{path} is damaged after its first {read} records ({str(error).split(':')[0]})"
            if not self.skip_damaged:
                raise DamagedInput(f"shard {what}: it was cut short or changed after it was written; re-run the "
                                   f"extraction into a new --output, or pass {SKIP_FLAG} to go on without the rest "
                                   "of it (counted in the report)") from None
            self.damaged.inc()
            log.warning("shard %s; the rest of it is left out (%s)", what, SKIP_FLAG)
            yield beam.pvalue.TaggedOutput(DAMAGED, {"shard": path, "records_read": read, "reason": str(error)[:200]})


class ReadShards(beam.PTransform):
    """Shard paths -> their serialized records (main output) and, with `skip_damaged`, the damaged shards."""

    def __init__(self, skip_damaged: bool = False):
        super().__init__()
        self.skip_damaged = skip_damaged

    def expand(self, paths):
        return paths | beam.ParDo(_ReadShard(self.skip_damaged)).with_outputs(DAMAGED, main="records")
