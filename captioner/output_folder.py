"""One run per output folder: a stage refuses a folder that holds a finished earlier run unless told to replace it.

Why this design: a features folder or a caption output is read through its
marker file (manifest.json, bleu.json), written last, which lists every file of
the run; readers read those files and nothing else. So a folder is either
finished (its marker names one run's files) or unfinished (no marker: readers
refuse it), never a mix. Before a run, `prepare` refuses a finished folder
unless `--overwrite` is given, then removes the marker first and the stage's
own earlier files (never anything else in the folder), so new shards cannot sit
beside old ones. Incremental runs (`--skip_existing`) write a new folder whose
marker lists the earlier folder's files too, so they build on this.
"""
from __future__ import annotations

import logging
import uuid
from typing import Sequence

from apache_beam.io.filesystems import FileSystems

from captioner import storage
from captioner.errors import OutputError

log = logging.getLogger(__name__)


def check_writable(folder: str, flag: str = "--output") -> None:
    """Writes and deletes a probe file, so an unwritable output fails before any work, naming the folder."""
    probe = storage.join(folder, f".write-check-{uuid.uuid4().hex[:8]}")
    try:
        storage.write_bytes(probe, b"")
        FileSystems.delete([probe])
    except Exception as error:  # noqa: BLE001 - local and gs:// file systems raise many kinds
        raise OutputError(f"{flag} {folder} is not writable ({type(error).__name__}: {error}); check the path "
                          "and its permissions") from None


def prepare(folder: str, marker: str, own_files: Sequence[str], overwrite: bool, what: str,
            flag: str = "--output") -> None:
    """Makes `folder` ready for a new run: refuses a finished run unless `overwrite`, removes earlier files."""
    marker_path = storage.join(folder, marker)
    if storage.exists(marker_path):
        if not overwrite:
            raise OutputError(f"{flag} {folder} already holds a finished {what} ({marker}); choose a new {flag}, "
                              "or pass --overwrite to replace it")
        FileSystems.delete([marker_path])  # first: from here on readers see an unfinished folder, not a mix
        log.info("--overwrite: replacing the %s in %s", what, folder)
    earlier = sorted({path for pattern in own_files for path in storage.match(storage.join(folder, pattern))})
    if earlier:
        log.info("removing %d files of an earlier %s in %s", len(earlier), what, folder)
        FileSystems.delete(earlier)
    check_writable(folder, flag)
