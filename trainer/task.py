"""Entry point: `python -m trainer.task --config CONFIG --features FOLDER --job_dir FOLDER`.

Parses flags and the config, runs `trainer.job.run`, prints a short summary.
The same command runs on a laptop CPU with local paths and on a GPU VM with
gs:// paths (every visible GPU is used with train.strategy=mirrored). Run it
again with the same --job_dir after an interruption and it resumes.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
from typing import List, Optional

from captioner import cli, storage
from captioner import config as config_lib
from captioner.errors import UsageError

EXAMPLE = """example:
  python -m trainer.task --config configs/flickr8k.yaml \\
      --features gs://my-bucket/features/mobilenet_v1 --job_dir gs://my-bucket/jobs/run1

writes to --job_dir: job.json (the features and train config it was started with), backup/ (resume state),
checkpoints/best.weights.h5 (best by dev loss), logs/ (TensorBoard), history.json (one entry per epoch and per
run), finetune/ (encoder fine-tuning: its backup, history and weights), self_critical/ (history and weights),
export/ (decoder.keras, vocabulary.txt, bundle.json, encoder/ with the fine-tuned encoder.keras when there is
one), eval.json + eval_captions.jsonl (BLEU-1..4 and CIDEr-D, decoded as caption.* says), summary.json."""


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m trainer.task",
        description="Trains a caption decoder (merge | init_lstm | attention | transformer, from train.decoder)\non extracted "
                    "features with tf.distribute, optionally trains the encoder with it on the kept images\n"
                    "(train.finetune_encoder_epochs) and fine-tunes it on its own sampled captions\n"
                    "(train.self_critical_epochs), resumes after interruptions, exports a captioner bundle\n"
                    "and scores it with corpus BLEU and CIDEr-D, decoding as the caption job does.",
        epilog=EXAMPLE, formatter_class=cli.HelpFormatter)
    config_lib.add_config_flags(parser)
    parser.add_argument("--features", required=True, metavar="FOLDER",
                        help="features folder written by `python -m pipelines.extract_features` (manifest.json, "
                             "vocabulary.txt, <split>/records-*.tfrecord); local or gs:// (copied to a local cache)")
    parser.add_argument("--job_dir", required=True, metavar="FOLDER",
                        help="where the job writes backups, checkpoints, logs, history and the export; local or "
                             "gs:// (written locally, mirrored there after every epoch); rerun with the same "
                             "--job_dir to resume an interrupted job (with the same features and train config)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start the job in --job_dir again from nothing, even if it holds a job trained on "
                             "other features or another train config (otherwise that is refused)")
    parser.add_argument("--eval_split", default="dev", choices=["dev", "test", "none"],
                        help="split scored with corpus BLEU-1..4 and CIDEr-D after training (decoded with caption.*), "
                             "into job_dir/eval.json; none skips it (default: %(default)s)")
    parser.add_argument("--devices", default=None, metavar="DEV[,DEV...]",
                        help="comma list of devices for train.strategy=mirrored, e.g. /gpu:0,/gpu:1 or, on a CPU "
                             "machine, /cpu:0,/cpu:1 (the CPU is split into logical devices); default: every "
                             "visible GPU, else the CPU")
    parser.add_argument("--work_dir", default=None, metavar="FOLDER",
                        help="local scratch folder for the gs:// features cache and the local copy of a gs:// "
                             "job dir (default: a temporary folder, removed at the end)")
    parser.add_argument("--verbose", type=int, default=None, choices=[0, 1, 2],
                        help="Keras fit verbosity: 1 progress bar, 2 one line per epoch, 0 silent "
                             "(default: 1 on a terminal, 2 otherwise)")
    return parser


def _configure_logging() -> None:
    logger = logging.getLogger("trainer")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s trainer: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def parse_devices(value: Optional[str]) -> Optional[List[str]]:
    if not value:
        return None
    devices = [d.strip() for d in value.split(",") if d.strip()]
    wrong = [d for d in devices if not re.fullmatch(r"/(cpu|gpu):\d+", d.lower())]
    if wrong or not devices:
        raise UsageError(f"--devices {value!r}: {', '.join(wrong) or 'no device'} is not of the form /gpu:N or "
                         "/cpu:N; give a comma list such as /gpu:0,/gpu:1")
    return devices


def _check_apart(features: str, job_dir: str) -> None:
    """A job dir inside the features folder (or the other way round) mixes the trainer's files with the
    extraction's, and an --overwrite of either would meet the other's."""
    inside = [(a if storage.is_remote(a) else os.path.abspath(a)).rstrip("/") + "/" for a in (features, job_dir)]
    if inside[0].startswith(inside[1]) or inside[1].startswith(inside[0]):
        raise UsageError(f"--job_dir {job_dir} and --features {features} overlap; give the job a folder of its own, "
                         "e.g. beside the features: --job_dir runs/job1")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging()
    config = config_lib.load(args.config, args.overrides)
    devices = parse_devices(args.devices)
    storage.check_reachable([args.features, args.job_dir, args.config])
    storage.check_folder(args.job_dir, "--job_dir")
    _check_apart(args.features, args.job_dir)
    from trainer import job  # imported late: TensorFlow is not needed for --help

    result = job.run(config, args.features, args.job_dir, devices=devices, eval_split=args.eval_split,
                     work_dir=args.work_dir, verbose=args.verbose, overwrite=args.overwrite)
    if result.summary:  # a multi-worker job's other workers leave the summary to the chief
        print("summary: " + json.dumps(result.summary, sort_keys=True), flush=True)
    return 0


command = cli.command(main)  # the console script (setup.py)

if __name__ == "__main__":
    sys.exit(command())
