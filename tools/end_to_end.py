"""All three stages in one command: extract -> train -> caption and score, with a results table.

    python -m tools.end_to_end --demo                     # the generated shapes demo, no download
    python -m tools.end_to_end --data FLICKR8K_DIR --config flickr8k --encoder PATH_OR_NAME

Each stage runs as its own process (the same commands a user would type), so
the table reports each stage's wall time and peak memory honestly. Writes features/, job/, captions/ and
results.md (the results table) under --workdir.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from typing import Dict, List, Optional

from captioner import cli, interrupts, storage
from captioner import config as configs
from captioner.errors import InputError, UsageError
from captioner.layout import BLEU_JSON, EXPORT_DIR, METRICS_JSON, REPORT_HTML, SPLIT_FILES
from captioner.metrics import report
from tools import demo_data

DEMO_IMAGES = 1000


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m tools.end_to_end", description=__doc__,
                                formatter_class=cli.HelpFormatter)
    configs.add_config_flags(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", action="store_true",
                        help="generate the shapes demo set (no download) and run on it")
    source.add_argument("--data", help="a Flickr8k-style folder: images/, a caption file, Flickr_8k.*Images.txt")
    parser.add_argument("--demo_images", type=int, default=DEMO_IMAGES,
                        help="with --demo: how many scenes to generate (default: %(default)s)")
    parser.add_argument("--captions", default=None,
                        help="caption file (default: Flickr8k.token.txt or captions.txt inside --data)")
    parser.add_argument("--workdir", default=None,
                        help="folder for every stage's output, local or gs://; a new run replaces the features and "
                             "captions there and resumes (or repeats) the training (default: runs/demo or runs/flickr8k)")
    parser.add_argument("--encoder", default=None, help="encoder name or .tflite path (overrides extract.encoder)")
    parser.add_argument("--weights", default=None, help="imagenet | none | weights file (overrides extract.weights)")
    parser.add_argument("--workers", type=int, default=2,
                        help="DirectRunner worker processes for the two Beam stages (default: %(default)s)")
    parser.add_argument("--results", default=None, help="also append the results table to this Markdown file")
    return parser


def parse_args(argv: Optional[List[str]]):
    return cli.parse_with_beam_options(build_parser(), argv)


def _caption_file(data: str, explicit: Optional[str]) -> str:
    if explicit:
        return explicit
    for name in ("Flickr8k.token.txt", demo_data.CAPTIONS_FILE):
        if storage.exists(storage.join(data, name)):
            return storage.join(data, name)
    raise InputError(f"--data {data} holds no Flickr8k.token.txt or captions.txt; pass the caption file with --captions")


def _run_stage(name: str, module: str, args: List[str]) -> Dict:
    """Runs `python -m module args` as a child process; returns its wall time and peak RSS."""
    print(f"\n=== {name}: python -m {module} {' '.join(args)}", flush=True)
    started = time.time()
    child = subprocess.Popen([sys.executable, "-m", module, *args])
    try:
        _, status, usage = os.wait4(child.pid, 0)
    except KeyboardInterrupt as interrupt:
        interrupts.pass_on(interrupt, [child])
        raise
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"error: the {name} stage failed (exit code {child.returncode}); its output is above")
    return {"stage": name, "seconds": time.time() - started, "peak_rss_mb": usage.ru_maxrss / 1024}


def run(argv: Optional[List[str]] = None) -> Dict:
    args, beam_args = parse_args(argv)
    workdir = args.workdir or os.path.join("runs", "demo" if args.demo else "flickr8k")
    data = args.data
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: the Beam stages need at least 1 worker process (default 2)")
    if args.demo and args.demo_images < 1:
        raise UsageError(f"--demo_images {args.demo_images}: the demo needs at least 1 scene (default "
                         f"{DEMO_IMAGES})")
    if data and not (storage.is_remote(data) or os.path.isdir(data)):
        raise InputError(f"--data {data} is not a folder; point it at a Flickr8k-style folder (images/, a caption "
                         "file, Flickr_8k.*Images.txt), e.g. ../shared/data/flickr8k")
    if args.demo:
        data = os.path.join(workdir, "data")
        if not os.path.exists(os.path.join(data, demo_data.CAPTIONS_FILE)):
            print(f"generating the demo data set in {data}")
            demo_data.generate(data, num_images=args.demo_images)
    caption_file = _caption_file(data, args.captions)
    config_flags = ["--config", args.config] + [f for o in args.overrides for f in ("--set", o)]
    encoder_flags = (["--encoder", args.encoder] if args.encoder else []) + (
        ["--weights", args.weights] if args.weights else [])
    beam_flags = beam_args or ["--runner=DirectRunner", f"--direct_num_workers={args.workers}",
                               "--direct_running_mode=multi_processing"]
    features, job, captioned = (storage.join(workdir, name) for name in ("features", "job", "captions"))
    images = storage.join(data, "images", "*")
    stages = [
        _run_stage("extract", "pipelines.extract_features", [
            *config_flags, *encoder_flags, "--images", images, "--captions", caption_file, "--splits", data,
            "--output", features, "--overwrite", *(["--encoder_threads", "1"] if args.workers > 1 else []),
            *beam_flags]),
        _run_stage("train", "trainer.task", [*config_flags, "--features", features, "--job_dir", job]),
        _run_stage("caption and score", "pipelines.caption_and_score", [
            *config_flags, "--model", storage.join(job, EXPORT_DIR), "--images", images,
            "--include", storage.join(data, SPLIT_FILES["test"]), "--references", caption_file,
            "--output", captioned, "--overwrite", *(["--threads", "1"] if args.workers > 1 else []), *beam_flags]),
    ]
    summary = json.loads(storage.read_text(storage.join(captioned, BLEU_JSON)))
    metrics = json.loads(storage.read_text(storage.join(captioned, METRICS_JSON)))
    table = results_table(stages, summary, metrics, args, workdir)
    print("\n" + table)
    storage.write_text(storage.join(workdir, "results.md"), table)
    if args.results:
        with open(args.results, "a", encoding="utf-8") as handle:
            handle.write("\n" + table)
    return {"stages": stages, "summary": summary, "workdir": workdir}


def scores_table(metrics: Dict) -> str:
    """metrics.json's corpus scores as a Markdown table (x 100), one row per tokenization, then what was skipped."""
    header = "| tokenization | " + " | ".join(report.NAMES) + " |\n|" + " --- |" * (len(report.NAMES) + 1) + "\n"
    rows = "".join(f"| {name} | " + " | ".join(report.shown(entry["scores"])) + " |\n"
                   for name, entry in ((t, metrics["tokenizations"][t]) for t in report.TOKENIZATIONS)
                   if entry.get("scores"))
    skipped = "".join(f"\nSkipped {what}: {reason}\n" for what, reason in sorted(metrics["skipped"].items()))
    return header + rows + skipped


