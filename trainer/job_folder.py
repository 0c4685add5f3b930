"""The trainer's job dir: what is where, the local working copy of a gs:// one, and atomic JSON files.

TensorFlow is only handed local paths (its own gs:// ignores the emulator, and its
plugin breaks TF 2.21), so a gs:// job dir is worked on in a local copy: brought
down when the job resumes, mirrored back after every epoch. A killed job loses at
most the epoch it was in, and JSON files are replaced whole, never half-written.

    job.json                       the features and train config the job was started with
    backup/                        BackupAndRestore: the cross-entropy epoch a restart resumes from
    checkpoints/best.weights.h5    the best cross-entropy epoch by dev loss
    logs/                          TensorBoard scalars (train/, validation/)
    history.json                   one entry per run and per cross-entropy epoch
    finetune/                      encoder fine-tuning: backup/, history.json, best.weights.h5, and when it is
                                   over encoder.weights.h5 + decoder.weights.h5
    self_critical/                 history.json, last.weights.h5, best.weights.h5 of the fine-tuning
    export/, eval.json, eval_captions.jsonl, summary.json   (names in captioner/layout.py)
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from typing import Any, Mapping

from apache_beam.io.filesystems import FileSystems

from captioner import storage
from captioner.errors import OutputError

log = logging.getLogger("trainer")

JOB_FILE = "job.json"
BACKUP = "backup"
BACKUP_METADATA = os.path.join(BACKUP, "training_metadata.json")
BEST_WEIGHTS = os.path.join("checkpoints", "best.weights.h5")
LOGS = "logs"
HISTORY = "history.json"
FINETUNE = "finetune"
FINETUNE_ENCODER = os.path.join(FINETUNE, "encoder.weights.h5")  # the fine-tuned encoder (best dev loss) ...
FINETUNE_DECODER = os.path.join(FINETUNE, "decoder.weights.h5")  # ... and its decoder: the phase finished
SELF_CRITICAL = "self_critical"
SELF_CRITICAL_HISTORY = os.path.join(SELF_CRITICAL, "history.json")
SELF_CRITICAL_LAST = os.path.join(SELF_CRITICAL, "last.weights.h5")
SELF_CRITICAL_BEST = os.path.join(SELF_CRITICAL, "best.weights.h5")

@dataclasses.dataclass(frozen=True)
class Phase:
    """Where a `fit` phase keeps its resume state, best weights, history and TensorBoard logs."""
    name: str
    backup: str
    best_weights: str
    history: str
    logs: str

    @property
    def backup_metadata(self) -> str:
        return os.path.join(self.backup, "training_metadata.json")


CROSS_ENTROPY = Phase("cross-entropy", BACKUP, BEST_WEIGHTS, HISTORY, LOGS)
ENCODER_FINETUNING = Phase("encoder fine-tuning", os.path.join(FINETUNE, BACKUP),
                           os.path.join(FINETUNE, "best.weights.h5"), os.path.join(FINETUNE, HISTORY),
                           os.path.join(LOGS, FINETUNE))
_PROGRESS = (BACKUP_METADATA, ENCODER_FINETUNING.backup_metadata, ENCODER_FINETUNING.history,
             SELF_CRITICAL_HISTORY, JOB_FILE)  # a remote job dir holding one has a job
# folders whose files deleted locally are deleted in a gs:// job dir too
_MIRRORED_EXACTLY = (BACKUP, ENCODER_FINETUNING.backup, "export")
# what the trainer writes in a job dir, so --overwrite can start one again without touching anything else
OWN_FILES = (JOB_FILE, f"{BACKUP}/**", "checkpoints/**", f"{LOGS}/**", HISTORY, f"{FINETUNE}/**",
             f"{SELF_CRITICAL}/**", "export/**", "eval.json", "eval_captions.jsonl", "summary.json")
# may change between runs of a job
RESUMABLE = ("epochs", "finetune_encoder_epochs", "self_critical_epochs", "early_stopping_patience")


class JobFolder:
    """A job dir (local or gs://) and the local folder the job works in (the same one when local)."""

    def __init__(self, job_dir: str, local: str):
        self.job_dir = job_dir
        self.local = local
        self.remote = job_dir if storage.is_remote(job_dir) else None

    @classmethod
    def open(cls, job_dir: str, work_dir: str) -> "JobFolder":
        """A local job dir as it is; a gs:// one through a fresh copy under `work_dir`, brought down when
        it holds progress to resume from (the gs:// job dir is the truth, never a stale local copy)."""
        if not storage.is_remote(job_dir):
            os.makedirs(job_dir, exist_ok=True)
            return cls(job_dir, job_dir)
        local = os.path.join(work_dir, "job")
        shutil.rmtree(local, ignore_errors=True)
        os.makedirs(local)
        for relative in _PROGRESS:
            if storage.exists(storage.join(job_dir, *relative.split(os.sep))):
                log.info("found %s in %s: copying the job folder down to resume", relative, job_dir)
                storage.copy_folder_to_local(job_dir, local)
                break
        return cls(job_dir, local)

    @classmethod
    def worker_copy(cls, job_dir: str, work_dir: str, fresh: bool) -> "JobFolder":
        """What a multi-worker job's non-chief process works in: a copy of the chief's job dir (so that it
        resumes from the same epoch as the chief), under `work_dir`, never written back (only the chief
        writes the job dir, as TensorFlow's multi-worker guides prescribe). `fresh` (--overwrite): no copy."""
        local = os.path.join(work_dir, "job")
        shutil.rmtree(local, ignore_errors=True)
        os.makedirs(local)
        if not fresh and any(storage.exists(storage.join(job_dir, *p.split(os.sep))) for p in _PROGRESS):
            if storage.is_remote(job_dir):
                storage.copy_folder_to_local(job_dir, local)
            else:
                shutil.copytree(job_dir, local, dirs_exist_ok=True)
        folder = cls(job_dir, local)
        folder.remote = None
        return folder

    def path(self, relative: str) -> str:
        """The local path of a file in the job dir (what TensorFlow and Keras are given)."""
        return os.path.join(self.local, relative)

    def shown(self, relative: str) -> str:
        """The path as the user named the job dir (gs:// or local), for messages and summaries."""
        return storage.join(self.job_dir, *relative.split(os.sep))

    def exists(self, relative: str) -> bool:
        return os.path.exists(self.path(relative))

    def remove(self, relative: str) -> None:
        if self.exists(relative):
            os.remove(self.path(relative))

    def read_json(self, relative: str, default: Any = None) -> Any:
        if not self.exists(relative):
            return default
        with open(self.path(relative)) as handle:
            return json.load(handle)

    def write_json(self, relative: str, value: Any) -> str:
        """Writes the whole file under a temporary name, then renames it: readers never see half of it."""
        path = self.path(relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as handle:
            json.dump(value, handle, indent=1)
        os.replace(path + ".tmp", path)
        return path

    def backup_epoch(self, phase: Phase = CROSS_ENTROPY) -> int:
        """The epoch of `phase` its backup resumes from (0: no backup)."""
        return int((self.read_json(phase.backup_metadata) or {}).get("epoch", 0))

    def sync(self) -> None:
        """Mirrors the local copy to a gs:// job dir; backup and export files deleted locally go there too."""
        if not self.remote:
            return
        storage.copy_folder_from_local(self.local, self.remote)
        for folder in _MIRRORED_EXACTLY:
            local, remote = self.path(folder), storage.join(self.remote, folder)
            stale = [path for path in storage.match(storage.join(remote, "**"))
                     if not os.path.exists(os.path.join(local, path[len(remote) + 1:]))]
            if stale:
                FileSystems.delete(stale)

    def claim(self, features: str, train: Mapping, overwrite: bool) -> None:
        """Records which features and train config this job dir is for; refuses a job dir started with others.

        A re-run with the same --job_dir resumes the job, which only makes sense for the same job: resuming
        with other features or another decoder would mix two trainings (or fail deep in Keras). Epoch counts
        (RESUMABLE) may change, so a finished job can be extended. `overwrite` starts the job dir afresh.
        """
        earlier = self.read_json(JOB_FILE)
        if earlier and not overwrite:
            changed = sorted(key for key in set(train) | set(earlier["train"])
                             if key not in RESUMABLE and train.get(key) != earlier["train"].get(key))
            if earlier["features"] != features or changed:
                what = (f"features {earlier['features']}" if earlier["features"] != features else
                        ", ".join(f"train.{k}={earlier['train'].get(k)!r} (now {train.get(k)!r})" for k in changed[:3]))
                raise OutputError(f"--job_dir {self.job_dir} holds a job trained with {what}; resume it with the same "
                                  "features and config, choose a new --job_dir, or pass --overwrite to start it again")
        if overwrite:
            self.clear()
        self.write_json(JOB_FILE, {"features": features, "train": dict(train)})

    def clear(self) -> None:
        """Removes every file the trainer writes (OWN_FILES), locally and in a gs:// job dir."""
        for root in ([self.local] + ([self.remote] if self.remote else [])):
            found = sorted({path for pattern in OWN_FILES for path in storage.match(storage.join(root, pattern))})
            if found:
                log.info("--overwrite: removing %d files of the earlier job in %s", len(found), root)
                FileSystems.delete(found)

