"""Benchmark: training speed with an image's captions in one batch row (its image side computed once) against
one caption per row (the image side computed for every caption, as the trainer did before).

    .venv/bin/python -m bench.train_speed --features FEATURES_DIR [--decoders transformer,attention]
        [--epochs 2] [--limit_images 1200] [--finetune]

In one run, each in its own child process (`python -m trainer.task --config flickr8k`, no self-critical
epochs, the same seed and batch of 64 captions), per decoder:
  (a) train.captions_per_row=1: every caption on its own row, batches sorted by caption length
  (b) train.captions_per_row=0 (the default): each row an image with its captions (5 on Flickr8k), rows
      sorted by their longest caption
With --finetune (features extracted with a `.keras` encoder and extract.keep_images), both also run one epoch
of encoder fine-tuning on the kept images, where (a) runs the CNN once per caption and (b) once per image.
It prints a table: seconds per cross-entropy epoch (after the first, which traces), train captions/s, the
loss of each epoch and the best dev loss, (b)/(a) as a ratio; fine-tuning epoch seconds and captions/s.
The two arrangements compute the same loss for the same captions (tests/test_grouped.py, to 1e-5); their
batches hold different captions, so epoch losses agree only as training runs do.
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile

from bench import harness
from bench.train import features_to_use

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ARRANGEMENTS = {"a": ("one caption per row", 1), "b": ("an image's captions per row", 0)}


def run_trainer(features: str, work: str, decoder: str, per_row: int, epochs: int, finetune: bool) -> dict:
    from trainer.job_folder import ENCODER_FINETUNING, HISTORY
    job_dir = os.path.join(work, f"job-{decoder}-{per_row}")
    shutil.rmtree(job_dir, ignore_errors=True)
    sets = [f"train.decoder={decoder}", f"train.captions_per_row={per_row}", f"train.epochs={epochs}",
            "train.self_critical_epochs=0", "train.early_stopping_patience=0",
            f"train.finetune_encoder_epochs={1 if finetune else 0}"]
    command = [sys.executable, "-m", "trainer.task", "--config", "flickr8k", "--features", features,
               "--job_dir", job_dir, "--eval_split", "none", "--verbose", "2"]
    for item in sets:
        command += ["--set", item]
    print("[bench] " + " ".join(shlex.quote(c) for c in command[1:]), flush=True)
    done = os.path.join(job_dir, ENCODER_FINETUNING.history if finetune else HISTORY)
    run = harness.run_checked(command, os.path.join(work, f"trainer-{decoder}-{per_row}.log"), done, "the trainer")
    history = harness.read_json(os.path.join(job_dir, HISTORY))
    tuned = harness.read_json(done)["epochs"] if finetune else []
    return {**run, "epochs": history["epochs"], "run_info": history["runs"][-1], "finetune_epochs": tuned}


def _later_seconds(epochs: list) -> float:
    later = [e["seconds"] for e in epochs[1:]] or [e["seconds"] for e in epochs]
    return sum(later) / len(later)


def _row(decoder: str, key: str, result: dict) -> list:
    info, epochs = result["run_info"], result["epochs"]
    seconds = _later_seconds(epochs)
    examples = info["steps_per_epoch"] * info["global_batch"] * info["captions_per_row"]
    dev = [e["val_loss"] for e in epochs if "val_loss" in e]
    row = [decoder, f"({key}) {ARRANGEMENTS[key][0]}", f"{info['global_batch']} x {info['captions_per_row']}",
           f"{seconds:.1f}", f"{examples / seconds:.0f}", " / ".join(f"{e['loss']:.3f}" for e in epochs),
           f"{min(dev):.3f}" if dev else "-"]
    tuned = result["finetune_epochs"]
    if tuned:
        row += [f"{tuned[0]['seconds']:.0f}", f"{examples / tuned[0]['seconds']:.1f}"]
    return row


def report(results: dict, finetune: bool) -> str:
    headers = ["decoder", "rows", "batch (rows x captions)", "s per epoch", "train captions/s", "loss by epoch",
               "best dev loss"] + (["fine-tuning epoch s", "fine-tuning captions/s"] if finetune else [])
    rows, ratios = [], []
    for decoder, pair in results.items():
        rows += [_row(decoder, key, pair[key]) for key in ("a", "b")]
        a, b = (_later_seconds(pair[key]["epochs"]) for key in ("a", "b"))
        ratio = [decoder, f"{a / b:.2f}x"]
        if finetune:
            ratio.append(f"{pair['a']['finetune_epochs'][0]['seconds'] / pair['b']['finetune_epochs'][0]['seconds']:.2f}x")
        ratios.append(ratio)
    return "\n".join([
        "## Training speed: an image's captions per row vs one caption per row",
        "", f"- command: `{harness.command_line('train_speed')}`", f"- machine: {harness.machine()}; date: {harness.today()}",
        "", harness.markdown_table(headers, rows), "",
        harness.markdown_table(["decoder", "(b)/(a) captions/s, cross-entropy"]
                               + (["(b)/(a) fine-tuning"] if finetune else []), ratios)])


def main() -> None:
    parser = harness.argument_parser("train_speed", __doc__)
    parser.add_argument("--features", required=True, metavar="FOLDER",
                        help="features folder of `python -m pipelines.extract_features` with spatial features")
    parser.add_argument("--decoders", default="transformer,attention",
                        help="comma list of train.decoder values (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="cross-entropy epochs per run (default: %(default)s)")
    parser.add_argument("--limit_images", type=int, default=1200, metavar="N",
                        help="train on the first N train images, N/6 dev images; 0 = all (default: %(default)s)")
    parser.add_argument("--finetune", action="store_true",
                        help="also time one epoch of encoder fine-tuning (needs kept images and a .keras encoder)")
    parser.add_argument("--work_dir", default=None, metavar="FOLDER", help="keep logs and job dirs here")
    args = parser.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="bench-train-speed-")
    os.makedirs(work, exist_ok=True)
    try:
        features = features_to_use(args.features, work, args.limit_images)
        results = {decoder: {key: run_trainer(features, work, decoder, per_row, args.epochs, args.finetune)
                             for key, (_, per_row) in ARRANGEMENTS.items()}
                   for decoder in args.decoders.split(",")}
        print(report(results, args.finetune))
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
