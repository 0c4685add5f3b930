"""Where the images of a set come from and what each is called: ids, file names, listing files.

An image's id is unique in its whole set: the path relative to the glob's fixed
prefix (`photos/**` gives `2019/IMG_0001.jpg`), or the path as a listing file
spells it. Caption and split files that key captions by bare file name
(Flickr8k, Kaggle CSV) are joined on the file name instead (`join_key`), and a
name that several images share is reported, never resolved by a silent pick.

A listing file holds one image a line, in one of three formats told apart by
its first line: plain paths; CSV with a `path` (or `uri`) column and optional
`caption` column; JSON lines `{"path": ..., "caption": ...}` (or "captions": [...]).
Relative paths are relative to the listing file's folder.
"""
from __future__ import annotations

import csv
import json
import os
import posixpath
import re
from typing import List, Optional, Tuple

from captioner import storage
from captioner.errors import InputError

BY_NAME, BY_ID = "name", "id"   # what a caption, split or include file keys images by
TEXT_LIST, CSV_LIST, JSONL_LIST = "text", "csv", "jsonl"
BOM = "\ufeff"
_WILDCARD = re.compile(r"[*?\[]")


def file_name(path: str) -> str:
    """The file's base name, exactly as the Flickr8k caption files key captions (case, spaces, unicode kept)."""
    name = posixpath.basename(path) if storage.is_remote(path) else os.path.basename(path)
    if not name:
        raise ValueError(f"path {path!r} ends in a separator: it names no file")
    return name


def fixed_prefix(pattern: str) -> str:
    """The folder part of a glob before its first wildcard: `gs://b/photos/**/*.jpg` -> `gs://b/photos/`."""
    wildcard = _WILDCARD.search(pattern)
    head = pattern[:wildcard.start()] if wildcard else pattern
    return head[:head.rfind("/") + 1]


def relative_id(path: str, prefix: str) -> str:
    """A matched path's id: the part after the pattern's fixed prefix (its file name when outside it)."""
    if not storage.is_remote(path):
        path, prefix = os.path.abspath(path), os.path.abspath(prefix) + os.sep if prefix else ""
    return path[len(prefix):].replace(os.sep, "/") if prefix and path.startswith(prefix) else file_name(path)


def join_key(image_id: str, path: str, scheme: str) -> str:
    return file_name(path) if scheme == BY_NAME else image_id


def key_scheme(first_key: str) -> str:
    """BY_ID when a file's keys are paths (they hold a '/'), else BY_NAME."""
    return BY_ID if "/" in first_key else BY_NAME


def strip_bom(line: str) -> str:
    return line[len(BOM):] if line.startswith(BOM) else line


# --- listing files --------------------------------------------------------------------------------
def listing_format(first_line: str, source: str = "the listing") -> Tuple[str, List[str]]:
    """(format, CSV header) of a listing file (`source`, for messages) from its first line."""
    line = strip_bom(first_line).strip()
    if line.startswith("{"):
        return JSONL_LIST, []
    header = [cell.strip().lower() for cell in next(csv.reader([line]), [])]
    if "path" in header or "uri" in header:
        return CSV_LIST, header
    if len(header) > 1 and all(re.fullmatch(r"[a-z_ ]+", cell) for cell in header):
        # words, no dots or slashes: a header naming other columns, not a path (its lines would all be misread)
        raise InputError(f"{source} starts with {line!r}, a CSV header without a 'path' (or 'uri') column; "
                         "a CSV listing has columns path (or uri) and, optionally, caption")
    return TEXT_LIST, []


def carries_captions(fmt: str, header: List[str]) -> bool:
    """Whether a listing of this format can hold captions (JSON lines, or CSV with a caption column)."""
    return fmt == JSONL_LIST or "caption" in header


def _resolve(entry: str, base: str) -> str:
    """A listed path, relative ones taken relative to the listing's folder (`base`)."""
    if storage.is_remote(entry) or os.path.isabs(entry) or not base:
        return entry
    return storage.join(base, posixpath.normpath(entry))


def parse_listing_line(line: str, fmt: str, header: List[str], base: str,
                       source: str) -> Optional[Tuple[str, str, List[str]]]:
    """(id, path, raw captions) of one listing line; None for blank lines and the CSV header."""
    line = strip_bom(line).rstrip("\r\n")
    if not line.strip():
        return None
    if fmt == JSONL_LIST:
        try:
            entry = json.loads(line)
        except ValueError as error:
            raise InputError(f"{source}: line {line[:80]!r} is not JSON ({error}); a JSON-lines listing holds "
                             "one {\"path\": ..., \"caption\": ...} object a line") from None
        listed = (entry.get("path") or entry.get("uri")) if isinstance(entry, dict) else None
        if not isinstance(listed, str):
            raise InputError(f"{source}: line {line[:80]!r} has no \"path\"; each line needs one")
        captions = entry.get("captions") or ([entry["caption"]] if entry.get("caption") else [])
    elif fmt == CSV_LIST:
        row = dict(zip(header, next(csv.reader([line]))))
        if [cell.strip().lower() for cell in row.values()] == header:
            return None  # the header line itself
        listed = (row.get("path") or row.get("uri") or "").strip()
        captions = [row["caption"].strip()] if row.get("caption", "").strip() else []
    else:
        listed, captions = line.strip(), []
    if not listed:
        raise InputError(f"{source}: line {line[:80]!r} names no image path")
    listed = posixpath.normpath(listed) if not storage.is_remote(listed) and not os.path.isabs(listed) else listed
    return listed, _resolve(listed, base), [str(c) for c in captions]
