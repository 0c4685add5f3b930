"""Entry point: extract CNN features from images into TFRecord shards (DirectRunner or Dataflow).

    python -m pipelines.extract_features --config flickr8k --images 'DATA/images/*.jpg' \\
        --captions DATA/Flickr8k.token.txt --splits DATA --output OUT [Beam options]
    python -m pipelines.extract_features --image_list photos.csv --output OUT     # a listing file, local or gs://
    python -m pipelines.extract_features --images 'PHOTOS/**' --skip_existing OLD --output NEW   # only new images

Writes under --output: <split>/records-*.tfrecord (each image's features, captions and id), vocabulary.txt
and word_counts.txt (from the train captions), dead_letter-*.jsonl (each image that was not extracted, with
its reason) and, last, manifest.json (the encoder, the feature shapes, counts and every file of the run).
Every input is checked before the pipeline starts. Flags not listed in --help
(e.g. --runner, --project, --region, --temp_location, --setup_file,
--direct_num_workers) are Beam pipeline options; any other flag is an error.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import List, Optional

from apache_beam.options.pipeline_options import PipelineOptions

from captioner import cli, encoders, manifest, output_folder, storage
from captioner import config as configs
from captioner.encoders import from_tflite
from captioner.errors import InputError, UsageError
from captioner.input_files import annotations, captions, listings
from captioner.layout import FEATURES_ENCODER_DIR, FEATURES_FILES, MANIFEST_FILE, WORD_COUNTS_FILE
from pipelines import launch, outcome
from pipelines.extract import graph


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m pipelines.extract_features", description=__doc__,
                                formatter_class=cli.HelpFormatter)
    configs.add_config_flags(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="image file pattern, local or gs:// ('*' and '**' globs); an image's id is "
                                         "its path after the pattern's fixed prefix, e.g. 2019/IMG_0001.jpg")
    source.add_argument("--image_list", help="listing file(s), local or gs:// (a glob reads many in parallel): one "
                                             "image a line as a path, CSV with a 'path' (and 'caption') column, or "
                                             "JSON lines {\"path\": ..., \"caption\": ...}")
    source.add_argument("--retry_dead_letters", metavar="PATTERN",
                        help="the dead_letter-*.jsonl files of an earlier run: extract just those images again")
    parser.add_argument("--captions", default=None,
                        help="caption file (or glob): Flickr8k token file ('<image>#<n><TAB><caption>') or CSV with "
                             "an 'image,caption' header, keyed by file name or by id; a COCO caption annotation file "
                             "(captions_train2014.json) or a Karpathy split file (dataset_coco.json: it decides the "
                             "splits, restval goes to train, val to dev), keyed by file name; leave out for an "
                             "inference set without captions (or use a listing with captions)")
    parser.add_argument("--splits", default=None,
                        help="folder with Flickr_8k.{train,dev,test}Images.txt; images in none go to 'unsplit' "
                             "(not with a Karpathy --captions file, which holds the splits)")
    parser.add_argument("--output", required=True,
                        help="output folder for shards, manifest and vocabulary (local or gs://)")
    parser.add_argument("--skip_existing", default=None, metavar="FEATURES",
                        help="an earlier features folder (same encoder): its images are not extracted again, and the "
                             "new --output's manifest lists its shards too, with the counts and vocabulary merged")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished extraction already in --output (otherwise it is refused)")
    parser.add_argument("--encoder", default=None,
                        help="encoder name, .tflite or .keras path (overrides extract.encoder). "
                             + encoders.describe_encoders())
    parser.add_argument("--weights", default=None,
                        help="imagenet | none | path to a weights file, local or gs:// (overrides extract.weights)")
    parser.add_argument("--encoder_threads", type=int, default=None,
                        help="threads per encoder instance (default: all cores; use 1 with several local workers)")
    return parser


def _key_scheme(args) -> str:
    """What the caption and split files key images by; they must agree."""
    if args.captions and args.splits and captions.file_format(args.captions) == annotations.KARPATHY_FORMAT:
        raise UsageError(f"--captions {args.captions} is a Karpathy split file, which says each image's split "
                         "itself; leave --splits out")
    first_split = next(iter(sorted(captions.split_files(args.splits).values()))) if args.splits else None
    return captions.agreed_key_scheme(("--captions", args.captions), ("--splits", first_split))


def _previous(args, encoder, cleaning: str) -> Optional[dict]:
    """The manifest of the --skip_existing folder, checked to fit this run."""
    if not args.skip_existing:
        return None
    if args.skip_existing.rstrip("/") == args.output.rstrip("/"):
        raise UsageError("--skip_existing and --output are the same folder; write the new images to a new --output "
                         "(its manifest lists the earlier shards too)")
    previous = manifest.read(args.skip_existing, "--skip_existing")
    manifest.check_compatible(previous, encoder.identity, encoder.feature_info(), source=args.skip_existing)
    if manifest.cleaning_of(previous) != cleaning:
        raise UsageError(f"--skip_existing {args.skip_existing} cleaned its captions with text.cleaning="
                         f"{manifest.cleaning_of(previous)}, this run with {cleaning}: use the same cleaning")
    if "counts_file" not in previous["vocabulary"]:
        raise InputError(f"--skip_existing {args.skip_existing} was extracted before word counts were kept, so its "
                         "vocabulary cannot be merged; re-extract it once without --skip_existing")
    return previous


def settings_from(args) -> graph.ExtractSettings:
    """Checks every input on the launching machine and returns the graph's settings (nothing runs yet)."""
    storage.check_reachable([args.images, args.image_list, args.retry_dead_letters, args.captions, args.splits,
                             args.output, args.skip_existing, args.encoder, args.weights, args.config])
    if args.encoder_threads is not None and args.encoder_threads < 1:
        raise UsageError(f"--encoder_threads {args.encoder_threads}: an encoder needs at least 1 thread")
    flags = {key: value for key, value in (("encoder", args.encoder), ("weights", args.weights)) if value}
    config = configs.load(args.config, args.overrides).with_values("--encoder/--weights", extract=flags)
    cfg = config.extract
    for pattern, flag in ((args.images, "--images"), (args.image_list, "--image_list"),
                          (args.retry_dead_letters, "--retry_dead_letters")):
        if pattern:
            logging.info("%s %s: first match %s", flag, pattern, storage.first_match(pattern))
    listing = args.image_list and listings.listing_format(captions.first_listed_line(args.image_list), args.image_list)
    if listing and args.captions:
        if listings.carries_captions(*listing):
            raise UsageError("--image_list may carry captions itself; with --captions as well it is unclear which to "
                             "use: give one of them")
    float_model = _float_encoder(cfg) if cfg.float_encoder and cfg.encoder.lower().endswith(".tflite") else None
    if cfg.float_encoder and cfg.encoder == encoders.THUMBNAIL:
        raise UsageError("extract.float_encoder rebuilds a .tflite MobileNet as a float Keras model; the thumbnail "
                         "encoder has no float model: leave it false, or name a .tflite encoder")
    encoder = encoders.load_encoder(float_model or cfg.encoder, weights="none" if float_model else cfg.weights,
                                    spatial=cfg.spatial, num_threads=1)
    settings = graph.ExtractSettings(
        output=args.output, encoder_identity=encoder.identity, feature_info=encoder.feature_info(), config=cfg,
        images=args.images, image_list=args.image_list, retry_dead_letters=args.retry_dead_letters,
        captions=args.captions, splits=args.splits, key_scheme=_key_scheme(args), skip_existing=args.skip_existing,
        previous_manifest=_previous(args, encoder, config.text.cleaning), encoder_threads=args.encoder_threads,
        cleaning=config.text.cleaning)
    output_folder.prepare(args.output, MANIFEST_FILE, manifest.listed_files, FEATURES_FILES, args.overwrite,
                          "extraction")
    if float_model:  # the features folder holds the encoder it was made with, where workers and the trainer read it
        target = storage.join(args.output, FEATURES_ENCODER_DIR, os.path.basename(float_model))
        storage.write_bytes(target, storage.read_bytes(float_model))
        settings.encoder_identity = dict(encoder.identity, source=target)
    return settings