def results_table(stages: List[Dict], summary: Dict, metrics: Dict, args, workdir: str) -> str:
    bleu = summary["bleu"] or [0.0] * 4
    counts = summary["counts"]
    rows = "\n".join(f"| {s['stage']} | {s['seconds']:.0f} | {s['peak_rss_mb']:.0f} |" for s in stages)
    return (f"### End to end: {'demo' if args.demo else args.data} "
            f"({datetime.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores)\n\n"
            f"Command: `python -m tools.end_to_end {' '.join(sys.argv[1:])}`\n\n"
            f"| stage | wall s | peak RSS MB |\n| --- | --- | --- |\n{rows}\n"
            f"| total | {sum(s['seconds'] for s in stages):.0f} | {max(s['peak_rss_mb'] for s in stages):.0f} |\n\n"
            f"Test split: {counts['scored']} images scored, {counts['dead_letters']} dead letters. "
            f"BLEU-1..4 (x100, bleu.json): {' / '.join(f'{100 * b:.1f}' for b in bleu)}\n\n"
            f"{scores_table(metrics)}\n"
            f"Encoder: {summary['model']['encoder']}; decoder: {summary['model']['decoder']}; "
            f"decoding: {json.dumps(summary['decoding'])}; config: {args.config} {' '.join(args.overrides)}\n\n"
            f"Outputs: captions and scores (metrics.json, bleu.json) in {storage.join(workdir, 'captions')} "
            f"(gallery: {storage.join(workdir, 'captions', REPORT_HTML)})\n")


def main(argv: Optional[List[str]] = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
