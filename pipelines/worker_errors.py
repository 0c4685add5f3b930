"""A pipeline that fails in a worker for a reason the user can act on ends in one line, not three tracebacks.

Runners wrap a worker's exception in their own, with its traceback as text, and log it on
the way; a local worker process also prints it to the terminal. Two kinds of failure are
the user's to fix and are turned back into the project's errors (which `cli.run` prints as
one line): a CaptionerError a DoFn raised (a damaged shard), and a full disk or quota under
an output (errno 28 or 122, wherever Beam was writing). Anything else keeps its traceback:
it is a bug.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import sys
from typing import Optional

from captioner import errors

LAUNCHER_PID_ENV = "CAPTIONER_LAUNCHER_PID"  # set by the launcher; a process with another pid is its worker
_RAISED = re.compile(r"captioner\.errors\.(\w+): (.+?)(?: \[while running '[^']*'\])?$", re.MULTILINE)
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL = re.compile(r"\[Errno (?:28|122)\] ([^\[\]\n]+?)(?::[^\[\]\n]*)?(?: \[while running '([^']*)'\])?$",
                        re.MULTILINE)


def user_error(text: str) -> Optional[errors.CaptionerError]:
    """The project's error a failure's text (a message or a traceback) shows, or None when it shows none."""
    raised = _RAISED.search(text)
    kind = getattr(errors, raised.group(1), None) if raised else None
    if isinstance(kind, type) and issubclass(kind, errors.CaptionerError):
        return kind(raised.group(2))
    full = _DISK_FULL.search(text)
    if full:
        where = f" in the Beam step '{full.group(2)}'" if full.group(2) else ""
        return errors.OutputError(f"an output's file system is full ({full.group(1).strip()}{where}); free some "
                                  "space or choose an output with room, then run the same command again (nothing "
                                  "was marked finished)")
    return None


def as_one_line(error: Exception) -> Exception:
    """A pipeline failure as the project's error it comes from, or as it is."""
    if isinstance(error, errors.CaptionerError):
        return error
    return user_error(str(error)) or error


def said_in_one_line(record: logging.LogRecord, message: str) -> bool:
    """An error record of a failure the launcher will say in one line (so the log need not say it again)."""
    raised = record.exc_info[1] if record.exc_info else None
    return isinstance(raised, errors.CaptionerError) or user_error(message) is not None


class _QuietStderr:
    """A worker's stderr without the tracebacks of the failures above (Beam's SDK worker prints each failed
    bundle's traceback there as well as sending it to the launcher)."""

    def __init__(self, stream):
        self.stream, self.dropped = stream, False

    def write(self, text: str) -> int:
        dropped, self.dropped = self.dropped, text.startswith("Traceback") and user_error(text) is not None
        if self.dropped or (dropped and text == "\n"):  # print() writes its end separately
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def stopped_by_ctrl_c(text: str) -> bool:
    """A worker's traceback of the KeyboardInterrupt a terminal's Ctrl-C sends the whole process group."""
    return text.rstrip().endswith("\nKeyboardInterrupt")


def _quiet_ctrl_c(kind, value, traceback) -> None:
    """A worker's unhandled exception, printed unless it is that Ctrl-C (sys.excepthook may be set from the
    thread that imports this package; a signal handler could only be set from the main thread)."""
    if not issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)


def _quiet_unraisable(unraisable) -> None:
    """A full disk also fails the file writers' finalizers ("Exception ignored in ..."): said already."""
    if not (isinstance(unraisable.exc_value, OSError) and unraisable.exc_value.errno in FULL_ERRNOS):
        sys.__unraisablehook__(unraisable)


def quiet_worker_stderr() -> None:
    """In a local worker process (never the launcher, whose --debug tracebacks must show): see above; and no
    traceback when Ctrl-C reaches the workers with the launcher, which stops them and says so in one line."""
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if launcher and launcher != str(os.getpid()) and not isinstance(sys.stderr, _QuietStderr):
        sys.stderr = _QuietStderr(sys.stderr)
        sys.unraisablehook = _quiet_unraisable
        sys.excepthook = _quiet_ctrl_c
