"""Entry point: caption a whole image set with a trained bundle and score it (DirectRunner or Dataflow).

    python -m pipelines.caption_and_score --model JOB_DIR/export --images 'PHOTOS/**' --output OUT \\
        [--references Flickr8k.token.txt] [--include Flickr_8k.testImages.txt]
    python -m pipelines.caption_and_score --model JOB_DIR/export --image_list photos.csv --output OUT
    python -m pipelines.caption_and_score --model JOB_DIR/export --features FEATURES --split test --output OUT
    python -m pipelines.caption_and_score ... --skip_existing EARLIER_OUT --output NEW_OUT   # only new images
    python -m pipelines.caption_and_score ... --retry_dead_letters 'OUT/dead_letter-*.jsonl' --output RETRY

Writes under --output: sharded captions-*.jsonl (and .parquet, .csv), dead_letter-*.jsonl (each image
that was not captioned, with its reason), coco_results-*.json (the official COCO evaluation's input),
metrics.json (BLEU-1..4, METEOR, ROUGE-L and CIDEr-D in the project's and the COCO tokenization, when
references are given), report.html (a gallery of sampled captions) and, last, bleu.json (corpus BLEU, counts,
and every file of the run). Every input is checked before the pipeline
starts. Flags not listed in --help (e.g. --runner, --project, --region, --temp_location, --setup_file,
--direct_num_workers) are Beam pipeline options; any other flag is an error.
"""
from __future__ import annotations

import json
import time
from typing import List, Optional

from apache_beam.options.pipeline_options import PipelineOptions

from captioner import bundle, cli, manifest, output_folder, schema, storage
from captioner import config as configs
from captioner.decoder.decoding import Decoding
from captioner.errors import InputError, UsageError
from captioner.input_files import captions, listings
from captioner.layout import BLEU_JSON, CAPTION_FILES, METRICS_JSON, REPORT_HTML
from captioner.metrics import report
from pipelines import launch, outcome
from pipelines.caption import graph, outputs
from pipelines.inputs import shards
from pipelines.inputs.dead_letters import DEAD_LETTER_FIELDS


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m pipelines.caption_and_score", description=__doc__,
                                formatter_class=cli.HelpFormatter)
    configs.add_config_flags(parser)
    parser.add_argument("--model", required=True, help="the trainer's export folder (JOB_DIR/export), local or gs://")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="image file pattern, local or gs:// ('*' and '**' globs); an image's id is "
                                         "its path after the pattern's fixed prefix")
    source.add_argument("--image_list", help="listing file(s), local or gs://: paths one a line, CSV with a 'path' "
                                             "(and 'caption') column, or JSON lines; listed captions are references")
    source.add_argument("--retry_dead_letters", metavar="PATTERN",
                        help="the dead_letter-*.jsonl files of an earlier run: caption just those images again")
    source.add_argument("--features", help="a features folder written by pipelines.extract_features (fast path)")
    parser.add_argument("--include", default=None,
                        help="with images: a file of image file names (or ids), one a line (e.g. "
                             "Flickr_8k.testImages.txt); only the images named there are captioned")
    parser.add_argument("--split", default=None, choices=schema.SPLITS,
                        help="with --features: which split's shards to caption (default: test)")
    parser.add_argument(shards.SKIP_FLAG, action="store_true",
                        help="with --features: go on past a shard that fails its TFRecord checks (cut short or "
                             "changed), leaving out the rest of it and counting what was left out (default: stop, "
                             "naming the shard)")
    parser.add_argument("--references", default=None,
                        help="with images: reference captions to score against: a Flickr8k token file or "
                             "'image,caption' CSV (keyed by file name or id), a COCO caption annotation file or a "
                             "Karpathy split file (keyed by file name; their COCO ids go into coco_results-*.json); "
                             "with --features the stored captions are the references")
    parser.add_argument("--output", required=True, help="output folder (local or gs://)")
    parser.add_argument("--skip_existing", action="append", default=[], metavar="OUTPUT",
                        help="an earlier caption output folder: images captioned there are not captioned again "
                             "(--output then holds only the new rows); repeatable")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished caption output already in --output (otherwise it is refused)")
    parser.add_argument("--beam_size", type=int, default=None, help="beam width, 1 = greedy (default: caption.beam_size)")
    parser.add_argument("--length_penalty", type=float, default=None,
                        help="GNMT length penalty alpha, 0 = none (default: caption.length_penalty)")
    parser.add_argument("--max_length", type=int, default=None,
                        help="longest caption in words (default: caption.max_length)")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="images per decoding batch (default: caption.batch_size)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per worker for the encoder and the decoder (default: all cores; use 1 with "
                             "several local workers, e.g. --direct_num_workers=2 on 2 cores)")
    return parser


