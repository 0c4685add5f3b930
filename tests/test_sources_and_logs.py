"""Ids and listing lines (captioner.input_files.listings), and what reaches the screen (notices, worker logs)."""
import logging
import os
import subprocess
import sys

import pytest

from captioner import quiet
from captioner.errors import InputError, UsageError
from captioner.input_files import captions, listings
from pipelines import launch
from tests.conftest import PROJECT_ROOT


@pytest.mark.parametrize("pattern, prefix", [
    ("gs://b/photos/**", "gs://b/photos/"), ("gs://b/photos/**/*.jpg", "gs://b/photos/"),
    ("data/images/*.jpg", "data/images/"), ("*.jpg", ""), ("/x/y/img_[0-9].png", "/x/y/"),
    ("/x/y/one.jpg", "/x/y/")])
def test_the_fixed_prefix_of_a_glob(pattern, prefix):
    assert listings.fixed_prefix(pattern) == prefix


def test_ids_are_paths_below_the_prefix():
    assert listings.relative_id("gs://b/photos/2019/IMG_1.jpg", "gs://b/photos/") == "2019/IMG_1.jpg"
    assert listings.relative_id("gs://c/other/IMG_1.jpg", "gs://b/photos/") == "IMG_1.jpg"
    assert listings.relative_id("images/a/b.jpg", "images/") == "a/b.jpg"
    assert listings.relative_id(os.path.abspath("images/a.jpg"), "images/") == "a.jpg"
    assert listings.join_key("2019/IMG_1.jpg", "gs://b/photos/2019/IMG_1.jpg", listings.BY_NAME) == "IMG_1.jpg"
    assert listings.join_key("2019/IMG_1.jpg", "gs://b/photos/2019/IMG_1.jpg", listings.BY_ID) == "2019/IMG_1.jpg"
    assert listings.key_scheme("2019/IMG_1.jpg") == listings.BY_ID
    assert listings.key_scheme("IMG_1.jpg") == listings.BY_NAME


def test_listing_lines_of_each_format():
    assert listings.listing_format("\ufeffpath,caption\n") == (listings.CSV_LIST, ["path", "caption"])
    assert listings.listing_format('{"path": "a.jpg"}\n')[0] == listings.JSONL_LIST
    assert listings.listing_format("photos/a.jpg\n")[0] == listings.TEXT_LIST
    parse = listings.parse_listing_line
    assert parse("./sub/../a.jpg\r\n", listings.TEXT_LIST, [], "/lists", "l.txt") == ("a.jpg", "/lists/a.jpg", [])
    assert parse("gs://b/a.jpg", listings.TEXT_LIST, [], "gs://b/lists", "l.txt") == ("gs://b/a.jpg", "gs://b/a.jpg", [])
    assert parse('"a, b.jpg",A dog.', listings.CSV_LIST, ["path", "caption"], "", "l.csv") == \
        ("a, b.jpg", "a, b.jpg", ["A dog."])
    assert parse("path,caption", listings.CSV_LIST, ["path", "caption"], "", "l.csv") is None
    assert parse('{"uri": "x.jpg", "captions": ["a", "b"]}', listings.JSONL_LIST, [], "", "l.jsonl") == \
        ("x.jpg", "x.jpg", ["a", "b"])
    assert parse("   ", listings.TEXT_LIST, [], "", "l.txt") is None
    for line, fmt in (("[1, 2]", listings.JSONL_LIST), ("{bad", listings.JSONL_LIST),
                      (",only a caption", listings.CSV_LIST)):
        with pytest.raises(InputError, match="l.x"):
            parse(line, fmt, ["path", "caption"], "", "l.x")


def _record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, (), None)


def test_beam_notices_are_dropped_and_worker_lines_are_plain():
    keep = launch.QuietBeam().filter
    assert not keep(_record("apache_beam.options.pipeline_options", logging.WARNING,
                            "Discarding unparseable args: ['--x']"))
    worker = launch.WORKER_LOGGER
    benign = ('Worker: severity: WARN timestamp {   seconds: 1 } message: "Resource module is not available for '
              'current platform, memory usage cannot be fetched." log_location: "/x/apache_beam/ml/base.py:2201"')
    assert not keep(_record(worker, logging.WARNING, benign))
    beam_info = 'Worker: severity: INFO message: "Creating state cache" log_location: "/x/apache_beam/runners/w.py:1"'
    assert not keep(_record(worker, logging.INFO, beam_info))
    own = _record(worker, logging.INFO, 'Worker: severity: INFO message: "caption: 200 images captioned in this '
                                        'worker (caf\\303\\251 \\"q\\")" log_location: "/w/pipelines/progress.py:42"')
    assert keep(own) and own.getMessage() == 'worker: caption: 200 images captioned in this worker (café "q")'
    error = _record(worker, logging.ERROR, 'Worker: severity: ERROR message: "Traceback: boom" log_location: '
                                           '"/x/apache_beam/runners/worker/sdk_worker.py:1"')
    assert keep(error) and error.getMessage() == "worker: Traceback: boom"  # real errors still show
    ctrl_c = ('Worker: severity: CRITICAL message: "Python sdk harness failed: \\nTraceback (most recent call last):'
              '\\n  File \\"w.py\\", line 1, in run\\nKeyboardInterrupt\\n" log_location: "/x/sdk_worker_main.py:1"')
    assert not keep(_record(worker, logging.CRITICAL, ctrl_c))  # the terminal's Ctrl-C: the launcher says it
    assert keep(_record("captioner.progress", logging.INFO, "extract: 10 images encoded"))


@pytest.mark.slow
def test_tensorflow_start_up_notices_are_hidden_and_other_stderr_kept():
    code = ("import sys, captioner, tensorflow as tf; "
            "from captioner import quiet\n"
            "with quiet.filtered_stderr():\n"
            "    sys.stderr.write('oneDNN custom operations are on. noise\\nreal problem\\n')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert done.returncode == 0, done.stderr
    assert "real problem" in done.stderr
    assert not quiet.NOTICES.search(done.stderr), done.stderr  # nor the absl / oneDNN lines of `import tensorflow`


def test_both_jobs_take_one_key_scheme_that_caption_and_names_files_agree_on(tmp_path):
    by_name, by_path, names = tmp_path / "by_name.txt", tmp_path / "by_path.txt", tmp_path / "names.txt"
    by_name.write_text("a.jpg#0\tA dog.\n")
    by_path.write_text("2019/a.jpg#0\tA dog.\n")
    names.write_text("\ufeffa.jpg\nb.jpg\n")
    agreed = captions.agreed_key_scheme
    assert agreed(("--references", None), ("--include", None)) == listings.BY_NAME
    assert agreed(("--references", str(by_path)), ("--include", None)) == listings.BY_ID
    assert agreed(("--captions", str(by_name)), ("--splits", str(names))) == listings.BY_NAME
    with pytest.raises(UsageError, match="--references keys images by id but --include by name; use the same keys"):
        agreed(("--references", str(by_path)), ("--include", str(names)))
