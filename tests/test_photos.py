"""Captioning a few photos from Python and the shell: the same captions as the caption job."""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
from PIL import Image

from captioner import bundle, caption, cli
from captioner.decoder.decoding import Decoding
from pipelines import caption_and_score
from tests.test_captioning import trained_demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return trained_demo(tmp_path_factory, "photos", 40)


def test_the_api_the_command_and_the_caption_job_give_the_same_captions(demo, tmp_path, capsys):
    data, export = demo
    paths = sorted(glob.glob(os.path.join(data, "images", "*.jpg")))[:12]
    captioner = bundle.Captioner.load(export)
    decoding = Decoding(beam_size=2, length_penalty=0.0, max_length=12)
    from_files = captioner.caption_files(paths, decoding)
    assert [r.path for r in from_files] == paths and all(r.ok for r in from_files)
    opened = [Image.open(path) for path in paths]
    assert [r.caption for r in captioner.caption_pil(opened, decoding)] == [r.caption for r in from_files]
    assert [r.caption for r in captioner.caption_arrays([np.asarray(i) for i in opened], decoding)] == \
        [r.caption for r in from_files]

    listing = tmp_path / "listing.txt"
    listing.write_text("\n".join(paths) + "\n")
    caption_and_score.run(["--config", "local", "--set", "caption.meteor=false", "--model", export, "--image_list",
                           str(listing), "--beam_size", "2", "--length_penalty", "0", "--max_length", "12",
                           "--output", str(tmp_path / "job"), "--runner=FnApiRunner"])
    rows = [json.loads(line) for path in sorted(glob.glob(str(tmp_path / "job" / "captions-*.jsonl")))
            for line in open(path)]
    assert {row["path"]: row["caption"] for row in rows} == {r.path: r.caption for r in from_files}

    capsys.readouterr()
    assert cli.run(caption.main, ["--model", export, "--beam_size", "2", "--length_penalty", "0", "--max_length",
                                  "12", *paths]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{r.path}\t{r.caption}" for r in from_files]


def test_unreadable_files_are_named_in_their_place_and_the_rest_captioned(demo, tmp_path, capsys):
    data, export = demo
    good = sorted(glob.glob(os.path.join(data, "images", "*.jpg")))[:2]
    not_image, missing = tmp_path / "notes.jpg", str(tmp_path / "gone.jpg")
    not_image.write_text("not a picture")
    code = cli.run(caption.main, ["--model", export, "--json", good[0], str(not_image), missing, good[1]])
    said = capsys.readouterr()
    assert code == 1
    assert [json.loads(line)["path"] for line in said.out.splitlines()] == good
    assert said.err.splitlines() == [f"{not_image}: not captioned: not an image (unknown format)",
                                     f"{missing}: not captioned: {missing} does not exist; check the path (local, "
                                     "or gs://bucket/...)"]


def test_images_of_any_size_and_mode_are_fitted_to_the_encoder(demo):
    _, export = demo
    captioner = bundle.Captioner.load(export)
    rng = np.random.default_rng(0)
    results = captioner.caption_arrays([rng.integers(0, 255, (300, 500, 3)), rng.integers(0, 255, (40, 30))])
    results += captioner.caption_pil([Image.new("RGBA", (123, 77), (255, 0, 0, 128)), Image.new("L", (9, 9))])
    assert len(results) == 4 and all(r.ok and r.caption and np.isfinite(r.log_prob) for r in results)


def test_annotate_writes_each_picture_with_its_caption_under_it_and_leaves_the_originals(demo, tmp_path, capsys):
    data, export = demo
    paths = sorted(glob.glob(os.path.join(data, "images", "*.jpg")))[:2]
    before = [open(path, "rb").read() for path in paths]
    pictures = tmp_path / "pictures"
    assert cli.run(caption.main, ["--model", export, "--annotate", str(pictures), *paths]) == 0
    assert "2 captioned pictures in" in capsys.readouterr().err
    assert [open(path, "rb").read() for path in paths] == before
    for path in paths:
        with Image.open(path) as original, Image.open(pictures / os.path.basename(path)) as annotated:
            assert annotated.width == max(original.width, 320) and annotated.height > original.height + 30
            band = np.asarray(annotated.convert("L"))[original.height:]
            assert (band < 128).any() and (band > 250).mean() > 0.5  # dark text on a white band


def test_top_lists_the_beams_best_first_and_is_refused_where_it_cannot_work(demo, capsys):
    data, export = demo
    paths = sorted(glob.glob(os.path.join(data, "images", "*.jpg")))[:3]
    assert cli.run(caption.main, ["--model", export, "--json", "--beam_size", "3", "--length_penalty", "0",
                                  "--max_length", "16", "--top", "3", *paths]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    best = bundle.Captioner.load(export).caption_files(paths, Decoding(3, 0.0, 16))
    assert [line["caption"] for line in lines] == [r.caption for r in best]
    for line in lines:
        top = line["top"]
        assert len(top) == 3 and top[0] == {"caption": line["caption"], "log_prob": line["log_prob"]}
        assert len({entry["caption"] for entry in top}) == 3
        assert [entry["log_prob"] for entry in top] == sorted((entry["log_prob"] for entry in top), reverse=True)
    assert cli.run(caption.main, ["--model", export, "--top", "2", paths[0]]) == 2
    assert "--top 2 lists the alternatives in JSON lines: add --json" in capsys.readouterr().err
    assert cli.run(caption.main, ["--model", export, "--json", "--beam_size", "2", "--top", "3", paths[0]]) == 2
    assert "--top 3 needs a beam at least 3 wide (this one is 2): add --beam_size 3" in capsys.readouterr().err
