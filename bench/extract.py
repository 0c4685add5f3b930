"""Benchmark: the extraction pipeline vs the encoder's limit vs the classic one-call-per-image loop.

    .venv/bin/python -m bench.extract [--data ../shared/data/flickr8k] [--models ../shared/models]

For each encoder, in one run, each method in its own process (so peak RSS is its own):
  pipeline  - pipelines.extract_features on DirectRunner, 2 worker processes, start-up included
  pipeline, start-up excluded - the marginal rate between a run on a quarter of the images and the full
              run: (N - N/4) / (t_N - t_N/4), so the fixed costs (worker start, model load, manifest)
              cancel out, as they are outside the limit's timing too
  limit     - the encoder alone on already-decoded arrays, batched, using both cores
  classic   - the Keras tutorials' method: decode + one predict/invoke call per image, in one loop
VGG16 (weights=none: same compute as imagenet) runs on a subset, since one image takes ~0.1-0.3 s here.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np

from bench import harness


def _images(data: str, limit: int) -> list:
    names = sorted(os.listdir(os.path.join(data, "images")))
    return [os.path.join(data, "images", n) for n in names[:limit]]


def _decoded(paths: list, size) -> np.ndarray:
    from captioner import images
    return np.stack([images.decode_image(open(p, "rb").read(), size) for p in paths])


def measure_limit(encoder_name: str, paths: list) -> float:
    from captioner import encoders
    encoder = encoders.load_encoder(encoder_name, spatial=True, num_threads=os.cpu_count())
    batch = _decoded(paths, encoder.input_size)
    encoder.encode(batch[:8])  # warm-up
    started = time.time()
    for start in range(0, len(batch), 32):
        encoder.encode(batch[start:start + 32])
    return len(batch) / (time.time() - started)


def measure_classic(encoder_name: str, paths: list) -> float:
    """One decode + one call per image, batch 1, as the tutorials' feature-extraction loop does."""
    from PIL import Image
    from captioner import encoders
    encoder = encoders.load_encoder(encoder_name, spatial=False, num_threads=1)
    started = time.time()
    for path in paths:
        image = np.asarray(Image.open(path).convert("RGB").resize(encoder.input_size[::-1]))
        encoder.encode(image[None])
    return len(paths) / (time.time() - started)


def measure_pipeline(encoder_name: str, paths: list, data: str) -> float:
    from pipelines import extract_features
    with tempfile.TemporaryDirectory() as folder:
        os.makedirs(os.path.join(folder, "images"))
        for path in paths:
            os.symlink(path, os.path.join(folder, "images", os.path.basename(path)))
        started = time.time()
        extract_features.run([
            "--config", "flickr8k", "--set", f"extract.encoder={encoder_name}", "--set", "extract.weights=none",
            "--images", os.path.join(folder, "images", "*.jpg"), "--captions", os.path.join(data, "Flickr8k.token.txt"),
            "--splits", data, "--output", os.path.join(folder, "features"), "--encoder_threads", "1",
            "--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"])
        return len(paths) / (time.time() - started)


def _measure_rate(args) -> dict:
    """In the child: images/s of the method --_measure on the first --_count images of --data."""
    paths = _images(args.data, args._count)
    rate = (measure_pipeline(args._encoder, paths, args.data) if args._measure == "pipeline"
            else {"limit": measure_limit, "classic": measure_classic}[args._measure](args._encoder, paths))
    return {"images_per_s": rate}


METHODS = dict.fromkeys(("pipeline", "limit", "classic"), _measure_rate)


def _in_child(method: str, encoder: str, count: int, data: str, work: str) -> dict:
    """Runs one measurement in a fresh process; returns images/s, wall and that process's peak RSS."""
    run = harness.measure_in_child("extract", method, work, {"_encoder": encoder, "_count": count, "data": data},
                                   what=f"{method} on {encoder}", announce=False)
    return {"images_per_s": run["images_per_s"], "wall_s": run["wall_s"], "peak_rss_mb": run["peak_rss_mb"],
            "images": count}


def _marginal(full: dict, part: dict) -> dict:
    """The start-up-excluded row: the images the full run does beyond the partial one, and their rate."""
    full_s, part_s = (run["images"] / run["images_per_s"] for run in (full, part))
    return {"images_per_s": harness.marginal_rate(full["images"], full_s, part["images"], part_s),
            "wall_s": full_s - part_s, "peak_rss_mb": full["peak_rss_mb"], "images": full["images"] - part["images"]}


def main() -> None:
    parser = harness.argument_parser("extract", __doc__)
    parser.add_argument("--data", default=os.path.join(harness.ROOT, "..", "shared", "data", "flickr8k"))
    parser.add_argument("--models", default=os.path.join(harness.ROOT, "..", "shared", "models"))
    parser.add_argument("--vgg16_images", type=int, default=300, help="subset size for VGG16 (default: %(default)s)")
    parser.add_argument("--classic_images", type=int, default=500,
                        help="images for the classic loop and the limit (default: %(default)s)")
    harness.add_measure_flags(parser, "--_encoder")
    parser.add_argument("--_count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data = os.path.abspath(args.data)
    if harness.serve_measure(args, METHODS):
        return
    total = len(os.listdir(os.path.join(args.data, "images")))
    tflite = os.path.abspath(os.path.join(args.models, "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"))
    plan = [("mobilenet_v1 tflite", tflite, total, min(args.classic_images, total)),
            ("vgg16 (weights=none)", "vgg16", args.vgg16_images, min(args.classic_images, args.vgg16_images) // 3)]
    results = []
    work = tempfile.mkdtemp(prefix="bench-extract-")
    try:
        for label, encoder, pipeline_count, sample in plan:
            full = _in_child("pipeline", encoder, pipeline_count, args.data, work)
            quarter = _in_child("pipeline", encoder, pipeline_count // 4, args.data, work)
            row = {"encoder": label, "pipeline": full, "pipeline, start-up excluded": _marginal(full, quarter),
                   "limit": _in_child("limit", encoder, sample, args.data, work),
                   "classic": _in_child("classic", encoder, sample, args.data, work)}
            results.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    print(json.dumps(results))


def table(results: list) -> str:
    rows = []
    for row in results:
        limit, classic = row["limit"]["images_per_s"], row["classic"]["images_per_s"]
        for method in ("pipeline", "pipeline, start-up excluded", "limit", "classic"):
            m = row[method]
            rows.append([row["encoder"], method, m["images"], f"{m['images_per_s']:.1f}", f"{m['wall_s']:.0f}",
                         f"{m['peak_rss_mb']:.0f}", f"{m['images_per_s'] / limit:.2f}x",
                         f"{m['images_per_s'] / classic:.2f}x"])
    return harness.markdown_table(["encoder", "method", "images", "images/s", "wall s", "peak RSS MB", "vs limit",
                                   "vs classic"], rows)


if __name__ == "__main__":
    main()
