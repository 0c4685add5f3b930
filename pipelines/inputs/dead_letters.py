"""The dead-letter record: every image a stage could not use, with the stage and the reason.

Every input image ends in the stage's output or in a dead letter, so counts add up:
`records (or captions) + dead letters + skipped == images matched`.
"""
from __future__ import annotations

import json

DEAD_LETTER = "dead_letter"   # the tag of every transform's dead-letter output
NAMESPACE = "captioner"       # Beam metrics namespace of the project's counters


DEAD_LETTER_FIELDS = frozenset({"image_id", "path", "stage", "reason"})


def dead_letter(image_id: str, path: str, reason: str, stage: str) -> dict:
    return {"image_id": image_id, "path": path, "stage": stage, "reason": reason}


def to_json(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True)
