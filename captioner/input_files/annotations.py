"""The field's JSON caption files: COCO caption annotations and Karpathy's split files.

    COCO      captions_train2014.json: {"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}
    Karpathy  dataset_coco.json, dataset_flickr8k.json, dataset_flickr30k.json:
              {"images": [{"filename", "split", "sentences": [{"raw"}], "cocoid"?}]}

Both key images by file name. A Karpathy file also decides each image's split (`restval` is train, `val`
is dev) and a COCO or Karpathy-COCO file gives each image its COCO id, which the caption job writes into
its COCO results so the official scripts can score them. JSON is not splittable: one worker parses a
whole file (memory grows with that file, not with the image set; a glob of several files spreads them).
"""
from __future__ import annotations

from typing import Dict, Iterator, Mapping, Tuple

from captioner.errors import InputError
from captioner.input_files import listings

COCO_FORMAT = "coco"
KARPATHY_FORMAT = "karpathy"
FORMATS = (COCO_FORMAT, KARPATHY_FORMAT)
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "dev", "test": "test"}
HEAD_BYTES = 65536  # a Karpathy file names "sentences" in its first image entry, well within this

CAPTION, SPLIT, COCO_ID, BAD = "caption", "split", "coco_id", "bad"  # the kinds of entry a file yields
Entry = Tuple[str, str, object]  # (kind, image file name, value); BAD: ("bad", "", what is wrong)


def detect(head: str) -> "str | None":
    """COCO_FORMAT or KARPATHY_FORMAT for a file whose text starts with `head`; None when it is not a JSON
    object naming "images" (both formats do, early)."""
    head = listings.strip_bom(head).lstrip()
    if not head.startswith("{") or '"images"' not in head:
        return None
    return KARPATHY_FORMAT if '"sentences"' in head else COCO_FORMAT


def entries(document, fmt: str, path: str) -> Iterator[Entry]:
    """Every caption, split and COCO id a parsed file holds; entries that name nothing usable as BAD."""
    if not isinstance(document, Mapping) or not isinstance(document.get("images"), list):
        raise InputError(f"{path} is JSON but holds no 'images' list: neither a COCO caption annotation file "
                         "('images' + 'annotations') nor a Karpathy split file ('images' with 'sentences')")
    if fmt == KARPATHY_FORMAT:
        yield from _karpathy(document["images"])
        return
    if not isinstance(document.get("annotations"), list):
        raise InputError(f"{path} holds 'images' but no 'annotations' list: a COCO caption annotation file has "
                         "both (captions_train2014.json); a Karpathy split file has 'sentences' in each image")
    yield from _coco(document["images"], document["annotations"])


def _coco(images, annotations) -> Iterator[Entry]:
    names: Dict[object, str] = {}
    for image in images:
        if not isinstance(image, Mapping) or "id" not in image or not image.get("file_name"):
            yield BAD, "", f"image entry without id and file_name: {str(image)[:120]}"
            continue
        names[image["id"]] = image["file_name"]
        if isinstance(image["id"], int):  # COCO's ids are ints; the official scripts match results by them
            yield COCO_ID, image["file_name"], image["id"]
    for annotation in annotations:
        name = names.get(annotation.get("image_id")) if isinstance(annotation, Mapping) else None
        caption = annotation.get("caption") if isinstance(annotation, Mapping) else None
        if name is None or not isinstance(caption, str):
            yield BAD, "", f"annotation without a listed image_id and a caption: {str(annotation)[:120]}"
            continue
        yield CAPTION, name, caption.strip()


def _karpathy(images) -> Iterator[Entry]:
    for image in images:
        name = image.get("filename") if isinstance(image, Mapping) else None
        split = KARPATHY_SPLITS.get(image.get("split")) if name else None
        if not name or split is None:
            yield BAD, "", (f"image entry without a filename and a split of {sorted(KARPATHY_SPLITS)}: "
                            f"{str(image)[:120]}")
            continue
        yield SPLIT, name, split
        if isinstance(image.get("cocoid"), int):
            yield COCO_ID, name, image["cocoid"]
        for sentence in image.get("sentences", []):
            raw = sentence.get("raw") if isinstance(sentence, Mapping) else None
            if raw is None and isinstance(sentence, Mapping) and sentence.get("tokens"):
                raw = " ".join(sentence["tokens"])
            if isinstance(raw, str):
                yield CAPTION, name, raw.strip()
            else:
                yield BAD, "", f"{name}: sentence without 'raw' or 'tokens': {str(sentence)[:120]}"
