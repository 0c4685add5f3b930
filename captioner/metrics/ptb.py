"""The COCO tokenization: Stanford CoreNLP 3.4.1's PTBTokenizer, lower-cased, punctuation tokens removed.

The same command and punctuation list as pycocoevalcap's PTBTokenizer, but with the sentences in a
temporary folder of our own (pycocoevalcap writes next to its jar, inside site-packages). One Java process
per call: the caption job calls it once per batch of captions.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from typing import List, Sequence

from captioner.metrics import java

JAR = ("tokenizer", "stanford-corenlp-3.4.1.jar")
VERSION = "Stanford CoreNLP 3.4.1 PTBTokenizer (pycocoevalcap 1.2)"
PUNCTUATIONS = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
                "...", ";"}


def tokenize(sentences: Sequence[str]) -> List[str]:
    """Each sentence as COCO-eval tokens joined by spaces (raises RuntimeError when Java is missing)."""
    reason = java.missing(*JAR)
    if reason:
        raise RuntimeError(f"the COCO tokenizer cannot run: {reason}")
    if not sentences:
        return []
    with tempfile.TemporaryDirectory(prefix="ptb-") as folder:
        path = os.path.join(folder, "sentences.txt")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(s.replace("\n", " ") for s in sentences))
        done = subprocess.run([java.find_java(), "-cp", java.package_file(*JAR),
                               "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", path],
                              capture_output=True, check=True)
    lines = done.stdout.decode("utf-8").split("\n")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS) for line in lines[:len(sentences)]]
