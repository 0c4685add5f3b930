"""The caption job's outputs: captions (JSONL and CSV), dead letters, bleu.json and the HTML gallery.

Written once at the end from the collected rows, sorted by image id, so two runs
give identical files. The rows of a large set stay a list in one worker; the
gallery shows at most GALLERY_MAX of them.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Dict, List, Sequence

from captioner import storage
from captioner.layout import BLEU_JSON, CAPTIONS_CSV, CAPTIONS_JSONL, DEAD_LETTER_FILE, REPORT_HTML
from pipelines import inputs
from pipelines.caption.gallery import render_gallery

GALLERY_MAX = 2000


def _jsonl(rows: Sequence[Dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def _csv(rows: Sequence[Dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image_id", "caption", "log_prob", "sentence_bleu"])
    for row in rows:
        score = "" if row["sentence_bleu"] is None else f"{row['sentence_bleu']:.6f}"
        writer.writerow([row["image_id"], row["caption"], f"{row['log_prob']:.6f}", score])
    return buffer.getvalue()


def counts_of(rows: Sequence[Dict], dead_letters: Sequence[Dict], matched: int) -> Dict[str, int]:
    with_references = sum(1 for row in rows if row["references"])
    return {"images_matched": matched, "captioned": len(rows), "dead_letters": len(dead_letters),
            "scored": with_references, "without_references": len(rows) - with_references}


def identity_of(bundle: Dict) -> Dict:
    """What the report says about the model: decoder and encoder identity."""
    return {"decoder": bundle["decoder"], "encoder": bundle["encoder"]["name"],
            "encoder_sha256": bundle["encoder"]["weights_sha256"]}


def write_all(_, settings, rows: List[Dict], dead_letters: List[Dict], corpus: Dict, matched: int) -> Dict:
    """Writes every output file under settings.output; returns bleu.json's content."""
    rows = sorted(rows, key=lambda row: row["image_id"])
    counts = counts_of(rows, dead_letters, matched)
    scored = counts["scored"] > 0
    summary = {
        "bleu": corpus["bleu"] if scored else None,
        "bleu_names": ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"],
        "counts": counts,
        "model": identity_of(settings.bundle),
        "decoding": {"beam_size": settings.config.caption.beam_size,
                     "length_penalty": settings.config.caption.length_penalty,
                     "max_length": settings.config.caption.max_length},
        "input": settings.images or f"{settings.features} ({settings.split})",
        "hypothesis_length": corpus["hypothesis_length"],
        "reference_length": corpus["reference_length"],
    }
    out = settings.output
    plain_rows = [{k: v for k, v in row.items() if k != "thumbnail"} for row in rows]
    storage.write_text(storage.join(out, CAPTIONS_JSONL), _jsonl(plain_rows))
    storage.write_text(storage.join(out, CAPTIONS_CSV), _csv(rows))
    storage.write_text(storage.join(out, DEAD_LETTER_FILE),
                       "".join(line + "\n" for line in sorted(map(inputs.dead_letter_json, dead_letters))))
    storage.write_text(storage.join(out, BLEU_JSON), json.dumps(summary, indent=2, sort_keys=True) + "\n")
    storage.write_text(storage.join(out, REPORT_HTML), render_gallery(rows[:GALLERY_MAX], summary))
    return summary
