"""The project's own error types: mistakes a user can act on, printed as one line by every entry point.

Raise these (or a subclass) for anything wrong with what the user gave: a flag, a
path, a file's format, a config value, storage that does not answer. The entry
points (`captioner/cli.py`) print `error: <message>` to stderr with no traceback and
exit with `exit_code`; any other exception is a bug and keeps its traceback.
A message says what is wrong with which input, then, after a semicolon, what to do.
"""
from __future__ import annotations


class CaptionerError(Exception):
    """Base of every error a user can fix; exit code 1 (a failure)."""

    exit_code = 1


class UsageError(CaptionerError):
    """A flag or a config value that cannot work; exit code 2, as for argparse's own usage errors."""

    exit_code = 2


class InputError(CaptionerError):
    """An input that is missing, unreadable, of the wrong kind, or does not match the other inputs."""


class OutputError(CaptionerError):
    """An output folder that cannot be written, or holds an earlier run that would be mixed with this one."""


class TrainingFailed(CaptionerError):
    """Training that cannot give a model worth exporting (a loss that became NaN or infinite); nothing is exported."""


class StorageUnreachable(CaptionerError):
    """Storage (gs:// or its emulator) that does not answer within the bounded retry."""


class DamagedInput(InputError):
    """A stored file that fails its own checks (a TFRecord shard's length or CRC), found by a pipeline worker."""
