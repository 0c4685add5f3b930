"""What every benchmark shares: child processes with their peak RSS, the machine, timing, Markdown tables.

Each method of a benchmark runs in its own process, so its peak RSS is its own. A benchmark measures a
method of its own (one written in its module) by starting itself again,
`python -m bench.<name> --_measure METHOD --_result FILE ...` (`measure_in_child`); the child runs the
method, writes its result to FILE as JSON (`serve_measure`), and the parent reads it back with the
child's wall time and peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- cores, date, timing -------------------------------------------------------------------------
def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{os.cpu_count()} cores{' (' + model + ')' if model else ''}"


def today() -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z")


def timed(function: Callable, *args, **kwargs) -> Tuple[float, object]:
    """(seconds, value) of one call."""
    started = time.time()
    value = function(*args, **kwargs)
    return time.time() - started, value


def marginal_rate(images: int, seconds: float, part_images: int, part_seconds: float) -> float:
    """Items/s of what a full run does beyond a partial one: fixed start-up costs cancel out."""
    return (images - part_images) / max(1e-9, seconds - part_seconds)


def command_line(name: str) -> str:
    """How this benchmark was run, for its report: `python -m bench.<name> ARGS`."""
    return f"python -m bench.{name} " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# --- child processes -----------------------------------------------------------------------------
def _tree_rss_kb(root: int) -> Tuple[int, int, int, int]:
    """(sum of VmRSS over `root` and all its descendants, `root`'s own, the largest descendant's but Java's,
    the largest Java descendant's), in kB (reads /proc; 0 where it cannot)."""
    parents: Dict[int, int] = {}
    rss: Dict[int, int] = {}
    names: Dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        parents[int(name)] = int(fields.get("PPid", "0").strip() or 0)
        rss[int(name)] = int(fields.get("VmRSS", "0 kB").split()[0]) if "VmRSS" in fields else 0
        names[int(name)] = fields.get("Name", "").strip()
    total, largest, largest_java, todo = 0, 0, 0, [root]
    seen = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += rss.get(pid, 0)
        if pid != root and names.get(pid) == "java":
            largest_java = max(largest_java, rss.get(pid, 0))
        elif pid != root:
            largest = max(largest, rss.get(pid, 0))
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total, rss.get(root, 0), largest, largest_java


def run_child(command: Sequence[str], log_path: str, cwd: str = ROOT, sample_tree: bool = False,
              env: Optional[dict] = None) -> dict:
    """Runs one command in its own process; returns rc, wall seconds, peak RSS (os.wait4 ru_maxrss, MB).

    ru_maxrss of a waited child is the largest RSS of that process or of any descendant it reaped, not a
    sum; with `sample_tree` the tree is also sampled every 0.25 s: its summed RSS, the child's own RSS (on
    DirectRunner: the runner, which holds every shuffle), the largest descendant's (an SDK worker) and the
    largest Java process's (METEOR, whose heap is capped at start).
    """
    started = time.time()
    with open(log_path, "w") as log:
        child = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        peaks = [0, 0, 0, 0]
        done = threading.Event()

        def sample():
            while not done.wait(0.25):
                peaks[:] = [max(a, b) for a, b in zip(peaks, _tree_rss_kb(child.pid))]

        sampler = threading.Thread(target=sample, daemon=True) if sample_tree else None
        if sampler:
            sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        if sampler:
            sampler.join()
    result = {"rc": child.returncode, "wall_s": time.time() - started, "peak_rss_mb": usage.ru_maxrss / 1024,
              "log": log_path}
    if sample_tree:
        result.update(zip(("peak_tree_rss_mb", "peak_root_rss_mb", "peak_descendant_rss_mb", "peak_java_rss_mb"),
                          (peak / 1024 for peak in peaks)))
    return result


def log_tail(path: str, lines: int = 25) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return "(no log)"


def run_checked(command: Sequence[str], log_path: str, output: str, what: str, sample_tree: bool = False) -> dict:
    """`run_child`, then exits non-zero with the log's last lines unless it succeeded and wrote `output`."""
    run = run_child(command, log_path, sample_tree=sample_tree)
    if run["rc"] != 0 or not os.path.exists(output):
        raise SystemExit(f"error: {what} failed (exit {run['rc']}); last lines of {run['log']}:\n"
                         + log_tail(run["log"]))
    return run


def read_json(path: str):
    with open(path) as handle:
        return json.load(handle)


def write_json(path: str, value, **options) -> None:
    with open(path, "w") as handle:
        json.dump(value, handle, **options)


# --- a benchmark measuring one of its own methods in a child ---------------------------------------
def measure_in_child(name: str, measure: str, work: str, options: Mapping[str, object],
                     what: Optional[str] = None, announce: bool = True) -> dict:
    """Runs `python -m bench.<name> --_measure MEASURE --_result WORK/MEASURE.json --KEY VALUE..` (None values
    left out), logging to WORK/MEASURE.log; returns the JSON result with the child's rc, wall_s, peak_rss_mb."""
    result_path = os.path.join(work, f"{measure}.json")
    command = [sys.executable, "-m", f"bench.{name}", "--_measure", measure, "--_result", result_path]
    for key, value in options.items():
        if value is not None:
            command += [f"--{key}", str(value)]
    what = what or measure
    if announce:
        print(f"[bench] {what} ...", flush=True)
    run = run_checked(command, os.path.join(work, f"{measure}.log"), result_path, what)
    return {**read_json(result_path), **run}


def argument_parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The parser of `python -m bench.<name>`, its module docstring as the description."""
    return argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_measure_flags(parser: argparse.ArgumentParser, *extra: str) -> None:
    """The hidden flags a child started by `measure_in_child` reads: --_measure, --_result and `extra`."""
    for flag in ("--_measure", "--_result", *extra):
        parser.add_argument(flag, help=argparse.SUPPRESS)


def serve_measure(args: argparse.Namespace, measures: Mapping[str, Callable[[argparse.Namespace], dict]]) -> bool:
    """In a child: runs measures[--_measure](args) and writes its result to --_result. False in the parent."""
    if not args._measure:
        return False
    write_json(args._result, measures[args._measure](args))
    return True


# --- reports -------------------------------------------------------------------------------------
def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: a header row, the `| --- |` rule, one line per row (cells as str())."""
    def line(cells) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"
    return "\n".join([line(headers), line(["---"] * len(headers))] + [line(row) for row in rows])


def met(ok: Optional[bool]) -> str:
    """A target's "met" cell."""
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def mean_words(captions: Mapping[str, str]) -> str:
    """Mean words per caption, one decimal."""
    values = list(captions.values())
    return f"{sum(len(c.split()) for c in values) / max(1, len(values)):.1f}"
