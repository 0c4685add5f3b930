"""Kill a trainer at a known point: run it until its backup records an epoch, then SIGKILL it (test helper)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Sequence

from tests.conftest import PROJECT_ROOT

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def backed_up_epoch(metadata: str) -> int:
    """The epoch a BackupAndRestore training_metadata.json records (0 while there is none)."""
    try:
        with open(metadata) as handle:
            return json.load(handle)["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def kill_after_backup(command: Sequence[str], metadata: str, log_path: str, timeout: float) -> int:
    """Runs `command` until `metadata` records an epoch, SIGKILLs it, and returns that epoch (asserting it got one)."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(list(command), cwd=PROJECT_ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + timeout
            while backed_up_epoch(metadata) < 1 and process.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            with open(log_path) as written:
                assert backed_up_epoch(metadata) >= 1, written.read()[-3000:]
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.wait()
    assert process.returncode == -signal.SIGKILL
    return backed_up_epoch(metadata)
