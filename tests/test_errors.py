"""Every user mistake gets one line on stderr (`error: ...; what to do`), the right exit code and no traceback.

Most cases run the entry points' `main` in-process through `cli.run`, exactly what `python -m` runs; a few
run real processes to show the exit codes and stderr a shell sees.
"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from captioner import cli, storage
from captioner.config import __main__ as config_cli
from pipelines import caption_and_score, extract_features
from tests.conftest import LEGACY_EXPORT, PROJECT_ROOT
from tests.synthetic_features import write_synthetic_features
from tools import demo_data
from trainer import task


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("errors")
    demo_data.generate(str(folder / "data"), num_images=12)
    return folder


def _fails(main, argv, capsys, code: int, *named: str) -> str:
    """Runs an entry point; asserts the exit code, one `error:` line naming `named`, and no traceback."""
    try:
        got = cli.run(main, argv)
    except SystemExit as exit_:  # argparse's own usage errors
        got = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert got == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for name in named:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def _extract(demo, *flags):
    return ["--images", str(demo / "data" / "images" / "*"), "--output", str(demo / "out"),
            "--runner=FnApiRunner", *flags]


@pytest.mark.parametrize("flags, code, named", [
    (["--encoder-threads", "1"], 2, ["--encoder-threads", "did you mean --encoder_threads?"]),
    (["--encoder_thread", "1"], 2, ["--encoder_thread", "did you mean --encoder_threads?"]),
    (["--runer", "DirectRunner"], 2, ["--runer", "did you mean --runner?"]),
    (["stray"], 2, ["'stray'"]),
    (["--set", "train.epoch=3"], 2, ["train.epoch", "did you mean train.epochs?"]),
    (["--set", "extract.batch_size=0"], 2, ["extract.batch_size=0", "an integer >= 1"]),
    (["--config", "nowhere.yaml"], 2, ["nowhere.yaml", "shipped config"]),
    (["--encoder", "resnet9000"], 2, ["resnet9000", "unknown encoder"]),
    (["--captions", "missing.txt"], 1, ["missing.txt"]),
    (["--splits", "/"], 1, ["Flickr_8k.trainImages.txt"]),
    (["--encoder_threads", "0"], 2, ["--encoder_threads 0"]),
    (["--runner", "DirectRuner"], 2, ["--runner DirectRuner", "did you mean DirectRunner?"]),
    (["--output", ""], 2, ["--output is empty"]),  # would write into the current folder
    (["--images", ""], 2, ["--images is empty"]),
])
def test_extraction_mistakes(demo, capsys, flags, code, named):
    _fails(extract_features.main, _extract(demo, *flags), capsys, code, *named)


def test_extraction_input_files_and_outputs(demo, capsys, tmp_path):
    _fails(extract_features.main, ["--images", str(tmp_path / "none" / "*.jpg"), "--output", str(tmp_path / "o")],
           capsys, 1, "none/*.jpg", "matches no file")
    _fails(extract_features.main, ["--output", str(tmp_path / "o")], capsys, 2, "--images")
    shown = sorted(str(path) for path in (demo / "data" / "images").iterdir())[:3]  # what an unquoted glob gives
    _fails(extract_features.main, ["--images", *shown, "--output", str(tmp_path / "o")], capsys, 2,
           "did the shell expand an unquoted pattern? Quote it")
    _fails(extract_features.main, ["--images", str(tmp_path / "data[1]" / "*.jpg"), "--output", str(tmp_path / "o")],
           capsys, 1, "'[' and ']' are glob characters", "'[[]'")
    _fails(extract_features.main, ["--images", "~/no-such-photos/*.jpg", "--output", str(tmp_path / "o")],
           capsys, 1, "'~' is not expanded inside quotes", os.path.expanduser("~"))
    _fails(extract_features.main, ["--images", str(demo / "data" / "images"), "--output", str(tmp_path / "o")],
           capsys, 1, "is a folder", "images/*")
    _fails(extract_features.main, _extract(demo, "--splits", str(demo / "data" / "Flickr_8k.testImages.txt")),
           capsys, 1, "is a split list", "the folder")
    for name, content, said in (("empty.txt", "", "is empty"), ("bom_only.txt", "\ufeff\n", "is empty"),
                                ("words.txt", "just some words\n", "neither a Flickr8k token line")):
        (tmp_path / name).write_text(content, encoding="utf-8")
        _fails(extract_features.main, _extract(demo, "--captions", str(tmp_path / name)), capsys, 1, name, said)
    (tmp_path / "a_file").write_text("")
    _fails(extract_features.main, ["--images", str(demo / "data" / "images" / "*"), "--output",
                                   str(tmp_path / "a_file" / "out")], capsys, 1, "a_file/out", "not writable")
    _fails(extract_features.main, _extract(demo, "--skip_existing", str(demo / "out")), capsys, 2, "same folder")
    (tmp_path / "latin1.txt").write_bytes("x.jpg#0\tun caf\xe9\n".encode("latin-1"))
    _fails(extract_features.main, _extract(demo, "--captions", str(tmp_path / "latin1.txt")), capsys, 1,
           "latin1.txt is not UTF-8 text", "save it as UTF-8")
    (tmp_path / "cut.json").write_text('{"images": [{"id": 1, "file_name": "a.jpg"}')
    _fails(extract_features.main, _extract(demo, "--captions", str(tmp_path / "cut.json")), capsys, 1,
           "cut.json is not one JSON document", "copied whole")
    listing = tmp_path / "with_captions.csv"
    listing.write_text("path,caption\na.jpg,a dog\n")
    _fails(extract_features.main, ["--image_list", str(listing), "--captions", str(demo / "data" / "captions.txt"),
                                   "--output", str(tmp_path / "o2")], capsys, 2, "--image_list", "--captions")


@pytest.mark.slow
def test_a_finished_extraction_is_not_overwritten_without_asking(demo, capsys):
    assert cli.run(extract_features.main, _extract(demo)) == 0
    capsys.readouterr()
    _fails(extract_features.main, _extract(demo), capsys, 1, str(demo / "out"), "--overwrite")
    assert cli.run(extract_features.main, _extract(demo, "--overwrite")) == 0


def test_caption_job_mistakes(demo, capsys, tmp_path):
    images = ["--images", str(demo / "data" / "images" / "*")]
    empty, other_header = tmp_path / "empty.csv", tmp_path / "other_header.csv"
    empty.write_text("\n\n")
    other_header.write_text("file,text\na.jpg,a dog\n")
    caption_rows = tmp_path / "captions-00000-of-00001.jsonl"
    caption_rows.write_text('{"caption": "a dog", "image_id": "a.jpg", "path": "/photos/a.jpg"}\n')
    cases = [
        (["--model", str(tmp_path), *images], 1, [str(tmp_path), "bundle.json", "export/ folder"]),
        (["--model", os.path.dirname(LEGACY_EXPORT), *images], 1, ["did you mean", LEGACY_EXPORT]),
        (["--model", LEGACY_EXPORT, "--features", str(demo / "data"), "--references", "r.txt"], 2,
         ["--references", "--features"]),
        (["--model", LEGACY_EXPORT, "--features", str(demo / "data")], 1, ["manifest.json", "--features"]),
        (["--model", LEGACY_EXPORT, *images, "--threads", "0"], 2, ["--threads 0"]),
        (["--model", LEGACY_EXPORT, *images, "--beam_size", "-1"], 2, ["caption.beam_size=-1", ">= 1"]),
        (["--model", LEGACY_EXPORT, *images, "--max_length", "0"], 2, ["caption.max_length=0"]),
        (["--model", LEGACY_EXPORT, *images, "--skip_existing", str(tmp_path)], 1, [str(tmp_path), "bleu.json"]),
        (["--model", LEGACY_EXPORT, "--images", str(tmp_path / "*.png")], 1, ["*.png", "matches no file"]),
        (["--model", LEGACY_EXPORT, *images, "--split", "dev"], 2, ["--split dev goes with --features"]),
        (["--model", LEGACY_EXPORT, *images, "--beam_size", "100000", "--batch_size", "512"], 2,
         ["caption.beam_size=100000", "GiB per decoding batch", "lower --beam_size or --batch_size"]),
        (["--model", LEGACY_EXPORT, *images, "--length_penalty", "nan"], 2, ["caption.length_penalty=nan",
                                                                            "a finite number"]),
        (["--model", LEGACY_EXPORT, "--image_list", str(empty)], 1, ["--image_list", "is empty"]),
        (["--model", LEGACY_EXPORT, "--image_list", str(other_header)], 1, ["'file,text'", "'path' (or 'uri')"]),
        (["--model", LEGACY_EXPORT, "--retry_dead_letters", str(caption_rows)], 1,
         ["is not a dead-letter file", "reason"]),
        (["--model", LEGACY_EXPORT, *images, "--skip_damaged_shards"], 2, ["--skip_damaged_shards goes with "
                                                                          "--features"]),
    ]
    for flags, code, named in cases:
        _fails(caption_and_score.main, [*flags, "--output", str(tmp_path / "c"), "--runner=FnApiRunner"], capsys,
               code, *named)


def test_features_that_do_not_match_the_model_are_refused_before_the_job(capsys, tmp_path):
    features = str(tmp_path / "features")
    write_synthetic_features(features, num_train=4, num_dev=1, num_test=2)  # a 'synthetic' encoder, not thumbnail
    _fails(caption_and_score.main, ["--model", LEGACY_EXPORT, "--features", features, "--output",
                                    str(tmp_path / "c")], capsys, 1, features, "encoder name='synthetic'")


def test_trainer_mistakes(capsys, tmp_path):
    features = str(tmp_path / "features")
    write_synthetic_features(features, num_train=8, num_dev=2, num_test=2)
    job = ["--features", features, "--job_dir", str(tmp_path / "job"), "--verbose", "0"]
    for flags, code, named in [
        (["--set", "train.epochs=-1"], 2, ["train.epochs=-1", "an integer >= 1"]),
        (["--set", "train.batch_size=0"], 2, ["train.batch_size=0"]),
        (["--set", "train.batch_size=64"], 2, ["fewer than one global batch", "train.batch_size"]),
        (["--devices", "gpu0"], 2, ["--devices", "/gpu:N"]),
        (["--devices", "/gpu:0"], 2, ["--devices /gpu:0", "TensorFlow sees 0"]),
        (["--eval_split", "validation"], 2, ["--eval_split", "validation"]),
        (["--job_dir", os.path.join(features, "job")], 2, ["overlap", "a folder of its own"]),
    ]:
        _fails(task.main, [*job, *flags], capsys, code, *named)
    (tmp_path / "not_features").mkdir()
    _fails(task.main, ["--features", str(tmp_path / "not_features"), "--job_dir", str(tmp_path / "job")], capsys, 1,
           "manifest.json", "--features")


def test_storage_that_does_not_answer_fails_fast_naming_path_and_endpoint(capsys, monkeypatch, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv(storage.EMULATOR_ENV, f"http://127.0.0.1:{port}")
    monkeypatch.setattr(storage, "REACH_SECONDS", 2)
    started = time.time()
    _fails(extract_features.main, ["--images", "gs://somewhere/images/*.jpg", "--output", str(tmp_path / "o")],
           capsys, 1, "gs://somewhere/images/*.jpg", f"127.0.0.1:{port}", storage.EMULATOR_ENV)
    assert time.time() - started < 20


def test_a_bucket_that_does_not_exist_is_named(gcs_emulator, capsys, tmp_path):
    _fails(extract_features.main, ["--images", "gs://no-such-bucket-here/images/*.jpg", "--output",
                                   str(tmp_path / "o")], capsys, 1, "gs://no-such-bucket-here", "does not exist")


def test_imagenet_weights_without_network_say_how_to_pass_a_file(demo, capsys, monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: [Errno -2] Name or service not known")
    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    _fails(extract_features.main, _extract(demo, "--encoder", "mobilenet_v2", "--weights", "imagenet"), capsys, 1,
           "could not download the ImageNet weights of 'mobilenet_v2'", "--weights PATH.h5")


def test_other_entry_points(capsys, tmp_path):
    _fails(demo_data.main, [str(tmp_path / "d"), "--num_images", "0"], capsys, 2, "--num_images 0")
    (tmp_path / "a_file").write_text("")
    _fails(task.main, ["--features", str(tmp_path), "--job_dir", str(tmp_path / "a_file")], capsys, 1,
           "--job_dir", "is a file, not a folder")
    from trainer import local_cluster
    _fails(local_cluster.main, ["--features", "f", "--", "--job_dir", "j"], capsys, 2, "--features",
           "the trainer's flags go after --")
    _fails(local_cluster.main, ["--log_dir", str(tmp_path / "a_file"), "--", "--features", "f"], capsys, 1,
           "--log_dir", "is a file, not a folder")
    assert config_cli.main(["--set", "caption.beam=3"]) == 2
    assert "did you mean caption.beam_size?" in capsys.readouterr().err


def test_debug_shows_the_traceback(demo, capsys):
    with pytest.raises(Exception, match="did you mean --encoder_threads"):
        cli.run(extract_features.main, _extract(demo, "--encoder-threads", "2", "--debug"))


@pytest.mark.slow
def test_real_processes_print_one_line_and_exit_with_the_code(demo, tmp_path):
    cases = [
        (["pipelines.extract_features", *_extract(demo, "--encoder-threads", "2")], 2,
         "did you mean --encoder_threads?"),
        (["trainer.task", "--features", str(tmp_path / "f"), "--job_dir", str(tmp_path / "j")], 1, "manifest.json"),
        (["pipelines.caption_and_score", "--model", str(tmp_path), "--images", "x", "--output", "o"], 1,
         "bundle.json"),
    ]
    for args, code, said in cases:
        done = subprocess.run([sys.executable, "-m", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        assert done.returncode == code, done.stderr[-2000:]
        assert "Traceback" not in done.stderr and said in done.stderr.splitlines()[-1], done.stderr[-2000:]


@pytest.mark.slow
def test_an_unreachable_endpoint_fails_within_a_minute_in_a_real_process(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "pipelines.caption_and_score", "--model", "gs://b/job/export",
                           "--images", "gs://b/images/*", "--output", str(tmp_path / "o")], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{port}"))
    assert done.returncode == 1 and time.time() - started < 60, done.stderr[-2000:]
    assert "cannot reach the storage endpoint" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_job_dir_of_another_job_is_refused_and_overwrite_starts_it_again(capsys, tmp_path):
    features = str(tmp_path / "features")
    write_synthetic_features(features, num_train=24, num_dev=4, num_test=4)
    base = ["--features", features, "--job_dir", str(tmp_path / "job"), "--verbose", "0", "--eval_split", "none",
            "--set", "train.epochs=1", "--set", "train.units=16", "--set", "train.batch_size=8",
            "--set", "train.max_length=12"]
    assert cli.run(task.main, base) == 0
    capsys.readouterr()
    _fails(task.main, [*base, "--set", "train.units=32"], capsys, 1, "train.units=16", "--overwrite")
    assert cli.run(task.main, [*base, "--set", "train.units=32", "--overwrite"]) == 0
    with open(tmp_path / "job" / "job.json") as handle:
        assert json.load(handle)["train"]["units"] == 32
    assert cli.run(task.main, [*base, "--set", "train.units=32", "--set", "train.epochs=2"]) == 0  # extends it
    with open(tmp_path / "job" / "history.json") as handle:
        history = json.load(handle)
    assert [e["epoch"] for e in history["epochs"]] == [1, 2] and [r["initial_epoch"] for r in history["runs"]] == [0, 1]
    assert cli.run(task.main, [*base, "--set", "train.units=32", "--set", "train.epochs=2"]) == 0  # finished
    with open(tmp_path / "job" / "history.json") as handle:
        assert json.load(handle) == history  # the record of the earlier runs is kept, nothing retrained


@pytest.mark.slow
def test_real_input_that_gives_nothing_is_not_a_success(demo, capsys, tmp_path):
    """Exit 0 only for what was asked: an include list naming none of the images, a split with no records,
    only unreadable images all fail; an incremental run with nothing new is the one empty success."""
    include = tmp_path / "include.txt"
    include.write_text("not_one_of_them.jpg\n")
    out = str(tmp_path / "captions")
    _fails(caption_and_score.main, ["--model", LEGACY_EXPORT, "--images", str(demo / "data" / "images" / "*"),
                                    "--include", str(include), "--output", out, "--runner=FnApiRunner"],
           capsys, 1, "--include", "names none of the 12 images")
    features = str(tmp_path / "features")
    write_synthetic_features(features, num_train=4, num_dev=1, num_test=2, encoder="thumbnail")
    _fails(caption_and_score.main, ["--model", LEGACY_EXPORT, "--features", features, "--split", "unsplit",
                                    "--output", str(tmp_path / "c2")], capsys, 1, "holds no unsplit records")
    (tmp_path / "broken").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "broken" / name).write_bytes(b"not an image at all")
    _fails(extract_features.main, ["--images", str(tmp_path / "broken" / "*.jpg"), "--output",
                                   str(tmp_path / "x"), "--runner=FnApiRunner"], capsys, 1,
           "none of the 2 images could be extracted", "dead_letter-*.jsonl")
    no_words = str(tmp_path / "no_words")
    _fails(extract_features.main, ["--images", str(demo / "data" / "images" / "*"), "--captions",
                                   str(demo / "data" / "captions.txt"), "--splits", str(demo / "data"), "--set",
                                   "extract.min_word_count=100000", "--output", no_words, "--runner=FnApiRunner"],
           capsys, 1, "extract.min_word_count=100000", "empty")
    _fails(task.main, ["--features", no_words, "--job_dir", str(tmp_path / "job")], capsys, 1,
           "empty vocabulary", "extract.min_word_count")
    first = ["--model", LEGACY_EXPORT, "--images", str(demo / "data" / "images" / "*"), "--runner=FnApiRunner"]
    assert cli.run(caption_and_score.main, [*first, "--output", str(tmp_path / "all")]) == 0
    capsys.readouterr()
    assert cli.run(caption_and_score.main, [*first, "--skip_existing", str(tmp_path / "all"), "--output",
                                            str(tmp_path / "none_new")]) == 0
    assert "warning: nothing new to caption: all 12 images are already in the --skip_existing outputs" in \
        capsys.readouterr().out


@pytest.mark.slow
def test_overwrite_deletes_only_what_the_finished_run_listed(demo, capsys, tmp_path):
    """A user's file that happens to be named like an output shard survives a run and an --overwrite."""
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "captions-00000-of-00005.jsonl"
    mine.write_text("my own file\n")
    args = ["--model", LEGACY_EXPORT, "--images", str(demo / "data" / "images" / "*"), "--output", str(out),
            "--runner=FnApiRunner"]
    assert cli.run(caption_and_score.main, args) == 0
    with open(out / "bleu.json") as handle:
        first = [out / name for name in json.load(handle)["files"]["captions_jsonl"]]
    assert mine.read_text() == "my own file\n" and all(path.exists() for path in first)
    # another shard count: the first run's shards, which its bleu.json listed, go; the user's file stays
    assert cli.run(caption_and_score.main, [*args, "--overwrite", "--set", "caption.num_shards=2"]) == 0
    assert mine.read_text() == "my own file\n" and not any(path.exists() for path in first if "-of-00002" not in
                                                            path.name)
    features = tmp_path / "features"
    stray = features / "train" / "records-00000-of-00009.tfrecord"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"someone else's")
    assert cli.run(extract_features.main, _extract(demo)[:2] + ["--output", str(features), "--runner=FnApiRunner"]) == 0
    assert stray.read_bytes() == b"someone else's"
