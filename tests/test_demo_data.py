"""The generated demo dataset: deterministic, complete, split cleanly, and its captions say what is drawn."""
import json
import os
import re
import time
from collections import Counter

import numpy as np
import pytest
from apache_beam.testing.util import assert_that
from PIL import Image

from captioner import text
from captioner.input_files import captions as caption_files
from captioner.layout import SPLIT_FILES
from pipelines.inputs.sources import ReadSplits
from tests.conftest import in_process_pipeline
from tools import demo_data

SINGLE = re.compile(r"^(big|small) (\w+) (circle|square|triangle) (on the left|on the right|at the top|"
                    r"at the bottom|in the center)$")
PAIR = re.compile(r"^(big|small) (\w+) (circle|square|triangle) (to the left of|above) "
                  r"(big|small) (\w+) (circle|square|triangle)$")
PALETTE = {**demo_data.COLOURS, **{f"background:{k}": v for k, v in demo_data.BACKGROUNDS.items()}}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("demo"))
    started = time.perf_counter()
    result = demo_data.generate(folder, num_images=300, seed=0)
    return folder, result, time.perf_counter() - started


def all_files(folder):
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = handle.read()
    return found


def nearest_colour(pixels: np.ndarray) -> np.ndarray:
    """Per pixel, the name of the closest palette colour (shape colours and backgrounds)."""
    names = list(PALETTE)
    palette = np.array([PALETTE[n] for n in names], dtype=float)
    distances = ((pixels[..., None, :].astype(float) - palette) ** 2).sum(-1)
    return np.array(names)[distances.argmin(-1)]


def test_300_images_take_under_10_seconds(demo):
    assert demo[2] < 10


def test_same_seed_gives_byte_identical_files(demo, tmp_path):
    demo_data.generate(str(tmp_path / "again"), num_images=300, seed=0)
    first, second = all_files(demo[0]), all_files(str(tmp_path / "again"))
    assert sorted(first) == sorted(second) and first == second
    demo_data.generate(str(tmp_path / "other"), num_images=300, seed=1)
    assert all_files(str(tmp_path / "other")) != first


def test_counts_add_up(demo):
    folder, result, _ = demo
    names = sorted(os.listdir(os.path.join(folder, "images")))
    assert names[0] == "0000.jpg" and names[-1] == "0299.jpg" and len(names) == 300
    assert {k: result[k] for k in ("images", "captions", "train", "dev", "test")} == {
        "images": 300, "captions": 1500, "train": 210, "dev": 45, "test": 45}
    paths = result["paths"]
    assert paths["images"] == os.path.join(folder, "images")
    assert all(os.path.exists(paths[k]) for k in ("captions", "train", "dev", "test"))
    with open(paths["captions"], encoding="utf-8") as handle:
        assert len(handle.read().splitlines()) == 1500


def test_every_image_has_five_captions_in_the_token_format(demo):
    folder, result, _ = demo
    path = result["paths"]["captions"]
    assert caption_files.detect_format(caption_files.first_line(path), path) == caption_files.TOKEN_FORMAT
    captions = caption_files.read_captions(path)
    assert sorted(captions) == sorted(os.listdir(os.path.join(folder, "images")))
    assert all(len(c) == 5 for c in captions.values())
    with open(path, encoding="utf-8") as handle:
        keys = [line.split("\t")[0] for line in handle]
    assert keys[:5] == [f"0000.jpg#{n}" for n in range(5)]


def test_splits_are_disjoint_and_cover_every_image(demo):
    folder = demo[0]
    lists = {split: caption_files.read_split_ids(os.path.join(folder, name))
             for split, name in SPLIT_FILES.items()}
    assert sum(len(ids) for ids in lists.values()) == 300
    assert set(lists["train"]).isdisjoint(lists["dev"]) and set(lists["dev"]).isdisjoint(lists["test"])
    assert set(lists["train"]).isdisjoint(lists["test"])
    with in_process_pipeline() as p:  # the reader the pipelines use
        assigned = p | ReadSplits(folder)

        def covers_every_image(pairs):
            assert sorted(name for name, _ in pairs) == sorted(os.listdir(os.path.join(folder, "images")))
            assert Counter(split for _, split in pairs) == {"train": 210, "dev": 45, "test": 45}

        assert_that(assigned, covers_every_image)


