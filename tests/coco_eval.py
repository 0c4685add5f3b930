"""The official MS-COCO caption evaluation (pycocoevalcap 1.2, pycocotools), run as its authors run it,
for the tests to hold the project's scores against. SPICE is left out: its models download on first use.
"""
from typing import Dict, List

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from pycocotools.coco import COCO

TOLERANCE = {"METEOR": 1e-4}  # the issue's: 1e-6 for every other score
DEFAULT_TOLERANCE = 1e-6


def scorers() -> Dict:
    """pycocoevalcap's tokenizer and scorers (they call plain `java`: put one on PATH first)."""
    return {"tokenizer": PTBTokenizer(), "bleu": Bleu(4), "meteor": Meteor(), "rouge": Rouge(), "cider": Cider()}


def score_tokenized(official: Dict, tok_gts: Dict, tok_res: Dict) -> Dict[str, float]:
    """Every score of COCOEvalCap.evaluate but SPICE, on captions its tokenizer already tokenized."""
    bleu, _ = official["bleu"].compute_score(tok_gts, tok_res, verbose=0)
    return {**{f"BLEU-{n}": b for n, b in enumerate(bleu, start=1)},
            "METEOR": official["meteor"].compute_score(tok_gts, tok_res)[0],
            "ROUGE-L": official["rouge"].compute_score(tok_gts, tok_res)[0],
            "CIDEr-D": official["cider"].compute_score(tok_gts, tok_res)[0]}


def evaluate_files(official: Dict, annotation_file: str, results: List[Dict]) -> Dict[str, float]:
    """COCOEvalCap(coco, coco.loadRes(results)).evaluate(), but SPICE: the official scripts on the files."""
    coco = COCO(annotation_file)
    coco_results = coco.loadRes(results)
    image_ids = coco_results.getImgIds()
    gts = {i: coco.imgToAnns[i] for i in image_ids}
    res = {i: coco_results.imgToAnns[i] for i in image_ids}
    return score_tokenized(official, official["tokenizer"].tokenize(gts), official["tokenizer"].tokenize(res))
