"""What every entry point shares: one-line errors, strict flags (the project's and Beam's), `--debug`.

A user's mistake (`errors.CaptionerError`) prints `error: <what is wrong with which
input>; <what to do>` to stderr and exits 2 (usage) or 1 (failure), without a
traceback; `--debug` or CAPTIONER_DEBUG=1 shows it. Flags an entry point does not
know are Beam pipeline options only when Beam knows them: a typo never reaches
Beam, which would drop it with a warning and run with the default.
"""
from __future__ import annotations

import argparse
import difflib
import errno
import os
import signal
import sys
from typing import Callable, List, Optional, Sequence, Tuple

from captioner import interrupts
from captioner.errors import CaptionerError, UsageError

DEBUG_ENV = "CAPTIONER_DEBUG"
UNFINISHED = ("before the run finished: nothing is marked finished; the same command runs it again (the trainer "
              "resumes from its last epoch, a pipeline starts over)")
HelpFormatter = argparse.RawDescriptionHelpFormatter  # keeps the entry points' usage examples as written


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's one-line usage errors and a `--debug` flag."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # `--out` must not silently mean `--output`
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true",
                          help=f"show the Python traceback of an error (or set {DEBUG_ENV}=1)")

    def parse_known_args(self, args=None, namespace=None):
        """argparse's, refusing an empty value (`--output ""` would mean the current folder, `--images ""`
        nothing): an unset shell variable is the usual cause."""
        parsed, rest = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(parsed, action.dest, None)
            if action.option_strings and (value == "" or (isinstance(value, list) and "" in value)):
                self.error(f"{action.option_strings[0]} is empty (an unset shell variable?); give it a value")
        return parsed, rest

    def error(self, message: str):
        self.exit(2, f"error: {message}; `{self.prog} --help` lists every flag\n")


def _beam_parser() -> argparse.ArgumentParser:
    """A parser that knows every Beam pipeline option, built the way Beam builds its own."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser
    parser = _BeamArgumentParser(allow_abbrev=False, add_help=False)
    classes = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - Beam's own way to list its options
    return parser


def _flag_names(parser: argparse.ArgumentParser) -> List[str]:
    return [option for action in parser._actions for option in action.option_strings if option.startswith("--")]


def _suggestion(flag: str, known: Sequence[str]) -> str:
    spelled = flag.replace("-", "_").replace("__", "--", 1)
    if spelled != flag and spelled in known:
        return f"; did you mean {spelled}? (flags are spelled with underscores)"
    close = difflib.get_close_matches(flag, list(known), n=1, cutoff=0.7)
    return f"; did you mean {close[0]}?" if close else ""


def parse_with_beam_options(parser: argparse.ArgumentParser,
                            argv: Optional[Sequence[str]]) -> Tuple[argparse.Namespace, List[str]]:
    """(the entry point's flags, the Beam pipeline options), or UsageError for a flag neither knows."""
    args, rest = parser.parse_known_args(argv)
    beam = _beam_parser()
    _, unknown = beam.parse_known_args(rest)
    if unknown:
        first = unknown[0]
        flag = first.split("=", 1)[0]
        if not flag.startswith("-"):
            expanded = ("; it names a file: did the shell expand an unquoted pattern? Quote it, e.g. --images "
                        "'photos/*.jpg'") if os.path.exists(first) else ""
            raise UsageError(f"unexpected argument {first!r}: every input is given by a flag{expanded}; "
                             f"`{parser.prog} --help` lists them")
        hint = _suggestion(flag, _flag_names(parser) + _flag_names(beam))
        raise UsageError(f"unknown flag {flag}{hint}; `{parser.prog} --help` lists the flags, and Beam's pipeline "
                         "options (--runner, --project, ...) are accepted as well")
    _check_runner(beam.parse_known_args(rest)[0].runner)
    return args, rest


def _check_runner(runner: Optional[str]) -> None:
    """A --runner Beam knows (its short names, any case, with or without 'Runner'), or a dotted class path."""
    from apache_beam.options.pipeline_options import StandardOptions
    known = [path.rsplit(".", 1)[-1] for path in StandardOptions.ALL_KNOWN_RUNNERS]
    lowered = {name.lower() for name in known}
    if not runner or "." in runner or runner.lower() in lowered or runner.lower() + "runner" in lowered:
        return
    close = difflib.get_close_matches(runner, known, n=1, cutoff=0.6)
    raise UsageError(f"--runner {runner} is not a Beam runner{f'; did you mean {close[0]}?' if close else ''} "
                     "(DirectRunner or FnApiRunner locally, DataflowRunner on Google Cloud)")


def run(main: Callable[[List[str]], Optional[int]], argv: Optional[Sequence[str]] = None) -> int:
    """Runs an entry point's `main(argv)`; a CaptionerError becomes one line on stderr and its exit code, Ctrl-C
    exits 130 and SIGTERM 143 (the shell's codes for those signals), each with one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV) == "1"
    try:
        with interrupts.raising_on_signals():
            return int(main(argv) or 0)
    except CaptionerError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT) or debug:
            raise
        print(f"error: {error.filename or 'an output'}: the file system is full ({os.strerror(error.errno)}); free "
              "some space or choose an output with room, then run the same command again (nothing was marked "
              "finished)", file=sys.stderr)
        return 1
    except interrupts.Terminated:
        print(f"error: terminated (SIGTERM) {UNFINISHED}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"error: interrupted (Ctrl-C) {UNFINISHED}", file=sys.stderr)
        return 128 + signal.SIGINT


def command(main: Callable[[List[str]], Optional[int]]) -> Callable[[], int]:
    """An entry point's console script (setup.py): `run(main)` on the command line's arguments, the same as its
    `python -m` form; setuptools exits with what it returns."""
    return lambda: run(main)
