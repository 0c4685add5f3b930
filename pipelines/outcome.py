"""Exit 0 only when a job gave the user what they asked for: a run over real input that produced nothing fails.

A script that chains the stages carries on after an exit 0, so an empty result must not look like success:
every image a dead letter, an include list that names none of the images, a split with no records. The
one empty run that is legitimate is an incremental one with nothing new (every image already in the
--skip_existing outputs): it says so in a warning line and exits 0.
"""
from __future__ import annotations

import logging
from typing import Mapping, Optional

from captioner.errors import InputError

log = logging.getLogger(__name__)


def check(done: int, counts: Mapping[str, int], verb: str, output: str, include: Optional[str] = None) -> None:
    """Raises InputError (exit 1) when `done` (records written, images captioned) is 0 for a real input.

    `verb` is what the job does to an image ("caption", "extract"); `counts`: images_matched, dead_letters,
    skipped_existing and (caption job) excluded, as the run's summary counts them.
    """
    did = verb + ("ed" if not verb.endswith("e") else "d")
    if done:
        return
    matched, dead = counts.get("images_matched", 0), counts.get("dead_letters", 0)
    skipped, excluded = counts.get("skipped_existing", 0), counts.get("excluded", 0)
    if skipped and not dead and skipped + excluded == matched:
        log.warning("nothing new to %s: all %d images are in the --skip_existing outputs", verb, skipped)
        print(f"warning: nothing new to {verb}: all {skipped} images are already in the --skip_existing outputs; "
              f"{output} holds an empty run", flush=True)
        return
    if include and excluded and excluded + skipped == matched:
        raise InputError(f"--include {include} names none of the {matched} images matched, so nothing was "
                         f"{did}; check that it names them as their ids (a file name, or the path below the "
                         "pattern's fixed prefix)")
    if dead and dead + skipped + excluded >= matched:
        raise InputError(f"none of the {matched} images could be {did}: each is a dead letter; "
                         f"{output}/dead_letter-*.jsonl gives each one's reason")
    raise InputError(f"{did} nothing of the {matched} images matched ({dead} dead letters, {skipped} already in "
                     f"--skip_existing, {excluded} left out by --include); {output} holds an empty run")
