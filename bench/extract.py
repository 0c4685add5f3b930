"""Benchmark: the extraction pipeline vs the encoder's limit vs the classic one-call-per-image loop.

    .venv/bin/python bench/extract.py [--data ../shared/data/flickr8k] [--models ../shared/models]

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
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import classic  # noqa: E402  (bench/classic.py: shared benchmark helpers)


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


METHODS = {"pipeline": measure_pipeline, "limit": measure_limit, "classic": measure_classic}


def _in_child(method: str, encoder: str, count: int, data: str) -> dict:
    """Runs one measurement in a fresh process; returns images/s, wall and that process's peak RSS."""
    started = time.time()
    child = subprocess.Popen([sys.executable, __file__, "--_measure", method, "--_encoder", encoder,
                              "--_count", str(count), "--data", data], stdout=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    output = child.stdout.read().decode().strip().splitlines()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{method} on {encoder} failed")
    return {"images_per_s": float(output[-1]), "wall_s": time.time() - started,
            "peak_rss_mb": usage.ru_maxrss / 1024, "images": count}


def _marginal(full: dict, part: dict) -> dict:
    """The start-up-excluded row: the images the full run does beyond the partial one, and their rate."""
    full_s, part_s = (run["images"] / run["images_per_s"] for run in (full, part))
    return {"images_per_s": classic.marginal_rate(full["images"], full_s, part["images"], part_s),
            "wall_s": full_s - part_s, "peak_rss_mb": full["peak_rss_mb"], "images": full["images"] - part["images"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "flickr8k"))
    parser.add_argument("--models", default=os.path.join(ROOT, "..", "shared", "models"))
    parser.add_argument("--vgg16_images", type=int, default=300, help="subset size for VGG16 (default: %(default)s)")
    parser.add_argument("--classic_images", type=int, default=500,
                        help="images for the classic loop and the limit (default: %(default)s)")
    parser.add_argument("--_measure", help=argparse.SUPPRESS)
    parser.add_argument("--_encoder", help=argparse.SUPPRESS)
    parser.add_argument("--_count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        paths = _images(args.data, args._count)
        print(METHODS[args._measure](args._encoder, paths, args.data) if args._measure == "pipeline"
              else METHODS[args._measure](args._encoder, paths))
        return
    total = len(os.listdir(os.path.join(args.data, "images")))
    tflite = os.path.join(args.models, "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
    plan = [("mobilenet_v1 tflite", tflite, total, min(args.classic_images, total)),
            ("vgg16 (weights=none)", "vgg16", args.vgg16_images, min(args.classic_images, args.vgg16_images) // 3)]
    results = []
    for label, encoder, pipeline_count, sample in plan:
        full = _in_child("pipeline", encoder, pipeline_count, args.data)
        quarter = _in_child("pipeline", encoder, pipeline_count // 4, args.data)
        row = {"encoder": label, "pipeline": full, "pipeline, start-up excluded": _marginal(full, quarter),
               "limit": _in_child("limit", encoder, sample, args.data),
               "classic": _in_child("classic", encoder, sample, args.data)}
        results.append(row)
    print(table(results))
    print(json.dumps(results))


def table(results: list) -> str:
    lines = ["| encoder | method | images | images/s | wall s | peak RSS MB | vs limit | vs classic |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in results:
        limit, classic = row["limit"]["images_per_s"], row["classic"]["images_per_s"]
        for method in ("pipeline", "pipeline, start-up excluded", "limit", "classic"):
            m = row[method]
            lines.append(f"| {row['encoder']} | {method} | {m['images']} | {m['images_per_s']:.1f} | {m['wall_s']:.0f} | "
                         f"{m['peak_rss_mb']:.0f} | {m['images_per_s'] / limit:.2f}x | {m['images_per_s'] / classic:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
