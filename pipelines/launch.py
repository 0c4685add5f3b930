"""Running a built pipeline the same way from a laptop, Dataflow, or a Flex Template launcher, with quiet logs."""
from __future__ import annotations

import codecs
import ctypes
import logging
import os
import re
from typing import Callable, List, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from captioner import interrupts
from pipelines import worker_errors

# Beam's own notices that say nothing to a user of this project (each repeated by every worker, every stage).
BENIGN = re.compile(r"No semi_persistent_directory found|Discarding unparseable args|"
                    r"Resource module is not available for current platform")
_WORKER_ENTRY = re.compile(r'message: "((?:[^"\\]|\\.)*)"(?:.*?log_location: "((?:[^"\\]|\\.)*)")?')
_OWN_CODE = re.compile(r"[/\\](captioner|pipelines|trainer)[/\\]")
WORKER_LOGGER = "apache_beam.runners.portability.local_job_service"  # relays worker processes' log entries
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> None:
    """Caps glibc's malloc arenas in this process and in the worker processes it starts.

    glibc gives each thread its own arena and rarely returns freed memory from them, so a
    multi-threaded Beam worker's RSS creeps up with every batch it has ever decoded, though
    nothing stays allocated (measured: +17% from 10,000 to 100,000 captions; flat with 2 arenas).
    Workers inherit MALLOC_ARENA_MAX; this process, already running, is told through mallopt.
    The worker image sets it too (docker/beam.Dockerfile). A no-op where libc is not glibc.
    """
    os.environ.setdefault("MALLOC_ARENA_MAX", str(arenas))
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass


def run_to_completion(build, options: PipelineOptions) -> bool:
    """Builds with `build(pipeline)` and runs; True once the job finished, False when it was only launched.

    A Flex Template launcher (or --template_location) must return as soon as the job
    is submitted, so the caller cannot read the job's outputs then.
    """
    limit_malloc_arenas()
    os.environ[worker_errors.LAUNCHER_PID_ENV] = str(os.getpid())  # local worker processes inherit it
    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    with interrupts.before_unwinding(interrupts.kill_descendants):  # DirectRunner's worker processes
        try:
            result = pipeline.run()
            if options.view_as(GoogleCloudOptions).template_location or \
                    options.view_as(StandardOptions).no_wait_until_finish:
                logging.info("job submitted; not waiting for it to finish")
                return False
            result.wait_until_finish()
        except Exception as error:  # noqa: BLE001 - each runner wraps a worker's error in its own type
            raised = worker_errors.as_one_line(error)
            if raised is error:
                raise
            raise raised from None
    return True


def _unescape(text: str) -> str:
    """A protobuf text-format string (\\" \\n and octal UTF-8 bytes) back to plain text."""
    return codecs.escape_decode(text.encode("latin-1", "backslashreplace"))[0].decode("utf-8", "replace")


class QuietBeam(logging.Filter):
    """Drops Beam's benign notices; relays worker processes' own log lines as plain lines, not protobuf text.

    DirectRunner's worker processes send their log entries to the launcher, which logs each one as
    `Worker: severity: ... message: "..." log_location: "..."`. Entries from this project's code keep
    their level; other workers' INFO lines and the benign notices are dropped; any other warning or error
    is kept, so real problems still show.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if BENIGN.search(message) or (record.levelno >= logging.ERROR  # unescaped only where it may matter
                                      and worker_errors.said_in_one_line(record, _unescape(message))):
            return False
        if record.name != WORKER_LOGGER or not message.startswith("Worker: "):
            return True
        entry = _WORKER_ENTRY.search(message)
        if not entry:
            return record.levelno >= logging.WARNING
        text, location = _unescape(entry.group(1)), _unescape(entry.group(2) or "")
        if BENIGN.search(text) or (record.levelno < logging.WARNING and not _OWN_CODE.search(location)):
            return False
        if worker_errors.stopped_by_ctrl_c(text):  # the launcher says that in one line
            return False
        record.msg, record.args = "worker: %s", (text,)
        return True


def entry_point(run: Callable[[Optional[List[str]]], object]) -> Callable[[Optional[List[str]]], int]:
    """A pipeline's `main(argv)`: quiet logging, then `run(argv)` (which prints its own summary)."""
    def main(argv: Optional[List[str]] = None) -> int:
        configure_logging()
        run(argv)
        return 0
    return main


def configure_logging() -> None:
    """The stage's own progress at INFO (its workers' too); Beam's chatter and benign notices hidden."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(QuietBeam())
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    logging.getLogger(WORKER_LOGGER).setLevel(logging.INFO)  # it relays the workers' own INFO lines