def _check_dead_letter_file(path: str) -> None:
    """The first line of a --retry_dead_letters file is a dead letter (caption rows also name paths: retrying them
    would caption those images again, silently)."""
    lines = [line for line in captions.first_lines(path, 1) if line.strip()]
    try:
        record = json.loads(lines[0]) if lines else {}
    except ValueError:
        record = None
    if lines and not (isinstance(record, dict) and DEAD_LETTER_FIELDS <= set(record)):
        raise InputError(f"--retry_dead_letters {path} is not a dead-letter file (its first line lacks "
                         f"{', '.join(sorted(DEAD_LETTER_FIELDS))}); pass the dead_letter-*.jsonl files of an "
                         "earlier run")


def settings_from(args) -> graph.CaptionSettings:
    """Checks every input on the launching machine and returns the graph's settings (nothing runs yet)."""
    storage.check_reachable([args.model, args.images, args.image_list, args.retry_dead_letters, args.features,
                             args.include, args.references, args.output, args.config, *args.skip_existing])
    if (args.references or args.include) and args.features:
        raise UsageError("--references and --include go with images; with --features the split chooses the "
                         "images and the stored captions are the references")
    if args.split and not args.features:
        raise UsageError(f"--split {args.split} goes with --features (it picks the stored split to caption); with "
                         "images, --include picks which ones (e.g. --include Flickr_8k.devImages.txt)")
    if args.skip_damaged_shards and not args.features:
        raise UsageError(f"{shards.SKIP_FLAG} goes with --features (images are checked one by one: an unreadable "
                         "one is a dead letter)")
    args.split = args.split or "test"
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads}: a worker needs at least 1 thread")
    flags = {name: getattr(args, name) for name in ("beam_size", "length_penalty", "max_length", "batch_size")
             if getattr(args, name) is not None}
    config = configs.load(args.config, args.overrides).with_values("the decoding flags", caption=flags)
    info = bundle.read_info(args.model)
    bundle.check_files(args.model, info)
    trained = info.get("config", {}).get("train", {})
    Decoding.from_config(config.caption).check_fits(
        config.caption.batch_size, info["vocabulary"]["size"], trained.get("units", 256),
        trained.get("transformer_layers", 0) if info["decoder"] == "transformer" else 0)
    features_manifest = None
    if args.features:
        features_manifest = manifest.read(args.features)
        manifest.check_compatible(features_manifest, info["encoder"], info["features"], source=args.features)
        if not features_manifest["counts"].get(args.split):
            raise InputError(f"--features {args.features} holds no {args.split} records (records per split: "
                             f"{features_manifest['counts']}); choose --split among those that have some")
    for pattern, flag in ((args.images, "--images"), (args.image_list, "--image_list"),
                          (args.retry_dead_letters, "--retry_dead_letters"), (args.include, "--include")):
        if pattern:
            storage.first_match(pattern)
    if args.retry_dead_letters:
        _check_dead_letter_file(storage.first_match(args.retry_dead_letters))
    if args.image_list:  # empty, or a header naming other columns: refused before anything is written
        listings.listing_format(captions.first_listed_line(args.image_list), args.image_list)
    for earlier in args.skip_existing:
        if earlier.rstrip("/") == args.output.rstrip("/"):
            raise UsageError("--skip_existing and --output are the same folder; write the new captions to a new "
                             "--output")
        outputs.caption_files(earlier)  # refuses a folder that is not a finished caption output
    settings = graph.CaptionSettings(
        model=args.model, output=args.output, bundle=info, config=config, images=args.images,
        image_list=args.image_list, retry_dead_letters=args.retry_dead_letters, features=args.features,
        features_manifest=features_manifest, split=args.split, skip_damaged_shards=args.skip_damaged_shards,
        references=args.references, include=args.include, skip_existing=list(args.skip_existing), threads=args.threads,
        key_scheme=captions.agreed_key_scheme(("--references", args.references), ("--include", args.include)))
    output_folder.prepare(args.output, BLEU_JSON, outputs.listed_files, CAPTION_FILES, args.overwrite,
                          "caption output")
    return settings


