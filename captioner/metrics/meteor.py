"""METEOR 1.5 (the jar pycocoevalcap ships), as statistics per caption and the score of their sum.

pycocoevalcap sends every caption's `SCORE ||| refs ||| hypothesis` line to one Java process, then one
`EVAL ||| stats ||| stats ...` line, whose last answer is the corpus score: METEOR adds the statistics up
and scores the sum, except that a caption matching its reference whole (one chunk, every word matched)
adds no chunk (so it adds no fragmentation). Here each worker keeps its own Java process for the SCORE
lines, `stats` applies that one rule, the statistics are summed by a combine, and `score` sends the one
summed line: the same corpus score, computed distributedly.
"""
from __future__ import annotations

import subprocess
import threading
import weakref
from typing import List, Optional, Sequence, Tuple

from captioner.metrics import java

JAR = ("meteor", "meteor-1.5.jar")
TEST_LENGTH, REFERENCE_LENGTH, CHUNKS, TEST_MATCHES, REFERENCE_MATCHES = 0, 1, 20, 21, 22  # in a stats line
PIPE_LINES = 64  # SCORE lines per write: well inside a pipe's 64 KB buffer, so neither side blocks
VERSION = "METEOR 1.5 (pycocoevalcap 1.2; -l en -norm)"


class Meteor:
    """One METEOR Java process: loading its paraphrase tables takes seconds and a 2 GB heap, so a worker
    process keeps one (thread-safe) and shares it; the Java process ends with this object or at `close`."""

    def __init__(self):
        reason = java.missing(*JAR)
        if reason:
            raise RuntimeError(f"METEOR cannot run: {reason}")
        jar = java.package_file(*JAR)
        self._process = subprocess.Popen(
            [java.find_java(), "-jar", "-Xmx2G", jar, "-", "-", "-stdio", "-l", "en", "-norm"],
            cwd=jar.rsplit("/", 1)[0], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop, self._process)

    def _ask(self, lines: Sequence[str], answers_each: int = 1) -> List[str]:
        """Sends the lines at once and reads every answer: one pipe round trip, not one per line (10x faster)."""
        with self._lock:
            self._process.stdin.write("".join(line + "\n" for line in lines).encode("utf-8"))
            self._process.stdin.flush()
            return [self._process.stdout.readline().decode("utf-8").strip()
                    for _ in range(answers_each * len(lines))]

    def stats(self, hypothesis: str, references: Sequence[str]) -> List[float]:
        """The caption's METEOR statistics (its SCORE line's numbers) as they add into the corpus sum."""
        return self.stats_of_many([(hypothesis, references)])[0]

    def stats_of_many(self, captions: Sequence[Tuple[str, Sequence[str]]]) -> List[List[float]]:
        """`stats` of each (hypothesis, references), PIPE_LINES at a time."""
        answers = []
        for start in range(0, len(captions), PIPE_LINES):
            answers += self._ask([" ||| ".join(("SCORE", " ||| ".join(references),
                                                hypothesis.replace("|||", "").replace("  ", " ")))
                                  for hypothesis, references in captions[start:start + PIPE_LINES]])
        return [_without_whole_match_chunk([float(value) for value in line.split()]) for line in answers]

    def score(self, summed: Sequence[float]) -> float:
        """The METEOR score of summed statistics (of one caption: its own score)."""
        _, corpus = self._ask(["EVAL ||| " + " ".join(repr(float(v)) for v in summed)], answers_each=2)
        return float(corpus)

    def close(self) -> None:
        self._finalizer()


def _without_whole_match_chunk(stats: List[float]) -> List[float]:
    if (stats[CHUNKS] == 1 and stats[TEST_MATCHES] == stats[TEST_LENGTH]
            and stats[REFERENCE_MATCHES] == stats[REFERENCE_LENGTH]):
        stats[CHUNKS] = 0.0  # a whole match: METEOR's aggregate counts no chunk for it
    return stats


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.stdin.close()
        process.kill()
        process.wait()


def summed(stats: Sequence[Sequence[float]]) -> Optional[List[float]]:
    """Element-wise sum of statistics lines (None for none)."""
    rows = [list(s) for s in stats]
    return [sum(column) for column in zip(*rows)] if rows else None
