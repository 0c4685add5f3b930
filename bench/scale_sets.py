"""The synthetic sets bench/scale.py runs on: demo scenes replicated under new, unique ids, at any size.

Each caption ends in a rare phrase ("beside <word>", the word shared by two images), so the set's n-grams
have a long tail that grows with the set, as real captions' do (Flickr8k: 46 distinct n-grams an image):
a bounded vocabulary would hide what CIDEr-D's document frequencies cost.

    images(N)    N image files in folders of 1,000 (symlinks to a pool of generated 64x64 scenes), a
                 Flickr8k-style caption file (5 captions an image, keyed by file name) and split lists
    features(N)  a features folder of N thumbnail-encoder records (the pool's features under new ids),
                 whose manifest names its shards by glob, a form both today's and the earlier code read

Every set is written once per size into the work folder and reused by every run on it. bench/scale.py
writes them in a child process (`python -m bench.scale_sets`), so that its own memory, which every run it
starts inherits until exec, stays small and does not show in the runs' peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Tuple

import numpy as np

POOL = 500          # distinct scenes; image i is scene i % POOL
PER_FOLDER = 1000   # image files per sub-folder
PER_SHARD = 5000    # records per TFRecord shard


def _name(i: int) -> str:
    return f"img_{i:07d}.jpg"


def _relative(i: int) -> str:
    return f"f{i // PER_FOLDER:04d}/{_name(i)}"


def _word(number: int) -> str:
    letters = ""
    while True:
        number, digit = divmod(number, 26)
        letters += "abcdefghijklmnopqrstuvwxyz"[digit]
        if not number:
            return "zq" + letters


def with_tail(raw_captions: List[str], i: int) -> List[str]:
    """Image i's captions, each with its rare phrase (the same for images 2k and 2k + 1: df 2)."""
    return [f"{caption.rstrip(' .')} beside {_word((i // 2) * len(raw_captions) + n)} ."
            for n, caption in enumerate(raw_captions)]


def pool(work: str) -> Tuple[List[str], Dict[str, List[str]]]:
    """The generated scenes (paths) and their raw captions, written once."""
    from captioner.input_files import captions
    from tools import demo_data
    folder = os.path.join(work, "pool")
    if not os.path.exists(os.path.join(folder, demo_data.CAPTIONS_FILE)):
        demo_data.generate(folder, num_images=POOL, seed=5)
    paths = sorted(os.path.join(folder, "images", n) for n in os.listdir(os.path.join(folder, "images")))
    return paths, captions.read_captions(os.path.join(folder, demo_data.CAPTIONS_FILE))


def images(work: str, count: int) -> Dict[str, str]:
    """{"images": glob, "captions": token file, "splits": folder} of `count` images."""
    folder = os.path.join(work, f"images-tail-{count}")
    done = os.path.join(folder, "Flickr_8k.testImages.txt")
    result = {"images": os.path.join(folder, "images", "**"), "captions": os.path.join(folder, "captions.txt"),
              "splits": folder}
    if os.path.exists(done):
        return result
    paths, raw = pool(work)
    lines, names = [], []
    for i in range(count):
        target = os.path.join(folder, "images", _relative(i))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        source = paths[i % POOL]
        os.symlink(source, target)
        names.append(_name(i))
        lines += [f"{_name(i)}#{n}\t{caption}"
                  for n, caption in enumerate(with_tail(raw[os.path.basename(source)], i))]
    with open(result["captions"], "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    cut = [int(count * 0.7), int(count * 0.85)]
    for split, part in (("train", names[:cut[0]]), ("dev", names[cut[0]:cut[1]]), ("test", names[cut[1]:])):
        with open(os.path.join(folder, f"Flickr_8k.{split}Images.txt"), "w", encoding="utf-8") as handle:
            handle.write("".join(name + "\n" for name in part))
    return result


def features(work: str, count: int) -> str:
    """A features folder holding `count` test records of the thumbnail encoder."""
    folder = os.path.join(work, f"features-tail-{count}")
    if os.path.exists(os.path.join(folder, "manifest.json")):
        return folder
    import tensorflow as tf

    from captioner import encoders, schema, text
    from captioner import images as image_lib
    paths, raw = pool(work)
    encoder = encoders.load_encoder("thumbnail", spatial=True)
    pixels = np.stack([image_lib.decode_image(open(p, "rb").read(), encoder.input_size) for p in paths])
    encoded = encoder.encode(pixels)
    os.makedirs(os.path.join(folder, "test"), exist_ok=True)
    shards = (count + PER_SHARD - 1) // PER_SHARD
    for shard in range(shards):
        path = os.path.join(folder, "test", f"records-{shard:05d}-of-{shards:05d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(shard * PER_SHARD, min(count, (shard + 1) * PER_SHARD)):
                scene = os.path.basename(paths[i % POOL])
                captions = with_tail(raw[scene], i)
                writer.write(schema.make_example(
                    _relative(i), os.path.join(folder, "images", _relative(i)), "test",
                    [text.clean_caption(c, text.LEGACY_CLEANING) for c in captions], captions,
                    encoded["pooled"][i % POOL], encoded["spatial"][i % POOL]))
    manifest = {"schema_version": schema.SCHEMA_VERSION, "encoder": encoder.identity,
                "features": encoder.feature_info(), "counts": {"train": 0, "dev": 0, "test": count, "unsplit": 0},
                "shards": {split: f"{split}/records-*.tfrecord" for split in schema.SPLITS},
                "vocabulary": {"file": "vocabulary.txt", "min_count": 1, "size": 0},
                "dead_letters": 0, "images_matched": count}
    with open(os.path.join(folder, "vocabulary.txt"), "w") as handle:
        handle.write("")
    with open(os.path.join(folder, "manifest.json"), "w") as handle:
        json.dump(manifest, handle, indent=1)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_sets", description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="the folder the sets are written to")
    parser.add_argument("--images", default="", help="comma list of image-set sizes")
    parser.add_argument("--features", default="", help="comma list of features-set sizes")
    args = parser.parse_args()
    for size in filter(None, args.images.split(",")):
        print(images(args.work, int(size))["images"])
    for size in filter(None, args.features.split(",")):
        print(features(args.work, int(size)))


if __name__ == "__main__":
    main()
