"""Ctrl-C and SIGTERM end every entry point the same way: child processes stopped, one line, exit 130 or 143.

Both signals raise in the main thread (SIGTERM as `Terminated`, a KeyboardInterrupt), so the
same unwinding runs and no marker is written. A Beam pipeline with worker processes registers
`kill_descendants` to run first, inside the handler: once the launcher unwinds, its gRPC
server goes away under the workers, which then abort with C++ noise; killed first, they say
nothing. Parents of whole stages or trainer workers pass the signal on instead
(`pass_on`), so each child unwinds and says its own line.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from typing import Callable, Iterator, List, Sequence

_BEFORE_UNWINDING: List[Callable[[], None]] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be."""


def _interrupted(signum, frame):
    for number in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not break the unwinding it started
        signal.signal(number, signal.SIG_IGN)
    for stop in list(_BEFORE_UNWINDING):
        stop()
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def raising_on_signals() -> Iterator[None]:
    """Within it (main thread only), SIGINT and SIGTERM raise as above; the earlier handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    earlier = {number: signal.signal(number, _interrupted) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in earlier.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def before_unwinding(stop: Callable[[], None]) -> Iterator[None]:
    """Runs `stop()` inside the signal handler, before any unwinding, while the block runs."""
    _BEFORE_UNWINDING.append(stop)
    try:
        yield
    finally:
        _BEFORE_UNWINDING.remove(stop)


def _children_by_parent() -> dict:
    """{parent pid: [child pids]} from /proc (Linux); empty where there is no /proc."""
    children: dict = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])  # the name in () may hold spaces
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    return children


def kill_descendants() -> None:
    """SIGKILLs every process this one started and theirs (Beam's SDK workers, the METEOR JVM), and silences
    the background threads that then see their workers gone, and the runner's error logs of them (its data
    plane and worker handlers log each lost worker with a traceback): the process is ending on a signal,
    which `cli.run` says in one printed line."""
    children, pending, found = _children_by_parent(), [os.getpid()], []
    while pending:
        started = children.get(pending.pop(), [])
        found += started
        pending += started
    threading.excepthook = lambda args: None
    logging.disable(logging.CRITICAL)
    for pid in set(found):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def pass_on(interrupt: KeyboardInterrupt, children: Sequence[subprocess.Popen], grace_seconds: float = 60.0) -> None:
    """Sends the children the signal this process got and waits for them to unwind, killing any that outlive
    `grace_seconds`: a stopped parent never leaves a stage or a worker running."""
    sent = signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT
    for child in children:
        if child.poll() is None:
            child.send_signal(sent)
    deadline = time.monotonic() + grace_seconds
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
