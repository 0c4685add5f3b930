"""Stop a command at a known point: run it until a condition holds, then signal it (test helper)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Callable, List, Sequence, Tuple

from tests.conftest import PROJECT_ROOT

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")  # taken at import: tests that need the GCS emulator's variable
# start their processes through signal_when, which takes the environment when it runs


def backed_up_epoch(metadata: str) -> int:
    """The epoch a BackupAndRestore training_metadata.json records (0 while there is none)."""
    try:
        with open(metadata) as handle:
            return json.load(handle)["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def _session_processes(session: int) -> List[str]:
    """`pid command` of every live process in a session (its zombies are not left running)."""
    listing = subprocess.run(["ps", "-eo", "pid=,sid=,stat=,args="], capture_output=True, text=True).stdout
    fields = [line.split(None, 3) for line in listing.splitlines()]
    return [f"{f[0]} {f[3]}" for f in fields if len(f) == 4 and f[1] == str(session) and not f[2].startswith("Z")]


def signal_when(command: Sequence[str], ready: Callable[[str], bool], sent: int, log_path: str,
                timeout: float) -> Tuple[int, str, List[str]]:
    """Runs `command` in a session of its own until `ready(its output so far)`, sends it `sent`, waits for it.

    SIGINT goes to the whole process group, as a terminal's Ctrl-C does; other signals to the command alone.

    Returns (exit code, its output, the processes of its session still alive 3 s after it ended). Asserts the
    condition was met while the command was still running, so the signal lands where the test says.
    """
    with open(log_path, "w") as log:
        process = subprocess.Popen(list(command), cwd=PROJECT_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + timeout
            while process.poll() is None and time.time() < deadline and not ready(_read(log_path)):
                time.sleep(0.02)
            assert process.poll() is None and ready(_read(log_path)), \
                f"the command ended or timed out before the point to signal it:\n{_read(log_path)[-3000:]}"
            if sent == signal.SIGINT:
                os.killpg(process.pid, sent)
            else:
                os.kill(process.pid, sent)
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    time.sleep(3)
    left = _session_processes(process.pid)
    for line in left:
        os.kill(int(line.split()[0]), signal.SIGKILL)
    return process.returncode, _read(log_path), left


def _read(path: str) -> str:
    with open(path, errors="replace") as handle:
        return handle.read()


def kill_after_backup(command: Sequence[str], metadata: str, log_path: str, timeout: float) -> int:
    """Runs `command` until `metadata` records an epoch, SIGKILLs it, and returns that epoch (asserting it got one)."""
    code, _, _ = signal_when(command, lambda _: backed_up_epoch(metadata) >= 1, signal.SIGKILL, log_path, timeout)
    assert code == -signal.SIGKILL
    return backed_up_epoch(metadata)
