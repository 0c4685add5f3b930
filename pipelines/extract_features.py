"""Entry point: extract CNN features from images into TFRecord shards (DirectRunner or Dataflow).

    python -m pipelines.extract_features --config flickr8k --images 'DATA/images/*.jpg' \\
        --captions DATA/Flickr8k.token.txt --splits DATA --output OUT [Beam options]

Flags not listed in --help (e.g. --runner, --project, --region, --temp_location,
--setup_file, --direct_num_workers) are Beam pipeline options.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import List, Optional

from apache_beam.options.pipeline_options import PipelineOptions

from captioner import config as configs
from captioner import encoders, manifest, storage
from captioner.layout import DEAD_LETTER_FILE, MANIFEST_FILE
from pipelines import launch
from pipelines.extract import graph


def parse_args(argv: Optional[List[str]]):
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.extract_features", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    configs.add_config_flags(parser)
    parser.add_argument("--images", required=True,
                        help="image file pattern, local or gs:// ('*' and '**' globs), e.g. 'gs://b/flickr8k/images/*.jpg'")
    parser.add_argument("--captions", default=None,
                        help="caption file: Flickr8k token file ('<image>#<n><TAB><caption>') or CSV with an "
                             "'image,caption' header; leave out for an inference set without captions")
    parser.add_argument("--splits", default=None,
                        help="folder with Flickr_8k.{train,dev,test}Images.txt; images in none go to 'unsplit'")
    parser.add_argument("--output", required=True, help="output folder for shards, manifest and vocabulary (local or gs://)")
    parser.add_argument("--encoder", default=None,
                        help="encoder name or .tflite path (overrides extract.encoder). " + encoders.describe_encoders())
    parser.add_argument("--weights", default=None,
                        help="imagenet | none | path to a weights file, local or gs:// (overrides extract.weights)")
    parser.add_argument("--encoder_threads", type=int, default=None,
                        help="threads per encoder instance (default: all cores; use 1 with several local workers)")
    return parser.parse_known_args(argv)


def settings_from(args) -> graph.ExtractSettings:
    """Merges the config file, overrides and flags, and loads the encoder once to validate it and read its identity."""
    flags = {key: value for key, value in (("encoder", args.encoder), ("weights", args.weights)) if value}
    cfg = configs.load(args.config, args.overrides).with_values("--encoder/--weights", extract=flags).extract
    encoder = encoders.load_encoder(cfg.encoder, weights=cfg.weights, spatial=cfg.spatial, num_threads=1)
    return graph.ExtractSettings(
        images=args.images, output=args.output, captions=args.captions, splits=args.splits,
        encoder_identity=encoder.identity, feature_info=encoder.feature_info(), config=cfg,
        encoder_threads=args.encoder_threads)


def run(argv: Optional[List[str]] = None) -> dict:
    """Builds and runs the pipeline; returns the manifest it wrote ({} when the job was only launched)."""
    args, beam_args = parse_args(argv)
    settings = settings_from(args)
    logging.info("extracting %s with %s -> %s", args.images, settings.encoder_identity["name"], args.output)
    started = time.time()
    if not launch.run_to_completion(lambda p: graph.build_pipeline(p, settings), PipelineOptions(beam_args)):
        return {}
    written = manifest.read(args.output)
    print(summary(written, args.output, time.time() - started))
    return written


def summary(written: dict, output: str, seconds: float) -> str:
    counts = ", ".join(f"{split} {n}" for split, n in written["counts"].items())
    return (f"extracted {written['images_matched']} images in {seconds:.0f} s: {counts}; "
            f"dead letters {written['dead_letters']} ({storage.join(output, DEAD_LETTER_FILE)}); "
            f"vocabulary {written['vocabulary']['size']} words; "
            f"captions without an image {written['captions_without_images']['count']}\n"
            f"manifest: {storage.join(output, MANIFEST_FILE)}\n"
            f"encoder: {json.dumps(written['encoder'])}")


def main() -> None:
    launch.configure_logging()
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
