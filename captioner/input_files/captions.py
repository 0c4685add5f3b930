"""Caption and split files: the Flickr8k token file, Kaggle-style CSV, the split lists, and (detected here,
read in annotations.py) COCO caption annotations and Karpathy split files.

Both pipelines read captions through here: extraction to build the records,
caption-and-score to read references. Keys are what the file spells: file
base names (`1000268201_693b08cb0e.jpg`) in Flickr8k's files, COCO's and Karpathy's, or paths.
A UTF-8 byte-order mark, CRLF line ends and blank lines are read as plain text
would be; an empty file, or one whose first line is neither format, is refused
before any work starts, and a malformed line later on is refused with its text.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
from typing import Dict, List, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from captioner import storage
from captioner.errors import InputError, UsageError
from captioner.input_files import annotations, listings
from captioner.layout import SPLIT_FILES

TOKEN_FORMAT = "flickr8k-token"
CSV_FORMAT = "csv"


class CaptionFileError(InputError, ValueError):
    """A caption or split file that cannot be read as any supported format."""


def file_format(path: str) -> str:
    """The format of a caption file, from its first bytes: a JSON one (annotations.FORMATS) or a text one."""
    with FileSystems.open(storage.first_match(path)) as handle:
        raw = handle.read(annotations.HEAD_BYTES)
    try:  # an incremental decode: a character cut at the end of the head is not an error
        codecs.getincrementaldecoder("utf-8")().decode(raw, final=False)
    except UnicodeDecodeError as error:
        raise CaptionFileError(f"{path} is not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start} "
                               "cannot start a UTF-8 character): save it as UTF-8") from None
    head = raw.decode("utf-8", errors="replace")
    fmt = annotations.detect(head)
    if fmt:
        _check_json(path)
        return fmt
    if listings.strip_bom(head).lstrip().startswith("{"):
        raise CaptionFileError(f"{path} is JSON but names no 'images' in its first {annotations.HEAD_BYTES} bytes: "
                               "a caption file in JSON is a COCO caption annotation file or a Karpathy split file "
                               "(a JSONL listing of images goes to --image_list)")
    lines = [line for line in head.splitlines() if listings.strip_bom(line).strip()]  # blank lines are fine
    return detect_format(lines[0] if lines else "", path)


def _check_json(path: str) -> None:
    """A COCO or Karpathy file must be one whole JSON document: checked before any work (a worker reads it again)."""
    with io.TextIOWrapper(FileSystems.open(storage.first_match(path)), encoding="utf-8-sig") as handle:
        try:
            json.load(handle)
        except ValueError as error:
            raise CaptionFileError(f"{path} is not one JSON document ({error}); a COCO or Karpathy caption file is "
                                   "a single JSON object, check that it was copied whole") from None


def detect_format(first_line: str, path: str) -> str:
    """Tells the token file (`<image>#<n><TAB><caption>`) from a CSV with an `image,caption` header."""
    first_line = listings.strip_bom(first_line)
    if not first_line.strip():
        raise CaptionFileError(f"{path} is empty; a caption file holds '<image>#<n><TAB><caption>' lines or an "
                               "'image,caption' CSV header and rows, or is a COCO or Karpathy JSON file")
    header = [cell.strip().lower() for cell in next(csv.reader([first_line]), [])]
    if header[:2] == ["image", "caption"]:
        return CSV_FORMAT
    if "\t" in first_line and "#" in first_line.split("\t", 1)[0]:
        return TOKEN_FORMAT
    raise CaptionFileError(
        f"{path}: first line {first_line[:80]!r} is neither a Flickr8k token line "
        "('<image>#<n><TAB><caption>'), a CSV header 'image,caption', nor the start of a COCO or Karpathy JSON file")


def parse_line(line: str, fmt: str) -> Optional[Tuple[str, str]]:
    """One caption line -> (image key, raw caption); None for blank lines and the CSV header."""
    line = listings.strip_bom(line)
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


def first_lines(path: str, count: int = 1) -> List[str]:
    """The first lines of a file (or of the first file a glob matches), for sniffing its format."""
    with io.TextIOWrapper(FileSystems.open(storage.first_match(path)), encoding="utf-8", errors="replace") as handle:
        lines = [handle.readline() for _ in range(count)]
    return [line for line in lines if line]


def first_line(path: str) -> str:
    lines = first_lines(path)
    return lines[0] if lines else ""


def first_listed_line(pattern: str) -> str:
    """The first line that names something in the files `pattern` matches (in name order), so a listing's
    format can be read; InputError when every one is empty (a listing of nothing is a mistake, not a job)."""
    for path in storage.match(pattern):
        with io.TextIOWrapper(FileSystems.open(path), encoding="utf-8", errors="replace") as handle:
            line = next((line for line in handle if listings.strip_bom(line).strip()), "")
        if line:
            return line
    raise InputError(f"--image_list {pattern} is empty: it lists no image; give a listing with one image a line")


def key_scheme(path: str) -> str:
    """listings.BY_ID when a caption file keys images by path, BY_NAME when by file name (from its first keys;
    COCO and Karpathy files key by file name)."""
    if file_format(path) in annotations.FORMATS:
        return listings.BY_NAME
    lines = [line for line in first_lines(path, 8) if listings.strip_bom(line).strip()][:3]  # blank lines are fine
    fmt = detect_format(lines[0] if lines else "", path)
    keys = [parsed[0] for parsed in (parse_line(line, fmt) for line in lines) if parsed]
    return listings.key_scheme(keys[0]) if keys else listings.BY_NAME


def names_key_scheme(path: str) -> str:
    """What a names file (a split list, an include file) keys images by, from its first name."""
    names = [line.strip() for line in first_lines(path, 3) if line.strip()]
    return listings.key_scheme(listings.strip_bom(names[0])) if names else listings.BY_NAME


def agreed_key_scheme(caption_file: Tuple[str, Optional[str]], names_file: Tuple[str, Optional[str]]) -> str:
    """What a job's caption file and names file key images by (BY_NAME when neither is given); both stages
    join on one key, so the two must agree. Each argument is (its flag, its path or None)."""
    schemes = {}
    if caption_file[1]:
        schemes[caption_file[0]] = key_scheme(caption_file[1])
    if names_file[1]:
        schemes[names_file[0]] = names_key_scheme(names_file[1])
    if len(set(schemes.values())) > 1:
        raise UsageError(f"{caption_file[0]} keys images by {schemes[caption_file[0]]} but {names_file[0]} by "
                         f"{schemes[names_file[0]]}; use the same keys (file names, or paths relative to the images)")
    return next(iter(schemes.values()), listings.BY_NAME)


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
    if not found and splits.rstrip("/").rsplit("/", 1)[-1] in SPLIT_FILES.values():
        raise CaptionFileError(f"--splits {splits} is a split list; pass the folder that holds the split lists")
    if not found:
        raise CaptionFileError(
            f"{splits} holds none of {', '.join(SPLIT_FILES.values())}: pass the folder with the split lists "
            "(one image file name a line) or leave --splits out to put every image in 'unsplit'")
    return found


def read_split_ids(path: str) -> List[str]:
    return [line.strip() for line in storage.read_text(path).splitlines() if line.strip()]
