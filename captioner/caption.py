"""Caption a few photos from the shell: one `path<TAB>caption` line per image, in the order given.

    python -m captioner.caption --model runs/flickr8k/job/export photo.jpg 'holiday/*.jpg'
    python -m captioner.caption --model gs://BUCKET/runs/flickr8k-1/export 'gs://BUCKET/photos/*.jpg' --json

No Beam runner, no output folder: the bundle loads once and the images are captioned in batches in this
process, through the same decoding, encoder and decoder as the caption job (which is the tool for thousands
of images). A file that cannot be read or is not an image gets its one-line reason on stderr in its place;
the others are still captioned, and the exit code is then 1.
"""
from __future__ import annotations

import json
import sys
from typing import List, Optional

from captioner import annotate, cli, storage
from captioner.decoder.decoding import Decoding
from captioner.errors import UsageError

GLOB_CHARACTERS = "*?["


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m captioner.caption", description=__doc__,
                                formatter_class=cli.HelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files or quoted globs, local or gs:// ('*' within a folder, '**' across)")
    parser.add_argument("--model", required=True, help="the trainer's export folder (JOB_DIR/export), local or gs://")
    parser.add_argument("--json", action="store_true",
                        help="print JSON lines {path, caption, log_prob} instead of path<TAB>caption")
    parser.add_argument("--top", type=int, default=1, metavar="K",
                        help="with --json, also list the K best captions, best first, as 'top': "
                             "[{caption, log_prob}, ...] (K at most the beam size: pair it with --beam_size)")
    parser.add_argument("--beam_size", type=int, default=None,
                        help="beam width, 1 = greedy (default: the decoding the bundle was trained with)")
    parser.add_argument("--length_penalty", type=float, default=None,
                        help="GNMT length penalty alpha, 0 = none (default: the bundle's)")
    parser.add_argument("--max_length", type=int, default=None, help="longest caption in words (default: the bundle's)")
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow threads (default: all cores)")
    parser.add_argument("--annotate", metavar="DIR", default=None,
                        help="also write each captioned image to DIR (local or gs://) as a JPEG with its caption "
                             "set under it, sized for a screen; the originals are not touched")
    return parser


def expand(patterns: List[str]) -> List[str]:
    """Each argument as given, or a glob's matches sorted; a glob that matches nothing is a usage error."""
    paths = []
    for pattern in patterns:
        if not any(character in pattern for character in GLOB_CHARACTERS):
            paths.append(pattern)
            continue
        matched = storage.match(pattern)
        if not matched:
            raise UsageError(f"{pattern} matches no file; check the path and the glob")
        paths += matched
    return paths


def decoding_of(args, default: Decoding) -> Decoding:
    """The bundle's decoding with the flags given on top; a value out of range is a usage error."""
    chosen = {name: getattr(args, name) for name in ("beam_size", "length_penalty", "max_length")}
    try:
        return Decoding(**{name: default.to_dict()[name] if value is None else value
                           for name, value in chosen.items()})
    except ValueError as error:
        raise UsageError(f"{error}; beam size and max length are >= 1, the length penalty a finite number >= 0")


def check_top_flags(args) -> None:
    """`--top K` lists beams, so it needs --json to print them in (checked before the model loads)."""
    if args.top < 1:
        raise UsageError(f"--top {args.top}: list at least the best caption (K >= 1)")
    if args.top > 1 and not args.json:
        raise UsageError(f"--top {args.top} lists the alternatives in JSON lines: add --json")


def check_top_width(args, decoding: Decoding) -> None:
    """... and a beam at least K wide (the bundle's, unless --beam_size says otherwise)."""
    if args.top > decoding.beam_size:
        raise UsageError(f"--top {args.top} needs a beam at least {args.top} wide (this one is "
                         f"{decoding.beam_size}): add --beam_size {args.top}")


def json_line(result) -> str:
    """The JSON line of one captioned image; 'top' only when alternatives were asked for."""
    line = {"path": result.path, "caption": result.caption, "log_prob": result.log_prob}
    if result.alternatives:
        line["top"] = [{"caption": caption, "log_prob": log_prob} for caption, log_prob in result.ranked]
    return json.dumps(line)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads}: captioning needs at least 1 thread")
    check_top_flags(args)
    paths = expand(args.images)
    if args.annotate:
        storage.check_folder(args.annotate, "--annotate")
    from captioner.bundle import Captioner  # imported late: TensorFlow is not needed for --help
    captioner = Captioner.load(args.model, num_threads=args.threads)
    decoding = decoding_of(args, captioner.decoding)
    check_top_width(args, decoding)
    failed, pictures = 0, set()
    for result in captioner.caption_files(paths, decoding, top=args.top):
        if not result.ok:
            failed += 1
            print(f"{result.path}: {result.error}", file=sys.stderr, flush=True)
            continue
        if args.json:
            print(json_line(result), flush=True)
        else:
            print(f"{result.path}\t{result.caption}", flush=True)
        if args.annotate:
            annotate.write_captioned(result.path, result.caption, args.annotate, pictures)
    if args.annotate:
        print(f"{len(pictures)} captioned picture{'' if len(pictures) == 1 else 's'} in {args.annotate}",
              file=sys.stderr)
    return 1 if failed else 0


command = cli.command(main)  # the console script (setup.py)

if __name__ == "__main__":
    sys.exit(command())
