"""Held-out evaluation after training: corpus BLEU-1..4 of the exported bundle on one split.

It captions through `bundle.Captioner` (stored features in, captions out), the
same path the caption job takes, so the score measures what was exported.
References are the records' cleaned captions, the same cleaning the training
targets had (captioner.text); BLEU is corpus-level and unsmoothed.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import List, Mapping, Sequence

log = logging.getLogger("trainer")

EVAL_FILE = "eval.json"
CAPTIONS_FILE = "eval_captions.jsonl"


def corpus_bleu(references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]]) -> List[float]:
    """BLEU-1..4 with captioner.bleu (nltk's numbers); nltk itself if that module is missing."""
    try:
        from captioner import bleu
        return [float(b) for b in bleu.corpus_bleu(references, hypotheses)]
    except ImportError:
        from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu
        weights = [(1.0,), (0.5, 0.5), (1 / 3, 1 / 3, 1 / 3), (0.25, 0.25, 0.25, 0.25)]
        return [float(nltk_corpus_bleu(references, hypotheses, weights=w)) for w in weights]


def evaluate(captioner, data, split: str, batch_size: int = 64, beam_size: int = 1,
             length_penalty: float = 0.0) -> dict:
    """Captions every image of `split` (a data.CaptionData split) and scores them against its references."""
    started = time.time()
    references, hypotheses, rows = [], [], []
    for image_ids, arrays, refs in data.images(split, batch_size):
        captions = captioner.caption_features({captioner.feature: arrays}, beam_size=beam_size,
                                              length_penalty=length_penalty)
        for image_id, (caption, score), image_refs in zip(image_ids, captions, refs):
            rows.append({"image_id": image_id, "caption": caption, "log_prob": round(score, 4),
                         "references": [" ".join(r) for r in image_refs]})
            if image_refs:
                references.append(image_refs)
                hypotheses.append(caption.split())
    scores = corpus_bleu(references, hypotheses) if hypotheses else [0.0] * 4
    result = {
        "split": split,
        "images": len(hypotheses),
        "decoding": "greedy" if beam_size == 1 else f"beam {beam_size}, length penalty {length_penalty}",
        "bleu": {f"bleu{n}": round(s, 6) for n, s in enumerate(scores, start=1)},
        "bleu_x100": [round(100 * s, 2) for s in scores],
        "seconds": round(time.time() - started, 2),
        "samples": rows[:10],
    }
    log.info("%s BLEU-1..4 x100 on %d images (%s): %s", split, len(hypotheses), result["decoding"],
             " / ".join(f"{b:.1f}" for b in result["bleu_x100"]))
    result["_rows"] = rows
    return result


def write(local_job: str, result: Mapping) -> str:
    """Writes eval.json (scores and a few samples) and eval_captions.jsonl (every caption)."""
    rows = result.get("_rows", [])
    summary = {k: v for k, v in result.items() if k != "_rows"}
    path = os.path.join(local_job, EVAL_FILE)
    with open(path, "w") as handle:
        json.dump(summary, handle, indent=2)
    with open(os.path.join(local_job, CAPTIONS_FILE), "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path
