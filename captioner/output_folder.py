"""One run per output folder: a stage refuses a folder that holds a finished earlier run unless told to replace it.

Why this design: a features folder or a caption output is read through its
marker file (manifest.json, bleu.json), written last, which lists every file of
the run; readers read those files and nothing else. So a folder is either
finished (its marker names one run's files) or unfinished (no marker: readers
refuse it), never a mix. Before a run, `prepare` refuses a finished folder
unless `--overwrite` is given, then removes the marker first and the files it
lists, and nothing else: a file that only looks like the stage's (a user's
`captions-00000-of-00005.jsonl`, a shard an interrupted run left) is never
deleted, only reported, since no marker says it is the project's. The one
exception is Beam's own temporary folders (`beam-temp-<one of the stage's sink
prefixes>-<uuid>`): a run that was interrupted or killed leaves them, Beam never
reuses them, and the next run of the same stage removes them. Incremental runs
(`--skip_existing`) write a new folder whose marker lists the earlier folder's
files too; those lie outside the folder and are never touched.
"""
from __future__ import annotations

import glob
import json
import logging
import posixpath
import re
import uuid
from typing import Callable, Iterable, Sequence

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


def prepare(folder: str, marker: str, listed_files: Callable[[dict, str], Iterable[str]],
            own_names: Sequence[str], overwrite: bool, what: str, flag: str = "--output") -> None:
    """Makes `folder` ready for a new run: refuses a finished run unless `overwrite`, then removes its marker and
    the files `listed_files(marker content, folder)` names inside `folder`; files named like `own_names` that no
    marker lists are left alone and reported."""
    marker_path = storage.join(folder, marker)
    if storage.exists(marker_path):
        if not overwrite:
            raise OutputError(f"{flag} {folder} already holds a finished {what} ({marker}); choose a new {flag}, "
                              "or pass --overwrite to replace it")
        listed = json.loads(storage.read_text(marker_path))
        FileSystems.delete([marker_path])  # first: from here on readers see an unfinished folder, not a mix
        inside = folder.rstrip("/") + "/"
        earlier = sorted({path for path in listed_files(listed, folder)
                          if path.startswith(inside) and storage.exists(path)})
        log.info("--overwrite: replacing the %s in %s (%d files it listed)", what, folder, len(earlier))
        if earlier:
            FileSystems.delete(earlier)
    _remove_beam_temp_folders(folder, own_names)
    strays = sorted({path for pattern in own_names for path in storage.match(storage.join(folder, pattern))})
    if strays:
        log.warning("%s holds %d files named like a %s's (e.g. %s) that no finished run lists; they are left "
                    "alone (readers read only what the marker lists), remove them yourself before globbing the "
                    "folder", folder, len(strays), what, strays[0])
    check_writable(folder, flag)


def _remove_beam_temp_folders(folder: str, own_names: Sequence[str]) -> None:
    """Deletes the `beam-temp-<prefix>-<uuid>` folders Beam's file sinks of this stage left in `folder` when a run
    was interrupted: they hold only unfinished shards, and Beam never goes back to them."""
    leftovers = set()
    for pattern in own_names:
        parent, name = posixpath.split(pattern)
        prefix = name.split("*", 1)[0].rstrip("-")
        if not prefix or prefix == name:
            continue  # a single file, not a sink's shards
        temp = re.compile(rf"^(.*/beam-temp-{re.escape(prefix)}-[0-9a-f]{{32}})(/|$)")
        for path in _folders_and_contents(storage.join(folder, parent, f"beam-temp-{prefix}-*")):
            found = temp.match(path)
            if found:
                leftovers.add(found.group(1))
    if leftovers:
        log.info("removing %d temporary folders an interrupted run left in %s (e.g. %s)", len(leftovers), folder,
                 sorted(leftovers)[0])
        slash = "/" if storage.is_remote(folder) else ""  # gs:// deletes a folder's objects given its path with "/"
        FileSystems.delete([path + slash for path in sorted(leftovers)])


def _folders_and_contents(pattern: str) -> Sequence[str]:
    """Local folders (empty ones too) matching a glob; on gs://, where folders are only prefixes, the objects
    inside them."""
    return storage.match(pattern + "/**") if storage.is_remote(pattern) else glob.glob(pattern)
