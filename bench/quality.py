"""Flickr8k quality figures: the cross-entropy model of a finished job, self-critical variants, one table.

    python -m bench.quality export-xe  --features F --job_dir J --out BUNDLE   [--set ...]
    python -m bench.quality fine-tune  --features F --job_dir J --out JOB2     [--set train.self_critical_reward=cider_d ...]
    python -m bench.quality table      LABEL=CAPTION_OUTPUT ...                (metrics.json of caption jobs)

`export-xe` exports a job's best cross-entropy checkpoint (job_dir/checkpoints/best.weights.h5) as a bundle, the
model before self-critical fine-tuning. `fine-tune` runs self-critical fine-tuning from that checkpoint into a
new job dir with other settings (reward, learning rate, selection metric), leaving the finished job as it is,
and exports it. Score either with `python -m pipelines.caption_and_score --features F --split test ...`;
`table` prints every score of both tokenizations of those outputs, x 100, as bench/RESULTS.md shows them.
The --set values must give the finished job's architecture (its config file and overrides).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

from captioner import config as configs
from captioner.decoder import architectures
from captioner.layout import EXPORT_DIR, METRICS_JSON
from captioner.metrics import report
from trainer import data, export, features_folder
from trainer.distributed import strategy
from trainer.self_critical import loop as self_critical
from trainer.job_folder import BEST_WEIGHTS, JobFolder


def _model_from_checkpoint(config, features: str, job_dir: str, distribution, work: str):
    inputs = features_folder.open_features(features, config.train, os.path.join(work, "features"))
    with distribution.scope():
        model = architectures.build_from_config(config.train, inputs.shape, len(inputs.tokens))
    model.load_weights(os.path.join(job_dir, BEST_WEIGHTS))
    return inputs, model


def export_cross_entropy(config, features: str, job_dir: str, out: str) -> str:
    distribution = strategy.make_strategy("default")
    with tempfile.TemporaryDirectory() as work:
        inputs, model = _model_from_checkpoint(config, features, job_dir, distribution, work)
        return export.export(model, out, config, inputs)


def fine_tune(config, features: str, job_dir: str, out: str) -> str:
    distribution = strategy.make_strategy(config.train.strategy)
    with tempfile.TemporaryDirectory() as work:
        inputs, model = _model_from_checkpoint(config, features, job_dir, distribution, work)
        caption_data = data.CaptionData(inputs, config.train.max_length, seed=config.train.seed,
                                        sort_window_batches=config.train.sort_window_batches)
        folder = JobFolder(out, out)
        history = self_critical.fine_tune(model, distribution, caption_data, config, folder, verbose=2)
        print(json.dumps(history, indent=1))
        return export.export(model, os.path.join(out, EXPORT_DIR), config, inputs)


def table(outputs) -> str:
    """One row per (output, tokenization): every corpus score x 100."""
    lines = ["| model | tokenization | " + " | ".join(report.NAMES) + " |",
             "|" + " --- |" * (len(report.NAMES) + 2)]
    for labelled in outputs:
        label, path = labelled.split("=", 1)
        with open(os.path.join(path, METRICS_JSON)) as handle:
            metrics = json.load(handle)
        for name in report.TOKENIZATIONS:
            scores = metrics["tokenizations"][name].get("scores") or {}
            lines.append(f"| {label} | {name} | " + " | ".join(report.shown(scores)) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("export-xe", "fine-tune", "table"))
    parser.add_argument("outputs", nargs="*", help="with table: LABEL=CAPTION_OUTPUT folders")
    parser.add_argument("--features", help="the features folder the job trained on")
    parser.add_argument("--job_dir", help="the finished job (its checkpoints/best.weights.h5)")
    parser.add_argument("--out", help="export-xe: the bundle folder; fine-tune: the new job dir")
    configs.add_config_flags(parser)
    args = parser.parse_args(argv)
    if args.command == "table":
        print(table(args.outputs))
        return 0
    config = configs.load(args.config, args.overrides)
    run = export_cross_entropy if args.command == "export-xe" else fine_tune
    print(run(config, args.features, args.job_dir, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