def run(argv: Optional[List[str]] = None) -> dict:
    """Checks the inputs, builds and runs the pipeline; returns bleu.json's content ({} when only launched)."""
    args, beam_args = cli.parse_with_beam_options(build_parser(), argv)
    settings = settings_from(args)
    started = time.time()
    if not launch.run_to_completion(lambda p: graph.build_pipeline(p, settings), PipelineOptions(beam_args)):
        return {}
    summary = json.loads(storage.read_text(storage.join(args.output, BLEU_JSON)))
    metrics = json.loads(storage.read_text(storage.join(args.output, METRICS_JSON)))
    print(describe(summary, args.output, time.time() - started, metrics))
    damaged = summary.get("damaged_shards", {})
    if damaged.get("count"):
        print(f"warning: {damaged['count']} damaged shard(s) of {args.features} left out as {shards.SKIP_FLAG} "
              f"asked: {damaged['records_left_out']} of the {args.split} split's records were not captioned (the "
              "log names the shards)")
    outcome.check(summary["counts"]["captioned"], summary["counts"], "caption", args.output, args.include)
    return summary


def _field_scores(metrics: dict) -> List[str]:
    """One line per tokenization scored (x 100, as papers print them), then what was skipped and why."""
    lines = []
    for name in report.TOKENIZATIONS:
        scores = metrics.get("tokenizations", {}).get(name, {}).get("scores")
        if scores:
            shown = ", ".join(f"{metric} {value}" for metric, value in zip(report.NAMES, report.shown(scores)))
            lines.append(f"{name + ' tokenization:':22}{shown}")
    lines += [f"skipped {what}: {reason}" for what, reason in sorted(metrics.get("skipped", {}).items())]
    return lines


def describe(summary: dict, output: str, seconds: float, metrics: Optional[dict] = None) -> str:
    counts = summary["counts"]
    bleu = summary["bleu"]
    scores = ("BLEU-1..4 " + " / ".join(f"{100 * b:.1f}" for b in bleu)) if bleu else "no references: not scored"
    others = [f"{counts[key]} {label}" for key, label in (("skipped_existing", "already captioned"),
                                                          ("excluded", "not on --include")) if counts[key]]
    return (f"captioned {counts['captioned']} of {counts['images_matched']} images in {seconds:.0f} s "
            f"({counts['dead_letters']} dead letters, {counts['without_references']} without references"
            f"{''.join(', ' + other for other in others)}); {scores}\n"
            + "".join(line + "\n" for line in _field_scores(metrics or {})) +
            f"captions: {len(summary['files']['captions_jsonl'])} captions-*.jsonl files in {output}\n"
            f"scores:   {storage.join(output, METRICS_JSON)} (everything), {storage.join(output, BLEU_JSON)}\n"
            f"gallery:  {storage.join(output, REPORT_HTML)}")


main = launch.entry_point(run)


command = cli.command(main)  # the console script (setup.py)

if __name__ == "__main__":
    raise SystemExit(command())
