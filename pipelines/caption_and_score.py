"""Entry point: caption a whole image set with a trained bundle and score it with BLEU (DirectRunner or Dataflow).

    python -m pipelines.caption_and_score --model JOB_DIR/export --images 'PHOTOS/**' --output OUT \\
        [--references Flickr8k.token.txt]
    python -m pipelines.caption_and_score --model JOB_DIR/export --features FEATURES --split test --output OUT

Writes captions.jsonl, captions.csv, dead_letter.jsonl, bleu.json and report.html under --output.
Flags not listed in --help (e.g. --runner, --project, --region, --temp_location, --setup_file,
--direct_num_workers) are Beam pipeline options.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional

from apache_beam.options.pipeline_options import PipelineOptions

from captioner import bundle, captions, schema, storage
from captioner import config as configs
from captioner.layout import BLEU_JSON, CAPTIONS_JSONL, REPORT_HTML
from pipelines import launch
from pipelines.caption import graph


def parse_args(argv: Optional[List[str]]):
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.caption_and_score", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    configs.add_config_flags(parser)
    parser.add_argument("--model", required=True, help="the trainer's export folder (JOB_DIR/export), local or gs://")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="image file pattern, local or gs:// ('*' and '**' globs)")
    source.add_argument("--features", help="a features folder written by pipelines.extract_features (fast path)")
    parser.add_argument("--include", default=None,
                        help="with --images: a file of image file names, one a line (e.g. Flickr_8k.testImages.txt); "
                             "only matched images named there are captioned")
    parser.add_argument("--split", default="test", choices=schema.SPLITS,
                        help="with --features: which split's shards to caption (default: %(default)s)")
    parser.add_argument("--references", default=None,
                        help="with --images: reference captions (Flickr8k token file or 'image,caption' CSV) "
                             "to score against; with --features the stored captions are the references")
    parser.add_argument("--output", required=True, help="output folder (local or gs://)")
    parser.add_argument("--beam_size", type=int, default=None, help="beam width, 1 = greedy (default: caption.beam_size)")
    parser.add_argument("--length_penalty", type=float, default=None,
                        help="GNMT length penalty alpha, 0 = none (default: caption.length_penalty)")
    parser.add_argument("--max_length", type=int, default=None, help="longest caption in words (default: caption.max_length)")
    parser.add_argument("--batch_size", type=int, default=None, help="images per decoding batch (default: caption.batch_size)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per worker for the encoder and the decoder (default: all cores; use 1 with "
                             "several local workers, e.g. --direct_num_workers=2 on 2 cores)")
    return parser.parse_known_args(argv)


def settings_from(args) -> graph.CaptionSettings:
    """Merges the config file, overrides and the decoding flags (which win), and reads the bundle's info."""
    if (args.references or args.include) and args.features:
        raise ValueError("--references and --include go with --images; with --features the split chooses the "
                         "images and the stored captions are the references")
    flags = {name: getattr(args, name) for name in ("beam_size", "length_penalty", "max_length", "batch_size")
             if getattr(args, name) is not None}
    config = configs.load(args.config, args.overrides).with_values("the decoding flags", caption=flags)
    return graph.CaptionSettings(
        model=args.model, output=args.output, bundle=bundle.read_info(args.model), config=config,
        images=args.images, features=args.features, split=args.split, references=args.references,
        include=captions.read_split_ids(args.include) if args.include else None, threads=args.threads)


def run(argv: Optional[List[str]] = None) -> dict:
    """Builds and runs the pipeline; returns the content of bleu.json ({} when the job was only launched)."""
    args, beam_args = parse_args(argv)
    settings = settings_from(args)
    started = time.time()
    if not launch.run_to_completion(lambda p: graph.build_pipeline(p, settings), PipelineOptions(beam_args)):
        return {}
    summary = json.loads(storage.read_text(storage.join(args.output, BLEU_JSON)))
    print(describe(summary, args.output, time.time() - started))
    return summary


def describe(summary: dict, output: str, seconds: float) -> str:
    counts = summary["counts"]
    bleu = summary["bleu"]
    scores = ("BLEU-1..4 " + " / ".join(f"{100 * b:.1f}" for b in bleu)) if bleu else "no references: not scored"
    return (f"captioned {counts['captioned']} of {counts['images_matched']} images in {seconds:.0f} s "
            f"({counts['dead_letters']} dead letters, {counts['without_references']} without references); {scores}\n"
            f"captions: {storage.join(output, CAPTIONS_JSONL)}\n"
            f"gallery:  {storage.join(output, REPORT_HTML)}")


def main() -> None:
    launch.configure_logging()
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
