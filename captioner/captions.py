"""Caption and split files: the Flickr8k token file, Kaggle-style CSV, and the split lists.

Both pipelines read captions through here: extraction to build the records,
caption-and-score to read references. Image ids are file base names
(`1000268201_693b08cb0e.jpg`), as the Flickr8k files spell them.
"""
from __future__ import annotations

import csv
import io
from typing import Dict, List, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from captioner import storage
from captioner.layout import SPLIT_FILES

TOKEN_FORMAT = "flickr8k-token"
CSV_FORMAT = "csv"


class CaptionFileError(ValueError):
    """A caption or split file that cannot be read as any supported format."""


def detect_format(first_line: str, path: str) -> str:
    """Tells the token file (`<image>#<n><TAB><caption>`) from a CSV with an `image,caption` header."""
    header = [cell.strip().lower() for cell in next(csv.reader([first_line]), [])]
    if header[:2] == ["image", "caption"]:
        return CSV_FORMAT
    if "\t" in first_line and "#" in first_line.split("\t", 1)[0]:
        return TOKEN_FORMAT
    raise CaptionFileError(
        f"{path}: first line {first_line[:80]!r} is neither a Flickr8k token line "
        "('<image>#<n><TAB><caption>') nor a CSV header 'image,caption'")


def parse_line(line: str, fmt: str) -> Optional[Tuple[str, str]]:
    """One caption line -> (image id, raw caption); None for blank lines and the CSV header."""
    if not line.strip():
        return None
    if fmt == TOKEN_FORMAT:
        key, sep, caption = line.rstrip("\r\n").partition("\t")
        if not sep:
            raise CaptionFileError(f"caption line without a TAB: {line[:80]!r}")
        return key.rsplit("#", 1)[0].strip(), caption.strip()
    row = next(csv.reader([line]))
    if [cell.strip().lower() for cell in row[:2]] == ["image", "caption"]:
        return None
    if len(row) < 2:
        raise CaptionFileError(f"CSV caption line without 'image,caption': {line[:80]!r}")
    return row[0].strip(), ",".join(row[1:]).strip()


def first_line(path: str) -> str:
    with io.TextIOWrapper(FileSystems.open(path), encoding="utf-8") as handle:
        return handle.readline()


def read_captions(path: str) -> Dict[str, List[str]]:
    """The whole caption file as {image id: [raw captions]} (for references; extraction streams it)."""
    text = storage.read_text(path)
    lines = text.splitlines()
    if not lines:
        return {}
    fmt = detect_format(lines[0], path)
    captions: Dict[str, List[str]] = {}
    for line in lines:
        parsed = parse_line(line, fmt)
        if parsed:
            captions.setdefault(parsed[0], []).append(parsed[1])
    return captions


def split_files(splits: str) -> Dict[str, str]:
    """The split list files present in a folder, {split: path}; an error naming what is expected."""
    found = {split: storage.join(splits, name) for split, name in SPLIT_FILES.items()
             if storage.exists(storage.join(splits, name))}
    if not found:
        raise CaptionFileError(
            f"{splits} holds none of {', '.join(SPLIT_FILES.values())}: pass the folder with the split lists "
            "(one image file name a line) or leave --splits out to put every image in 'unsplit'")
    return found


def read_split_ids(path: str) -> List[str]:
    return [line.strip() for line in storage.read_text(path).splitlines() if line.strip()]


def read_splits(splits: str) -> Dict[str, str]:
    """{image id: split} from a folder of split lists; an id listed in two splits is an error."""
    assignment: Dict[str, str] = {}
    for split, path in split_files(splits).items():
        for image_id in read_split_ids(path):
            if assignment.get(image_id, split) != split:
                raise CaptionFileError(
                    f"{image_id} is listed in both the {assignment[image_id]} and the {split} split files")
            assignment[image_id] = split
    return assignment
