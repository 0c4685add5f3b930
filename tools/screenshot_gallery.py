"""Screenshots a caption report in real headless Chromium.

`python -m tools.screenshot_gallery report.html report.png [--width W --height H]`

The flags keep the browser offline and stateless: a fresh profile folder per
run, no first-run, sync, component updates or background networking, so a
screenshot is the report as a reader sees it and nothing else.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

CHROMIUM_NAMES = ("chromium", "chromium-browser")


class ChromiumNotFound(RuntimeError):
    pass


def find_chromium() -> Optional[str]:
    """Path of a Chromium binary on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_command(chromium: str, profile_dir: str, width: int, height: int) -> List[str]:
    """The headless, offline Chromium flags; the caller appends the output flag and the URL."""
    return [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={profile_dir}", f"--window-size={width},{height}",
    ]


def run_chromium(extra_args: Sequence[str], url: str, width: int, height: int, timeout_s: float) -> str:
    """Runs Chromium with a throw-away profile; returns its stdout."""
    chromium = find_chromium()
    if chromium is None:
        raise ChromiumNotFound("Chromium not found on PATH (looked for " + ", ".join(CHROMIUM_NAMES) +
                               "); on Debian/Ubuntu: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = chromium_command(chromium, profile, width, height) + list(extra_args) + [url]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"Chromium did not finish within {timeout_s:.0f} s") from error
    if done.returncode != 0:
        raise RuntimeError(f"Chromium exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def screenshot(report_html: str, out_png: str, width: int = 1280, height: int = 900, timeout_s: float = 60.0) -> str:
    """Writes a `width` x `height` PNG of the page at `report_html`; returns `out_png`."""
    if not os.path.isfile(report_html):
        raise FileNotFoundError(report_html)
    out = Path(out_png).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()  # so a stale file can never pass for a fresh screenshot
    run_chromium([f"--screenshot={out}"], Path(report_html).resolve().as_uri(), width, height, timeout_s)
    if not out.is_file():
        raise RuntimeError(f"Chromium exited cleanly but wrote no screenshot to {out}")
    return str(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.screenshot_gallery", description=__doc__.splitlines()[0])
    parser.add_argument("report_html", help="a caption job's report.html")
    parser.add_argument("out_png", help="the PNG screenshot to write")
    parser.add_argument("--width", type=int, default=1280, help="window width in pixels (default: %(default)s)")
    parser.add_argument("--height", type=int, default=900, help="window height in pixels (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before giving up on Chromium")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(screenshot(args.report_html, args.out_png, args.width, args.height, args.timeout))
    except (ChromiumNotFound, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
