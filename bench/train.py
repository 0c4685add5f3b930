"""Benchmark: the trainer vs the classic Keras merge-model tutorial, training and greedy decoding.

    .venv/bin/python -m bench.train --features FEATURES_DIR [--epochs 1] [--limit_images N]

FEATURES_DIR is a folder written by `python -m pipelines.extract_features` (manifest.json, vocabulary.txt,
train/dev/test shards with pooled features). In one run, each method in its own child process (so peak
RSS, os.wait4's ru_maxrss, is its own), on the same merge model (embedding 256, LSTM 256, dropout 0.5):
  (a) classic  - the tutorials' method: model.fit on a Python generator yielding, per image, every
                 prefix -> next-word sample of every caption (pad_sequences, to_categorical targets),
                 categorical cross-entropy, Adam, one image's samples per batch; dev loss likewise
  (b) trainer  - python -m trainer.task --config flickr8k with train.decoder=merge, train.features=pooled,
                 embedding/units 256, label_smoothing 0, no self-critical epochs (whole captions in
                 tf.data, masked loss)
and greedy decoding, on the weights (b) exported:
  (c) classic  - the tutorials' generate_desc loop: one model.predict call per word per image, batch 1
  (d) trainer  - captioner.bundle.Captioner.caption_features, batched greedy search, batches of 64
It prints a Markdown table (seconds per epoch, peak RSS, best dev loss, captions/s) with the ratios and
the targets: (b) >= 5x faster per epoch than (a), (d) >= 50x faster than (c), (b) peak RSS < 3 GB.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import shutil
import sys
import tempfile
from typing import Optional

from bench import harness, tutorial
from captioner.layout import EXPORT_DIR, MANIFEST_FILE

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the children inherit it: TensorFlow's C++ notices off

UNITS = 256
TARGETS = {"epoch_speedup": 5.0, "decode_speedup": 50.0, "trainer_rss_mb": 3000.0}


# --- inputs --------------------------------------------------------------------------------------
def check_features(path: str) -> None:
    """Exits non-zero with a clear message unless `path` is a finished extraction with pooled features."""
    manifest_path = os.path.join(path, MANIFEST_FILE)
    if not os.path.isdir(path):
        raise SystemExit(f"error: --features {path} does not exist: pass the --output folder of "
                         "`python -m pipelines.extract_features`")
    if not os.path.exists(manifest_path):
        raise SystemExit(f"error: {manifest_path} does not exist: --features must be the --output folder of a "
                         "finished `python -m pipelines.extract_features` run")
    manifest = harness.read_json(manifest_path)
    if "pooled" not in manifest.get("features", {}):
        raise SystemExit(f"error: {path} has no pooled features (manifest lists "
                         f"{sorted(manifest.get('features', {}))}): both methods train on pooled features")
    for split in ("train", "test"):
        if not manifest.get("counts", {}).get(split):
            raise SystemExit(f"error: {path} holds no {split} images (counts {manifest.get('counts')}): extract "
                             "with --splits pointing at the Flickr_8k.*Images.txt files")


def limited_copy(source: str, target: str, train: int, dev: int) -> str:
    """The first `train` train and `dev` dev records of `source` (test whole), copied byte for byte, one shard a
    split, into a features folder whose manifest counts them."""
    import tensorflow as tf
    from captioner import manifest as manifest_lib
    from captioner.layout import shard_prefix
    manifest = harness.read_json(os.path.join(source, MANIFEST_FILE))
    os.makedirs(target, exist_ok=True)
    shutil.copy(os.path.join(source, manifest["vocabulary"]["file"]), os.path.join(target, manifest["vocabulary"]["file"]))
    for split, limit in (("train", train), ("dev", dev), ("test", None), ("unsplit", 0)):
        files = manifest_lib.shard_files(manifest, source, split)
        manifest["shards"][split], manifest["counts"][split] = [], 0
        if not files or limit == 0:
            continue
        manifest["shards"][split] = [f"{shard_prefix(split)}-00000-of-00001.tfrecord"]
        shard = os.path.join(target, manifest["shards"][split][0])
        os.makedirs(os.path.dirname(shard), exist_ok=True)
        written = 0
        with tf.io.TFRecordWriter(shard) as writer:
            for record in tf.data.TFRecordDataset(files):
                if limit is not None and written >= limit:
                    break
                writer.write(record.numpy())
                written += 1
        manifest["counts"][split] = written
    harness.write_json(os.path.join(target, MANIFEST_FILE), manifest, indent=2, sort_keys=True)
    return target


def features_to_use(features: str, work: str, limit: Optional[int]) -> str:
    """`features`, or its first `limit` train and limit/6 dev images (Flickr8k's ratio) copied into `work`."""
    return limited_copy(os.path.abspath(features), os.path.join(work, "features"), limit, math.ceil(limit / 6)) \
        if limit else os.path.abspath(features)


# --- (a) classic training, in a child ---------------------------------------------------------------
def measure_classic_train(args) -> dict:
    return tutorial.fit_classic(args.features, args.epochs, UNITS)


# --- (c) / (d) decoding, in a child ----------------------------------------------------------------
def _bundle_and_test(args):
    from captioner.bundle import Captioner
    captioner = Captioner.load(args.model)
    folder, caption_data = tutorial.open_folder(args.features, captioner.feature)
    return captioner, tutorial.read_split(folder, caption_data, "test", args.limit)


def measure_classic_decode(args) -> dict:
    captioner, test = _bundle_and_test(args)
    values = dict(zip(test.ids, test.features))  # dequantized, as the tutorials keep them
    return tutorial.caption_all(captioner.model, captioner.tokens, test.ids, values.__getitem__,
                                captioner.decoding.max_length)


def measure_batched_decode(args) -> dict:
    from captioner.decoder.architectures import parameter_count
    captioner, test = _bundle_and_test(args)
    captioner.batch_size = args.batch  # Captioner splits its input into batches of this size
    stored = {captioner.feature: test.stored}
    greedy = dataclasses.replace(captioner.decoding, beam_size=1)
    passes = []
    for _ in range(2):  # pass 1 traces the tf.function(s), pass 2 is the steady state
        seconds, results = harness.timed(captioner.caption_features, stored, greedy)
        passes.append(seconds)
    return {"images": len(test.ids), "seconds": passes[1], "cold_seconds": passes[0],
            "captions_per_s": len(test.ids) / passes[1], "parameters": parameter_count(captioner.model),
            "captions": {i: caption for i, (caption, _) in zip(test.ids, results)}}


MEASURES = {"classic_train": measure_classic_train, "classic_decode": measure_classic_decode,
            "batched_decode": measure_batched_decode}


def in_child(measure: str, work: str, **options) -> dict:
    return harness.measure_in_child("train", measure, work, options)


# --- (b) the trainer, in a child -------------------------------------------------------------------
def trainer_command(features: str, job_dir: str, epochs: int, extra_sets) -> list:
    sets = ["train.decoder=merge", "train.features=pooled", f"train.embedding_dim={UNITS}", f"train.units={UNITS}",
            "train.label_smoothing=0", f"train.epochs={epochs}",
            "train.self_critical_epochs=0",  # the classic method has no such phase: compare the epochs alone
            *extra_sets]
    command = [sys.executable, "-m", "trainer.task", "--config", "flickr8k"]
    for item in sets:
        command += ["--set", item]
    return command + ["--features", features, "--job_dir", job_dir, "--eval_split", "none", "--verbose", "2"]


def run_trainer(features: str, work: str, epochs: int, extra_sets) -> dict:
    from trainer.job_folder import HISTORY
    job_dir = os.path.join(work, "job")
    shutil.rmtree(job_dir, ignore_errors=True)
    command = trainer_command(features, job_dir, epochs, extra_sets)
    print("[bench] trainer: " + " ".join(shlex.quote(c) for c in command[1:]), flush=True)
    history_path = os.path.join(job_dir, HISTORY)
    run = harness.run_checked(command, os.path.join(work, "trainer.log"), history_path, "the trainer")
    history = harness.read_json(history_path)
    return {**run, "epochs": history["epochs"], "run_info": history["runs"][-1], "job_dir": job_dir,
            "export": os.path.join(job_dir, EXPORT_DIR)}


# --- report ----------------------------------------------------------------------------------------
def _epoch_seconds(epochs: list) -> tuple:
    """(first epoch s, mean s of epochs 2.. or None)."""
    first = epochs[0]["seconds"] if epochs else math.nan
    later = [e["seconds"] for e in epochs[1:]]
    return first, (sum(later) / len(later) if later else None)


def _best(epochs: list, key: str = "val_loss"):
    values = [e[key] for e in epochs if key in e and math.isfinite(e[key])]
    return min(values) if values else None


def _fmt(value, spec: str = ".1f", none: str = "n/a") -> str:
    return none if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def report(results: dict, command: str, facts: dict) -> str:
    a, b, c, d = results["a"], results["b"], results["c"], results["d"]
    a_first, a_later = _epoch_seconds(a["epochs"])
    b_first, b_later = _epoch_seconds(b["epochs"])
    lines = [
        "## Training and greedy decoding: the trainer vs the classic merge-model tutorial",
        "",
        f"- command: `{command}`",
        f"- machine: {harness.machine()}; date: {harness.today()}",
        f"- data: {facts['features']}: {a['train_images']} train / {a['dev_images']} dev / {d['images']} test images, "
        f"vocabulary {facts['vocabulary']} tokens, pooled features {facts['shape']} {facts['dtype']}; "
        f"epochs: {facts['epochs']}",
        "",
        harness.markdown_table(
            ["method", "what", "epoch 1 s", "epochs 2+ s", "peak RSS MB", "best dev loss", "decoding", "captions/s"],
            [["(a) classic", f"model.fit on a per-image prefix generator, {a['train_samples']} samples/epoch, batch = "
              f"one image (~{a['train_samples'] / max(1, a['train_images']):.0f}), one-hot targets", f"{a_first:.1f}",
              _fmt(a_later), f"{a['peak_rss_mb']:.0f}", f"{_fmt(_best(a['epochs']), '.3f')} ¹",
              f"(c) one predict per word, batch 1, {c['images']} images, {c['predict_calls']} calls, "
              f"{harness.mean_words(c['captions'])} words/caption", f"{c['captions_per_s']:.2f}"],
             ["(b) trainer", f"trainer.task, merge decoder, {b['run_info']['steps_per_epoch']} steps x "
              f"{b['run_info']['global_batch']} captions", f"{b_first:.1f}", _fmt(b_later), f"{b['peak_rss_mb']:.0f}",
              f"{_fmt(_best(b['epochs']), '.3f')} ²", f"(d) Captioner.caption_features, greedy, batches of "
              f"{facts['batch']}, {d['images']} images, {harness.mean_words(d['captions'])} words/caption",
              f"{d['captions_per_s']:.1f}"]]),
        "",
    ]
    steady = a_later is not None and b_later is not None
    speedup = (a_later / b_later) if steady else (a_first / b_first)
    decode = d["captions_per_s"] / c["captions_per_s"]
    lines += [
        harness.markdown_table(["ratio", "value", "target", "met"], [
            [f"(a)/(b) seconds per epoch ({'epochs 2+' if steady else 'epoch 1, tracing included'})",
             f"{speedup:.1f}x", f">= {TARGETS['epoch_speedup']:.0f}x", harness.met(speedup >= TARGETS["epoch_speedup"])],
            ["(a)/(b) peak RSS", f"{a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x",
             f"(b) < 3 GB: {b['peak_rss_mb']:.0f} MB", harness.met(b["peak_rss_mb"] < TARGETS["trainer_rss_mb"])],
            ["(d)/(c) greedy captions/s", f"{decode:.0f}x", f">= {TARGETS['decode_speedup']:.0f}x",
             harness.met(decode >= TARGETS["decode_speedup"])]]),
        "",
        *_notes(a, c, d),
    ]
    return "\n".join(lines)


def _notes(a: dict, c: dict, d: dict) -> list:
    """What the table's losses are, the two models and how decoding was timed."""
    same = sum(1 for i, caption in c["captions"].items() if d["captions"].get(i) == caption)
    return [
        "¹ (a)'s dev loss: the mean categorical cross-entropy per prefix -> next-word sample, over all "
        f"{a['dev_samples']} prefix samples of the dev captions (Keras's loss, weighted by batch size). "
        "² (b)'s: trainer.training.CaptionLoss, the next-word cross-entropy summed over each whole dev caption's "
        "real tokens and divided by the train split's mean tokens per caption, i.e. per token of whole captions. "
        "Different quantities, computed differently from different models, but both are a mean next-word "
        "cross-entropy in nats over the same target words (the caption's words, then END), so comparable in scale. "
        "(b) evaluates the full batches of the dev split (its last partial batch, under one global batch of "
        "captions, is left out).",
        f"Models: (a) {a['parameters']:,} parameters (mask_zero, softmax, Dropout before Dense as in the "
        f"tutorials), (b) {d['parameters']:,} (Dense then Dropout, logits). (b) runs the flickr8k config otherwise "
        "(batch 64 captions, cosine schedule with a warm-up epoch, dropout 0.5), so after very few epochs its loss "
        "is not yet comparable. Epoch seconds include the dev-loss pass for both (fit with validation data) "
        "and, in epoch 1, the tracing.",
        f"Decoding: (c) and (d) run the same weights, (b)'s export (decoder.keras), over the first {c['images']} / "
        f"{d['images']} test images; both exclude loading and tracing ((c) decodes one image first, (d) is its "
        f"second pass; its first pass, tracing included, took {d['cold_seconds']:.1f} s). Same greedy rules; "
        f"identical captions on {same} of {c['images']} images. Decoding time grows with caption length: "
        "a model trained too briefly may stop at once (0 words) and make both look fast.",
    ]


def main() -> None:
    parser = harness.argument_parser("train", __doc__)
    parser.add_argument("--features", required=True, metavar="FOLDER",
                        help="local features folder written by `python -m pipelines.extract_features` (needs "
                             "pooled features, train and test shards; dev shards give the dev losses)")
    parser.add_argument("--epochs", type=int, default=1,
                        help="epochs for both methods; with 2 or more, epochs 2+ (no tracing) are reported "
                             "apart and give the speed-up (default: %(default)s)")
    parser.add_argument("--limit_images", type=int, default=None, metavar="N",
                        help="train on the first N train images and evaluate on the first ceil(N/6) dev images "
                             "(Flickr8k's 6:1 ratio), both methods, for a quick check (default: all)")
    parser.add_argument("--classic_decode_images", type=int, default=100, metavar="N",
                        help="test images for (c), the one-predict-per-word loop (default: %(default)s)")
    parser.add_argument("--decode_images", type=int, default=None, metavar="N",
                        help="test images for (d), the batched greedy decoder (default: all)")
    parser.add_argument("--batch", type=int, default=64, help="(d)'s decoding batch size (default: %(default)s)")
    parser.add_argument("--trainer_set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="extra --set override for (b), repeatable, e.g. train.lr_schedule=constant "
                             "(default: none; the merge/pooled/256/label_smoothing=0/epochs ones are always set)")
    parser.add_argument("--work_dir", default=None, metavar="FOLDER",
                        help="keep the logs, the limited features copy and (b)'s job dir (its export/ bundle) "
                             "here (default: a temporary folder, removed at the end)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write every measurement here as JSON")
    harness.add_measure_flags(parser, "--model")
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if harness.serve_measure(args, MEASURES):
        return

    if args.epochs < 1:
        raise SystemExit("error: --epochs must be >= 1")
    check_features(args.features)
    work = args.work_dir or tempfile.mkdtemp(prefix="bench-train-")
    os.makedirs(work, exist_ok=True)
    try:
        features = features_to_use(args.features, work, args.limit_images)
        manifest = harness.read_json(os.path.join(features, MANIFEST_FILE))
        info = manifest["features"]["pooled"]
        facts = {"features": args.features + (f" (first {args.limit_images} train images)" if args.limit_images else ""),
                 "vocabulary": manifest["vocabulary"]["size"] + 4, "shape": info["shape"], "dtype": info["dtype"],
                 "epochs": args.epochs, "batch": args.batch}
        results = {"a": in_child("classic_train", work, features=features, epochs=args.epochs)}
        results["b"] = run_trainer(features, work, args.epochs, args.trainer_set)
        results["c"] = in_child("classic_decode", work, features=features, model=results["b"]["export"],
                                limit=args.classic_decode_images)
        results["d"] = in_child("batched_decode", work, features=features, model=results["b"]["export"],
                                limit=args.decode_images, batch=args.batch)
        print(report(results, harness.command_line("train"), facts))
        if args.json:
            harness.write_json(args.json, results, indent=1)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
