"""Held-out evaluation after training: corpus BLEU-1..4 and CIDEr-D of the exported bundle on one split.

It captions through `captioner.bundle.Captioner` (stored features in, captions
out), the same path the caption job takes, so the score measures what was
exported. References are the records' cleaned captions, the same cleaning the
training targets had (captioner.text); BLEU is corpus-level and unsmoothed, CIDEr-D
is the caption job's (captioner/metrics/cider.py) with the split's own document
frequencies. `score_captions` is also how self-critical epochs are scored on dev.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Callable, Dict, Iterator, List, Mapping, Sequence, Tuple

from captioner.decoder.decoding import Decoding
from captioner.metrics import bleu, cider
from captioner.layout import EVAL_CAPTIONS_FILE, EVAL_FILE
from trainer import data as data_lib
from trainer.job_folder import JobFolder

log = logging.getLogger("trainer")

SAMPLES_KEPT = 10  # captions shown in eval.json; every caption is in eval_captions.jsonl


def score_captions(references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]]) -> Dict:
    """{"bleu": corpus BLEU-1..4, "cider_d": corpus CIDEr-D} of word-list captions against their references;
    None for both when there is nothing to score (no image with references), never a score of 0."""
    if not hypotheses:
        return {"bleu": None, "cider_d": None}
    joined = [[" ".join(r) for r in image_refs] for image_refs in references]
    df = cider.document_frequencies(joined)
    cider_d = sum(cider.cider_d(" ".join(h), refs, df, len(joined)) for h, refs in zip(hypotheses, joined))
    return {"bleu": bleu.corpus_bleu(references, hypotheses), "cider_d": cider_d / len(hypotheses)}


def caption_split(data, split: str, batch_size: int,
                  caption_batch: Callable[[object], List[Tuple[str, float]]]) -> Iterator[Tuple[str, str, float, List]]:
    """(image id, caption, log-prob, references) for every image of `split`, captioned a batch at a time by
    `caption_batch(arrays) -> [(caption, log-prob)]`: the one loop of the final evaluation and the dev scores."""
    for image_ids, arrays, refs in data.images(split, batch_size):
        yield from ((image_id, caption, score, image_refs)
                    for image_id, (caption, score), image_refs in zip(image_ids, caption_batch(arrays), refs))


def evaluate(captioner, data, split: str, batch_size: int, decoding: Decoding) -> Tuple[dict, List[dict]]:
    """Captions every image of `split` (a data.CaptionData split: its stored features, or its kept images through
    the bundle's encoder) with `decoding` and scores them against its references.

    Returns eval.json's content and one row per image (id, caption, log-prob, references).
    """
    def caption_batch(arrays):
        if data.source == data_lib.IMAGES:
            return captioner.caption_images(arrays, decoding)
        return captioner.caption_features({captioner.feature: arrays}, decoding)

    started = time.time()
    references, hypotheses, rows = [], [], []
    for image_id, caption, score, image_refs in caption_split(data, split, batch_size, caption_batch):
        rows.append({"image_id": image_id, "caption": caption, "log_prob": round(score, 4),
                     "references": [" ".join(r) for r in image_refs]})
        if image_refs:
            references.append(image_refs)
            hypotheses.append(caption.split())
    scored = score_captions(references, hypotheses)
    result = {"split": split, "images": len(hypotheses), "decoding": decoding.describe(),
              "seconds": round(time.time() - started, 2), "samples": rows[:SAMPLES_KEPT]}
    if scored["bleu"] is None:
        result.update(bleu=None, bleu_x100=None, cider_d=None,
                      not_scored=f"none of the {len(rows)} {split} images has reference captions")
        log.warning("%s not scored: %s", split, result["not_scored"])
        return result, rows
    result.update(bleu={f"bleu{n}": round(s, 6) for n, s in enumerate(scored["bleu"], start=1)},
                  bleu_x100=[round(100 * s, 2) for s in scored["bleu"]], cider_d=round(scored["cider_d"], 6))
    log.info("%s BLEU-1..4 x100 on %d images (%s): %s, CIDEr-D x100 %.1f", split, len(hypotheses),
             result["decoding"], " / ".join(f"{b:.1f}" for b in result["bleu_x100"]), 100 * scored["cider_d"])
    return result, rows


def write(folder: JobFolder, result: Mapping, rows: List[dict]) -> str:
    """Writes eval.json (scores and a few samples) and eval_captions.jsonl (every caption)."""
    path = folder.write_json(EVAL_FILE, dict(result))
    with open(folder.path(EVAL_CAPTIONS_FILE), "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path