def _float_encoder(cfg) -> str:
    """extract.float_encoder: the .tflite encoder rebuilt as a float Keras model, in a local temporary file (a
    Keras encoder, a .keras file or a keras.applications name, is float already and is used as it is)."""
    model, family = from_tflite.convert(cfg.encoder)
    local = os.path.join(tempfile.mkdtemp(prefix="float-encoder-"),
                         os.path.splitext(os.path.basename(cfg.encoder))[0] + ".keras")
    from_tflite.save(model, local)
    logging.info("extract.float_encoder: %s rebuilt as a float Keras %s", cfg.encoder, family)
    return local


def run(argv: Optional[List[str]] = None) -> dict:
    """Checks the inputs, builds and runs the pipeline; returns the manifest it wrote ({} when only launched)."""
    args, beam_args = cli.parse_with_beam_options(build_parser(), argv)
    settings = settings_from(args)
    source = args.images or args.image_list or args.retry_dead_letters
    logging.info("extracting %s with %s -> %s", source, settings.encoder_identity["name"], args.output)
    started = time.time()
    if not launch.run_to_completion(lambda p: graph.build_pipeline(p, settings), PipelineOptions(beam_args)):
        return {}
    written = manifest.read(args.output)
    print(summary(written, args.output, time.time() - started))
    outcome.check(written["this_run"]["records_written"], written["this_run"], "extract", args.output)
    if written["counts"]["train"] and not written["vocabulary"]["size"]:
        raise InputError(f"the vocabulary of {args.output} is empty: extract.min_word_count="
                         f"{written['vocabulary']['min_count']} is above every train word's count "
                         f"({storage.join(args.output, WORD_COUNTS_FILE)} has them); re-extract with a lower one")
    return written


def summary(written: dict, output: str, seconds: float) -> str:
    run_ = written["this_run"]
    counts = ", ".join(f"{split} {n}" for split, n in written["counts"].items())
    skipped = f"; {run_['skipped_existing']} already in --skip_existing" if run_["skipped_existing"] else ""
    refused = run_["caption_lines_refused"]["count"]
    return (f"extracted {run_['records_written']} of {run_['images_matched']} images in {seconds:.0f} s "
            f"({run_['dead_letters']} dead letters{skipped}); records per split: {counts}; "
            f"vocabulary {written['vocabulary']['size']} words; names without an image "
            f"{run_['captions_without_images']['count']}"
            f"{f'; {refused} caption lines refused (examples in the manifest)' if refused else ''}\n"
            f"manifest: {storage.join(output, MANIFEST_FILE)}\n"
            f"encoder: {json.dumps(written['encoder'])}")


main = launch.entry_point(run)


command = cli.command(main)  # the console script (setup.py)

if __name__ == "__main__":
    raise SystemExit(command())
