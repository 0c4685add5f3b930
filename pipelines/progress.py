"""Progress of a long stage as counts in the log: images done in this worker, and at what rate.

Beam's own metrics reach the launcher only at the end on the local runners, so each
worker process logs its own count at most every LOG_EVERY_S seconds (and Dataflow
shows these lines per worker in its logs).
"""
from __future__ import annotations

import logging
import time

import apache_beam as beam

LOG_EVERY_S = 30.0
log = logging.getLogger("captioner.progress")


class _Count(beam.DoFn):
    def __init__(self, stage: str, what: str):
        self.stage, self.what = stage, what

    def setup(self):
        self.done, self.started, self.last = 0, time.time(), time.time()

    def process(self, element):
        self.done += 1
        now = time.time()
        if now - self.last >= LOG_EVERY_S:
            self.last = now
            rate = 60.0 * self.done / max(1e-9, now - self.started)
            log.info("%s: %d %s in this worker (%.0f per minute)", self.stage, self.done, self.what, rate)
        yield element


class LogProgress(beam.PTransform):
    """Passes elements through, logging how many have passed in each worker."""

    def __init__(self, stage: str, what: str):
        super().__init__()
        self.stage, self.what = stage, what

    def expand(self, pcoll):
        return pcoll | "Count" >> beam.ParDo(_Count(self.stage, self.what))