def test_captions_are_varied_but_dominated_by_the_canonical_phrasing(demo):
    captions = caption_files.read_captions(demo[1]["paths"]["captions"])
    raw = [c for cs in captions.values() for c in cs]
    assert any(c[0].isupper() for c in raw) and any(c[-1] in ".!" for c in raw)
    assert len({text.clean_caption(c, text.TUTORIAL) for c in raw}) > 2 * len(captions)
    for image, cs in captions.items():
        cleaned = Counter(text.clean_caption(c, text.TUTORIAL) for c in cs)
        canonical, count = cleaned.most_common(1)[0]
        assert count == 3, image
        assert SINGLE.match(canonical) or PAIR.match(canonical), canonical
        assert all(len(c.split()) <= 16 for c in cleaned)


def check_shape(labels: np.ndarray, region: tuple, colour: str, kind: str, size: str, position: str):
    """The named shape is drawn where the caption says: colour at its centre, size, and kind by fill ratio."""
    x, y = demo_data.POSITIONS[position]
    assert labels[y, x] == colour
    rows, cols = np.nonzero(labels[region] == colour)
    rows, cols = rows + region[0].start, cols + region[1].start
    assert abs((rows.min() + rows.max()) / 2 - y) <= 2 and abs((cols.min() + cols.max()) / 2 - x) <= 2
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    radius = demo_data.SIZES[size]
    assert abs(width - (2 * radius + 1)) <= 2 and abs(height - (2 * radius + 1)) <= 2
    fill = len(rows) / (height * width)   # square ~1, circle ~pi/4, triangle ~1/2
    found = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
    assert found == kind, (fill, kind)


def test_captions_name_the_colours_and_shapes_actually_drawn(demo):
    folder, result, _ = demo
    captions = caption_files.read_captions(result["paths"]["captions"])
    everywhere, half = slice(0, 64), 32
    for image, cs in sorted(captions.items()):
        labels = nearest_colour(np.asarray(Image.open(os.path.join(folder, "images", image))))
        canonical = Counter(text.clean_caption(c, text.TUTORIAL) for c in cs).most_common(1)[0][0]
        single = SINGLE.match(canonical)
        try:
            if single:
                size, colour, kind, where = single.groups()
                position = {v: k for k, v in demo_data.POSITION_PHRASES.items()}[where]
                check_shape(labels, (everywhere, everywhere), colour, kind, size, position)
                continue
            size_a, colour_a, kind_a, relation, size_b, colour_b, kind_b = PAIR.match(canonical).groups()
            if relation == "above":
                regions, positions = [(slice(0, half), everywhere), (slice(half, 64), everywhere)], ["top", "bottom"]
            else:
                regions, positions = [(everywhere, slice(0, half)), (everywhere, slice(half, 64))], ["left", "right"]
            check_shape(labels, regions[0], colour_a, kind_a, size_a, positions[0])
            check_shape(labels, regions[1], colour_b, kind_b, size_b, positions[1])
        except AssertionError as error:
            raise AssertionError(f"{image}: {canonical!r}: {error}") from error


def test_command_line(tmp_path, capsys):
    assert demo_data.main([str(tmp_path / "cli"), "--num_images", "7", "--seed", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 7 and result["train"] + result["dev"] + result["test"] == 7
    assert result["captions"] == 35
    with pytest.raises(SystemExit) as exit_code:
        demo_data.main(["--help"])
    assert exit_code.value.code == 0
    help_text = capsys.readouterr().out
    assert all(flag in help_text for flag in ("OUT_DIR", "--num_images", "--seed", "byte-identical"))


def test_writes_to_gcs(gcs_folder):
    from captioner import storage
    result = demo_data.generate(gcs_folder, num_images=3, seed=0)
    assert result["paths"]["captions"] == f"{gcs_folder}/captions.txt"
    assert [os.path.basename(p) for p in storage.match(f"{gcs_folder}/images/*")] == ["0000.jpg", "0001.jpg", "0002.jpg"]
    assert len(caption_files.read_captions(result["paths"]["captions"])) == 3
