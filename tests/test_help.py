"""Every entry point's --help names every flag it declares and what it writes, all read in this one process."""
import importlib
import os
import re

import pytest

from captioner import layout
from tests.conftest import PROJECT_ROOT

# module -> (its source, what its --help must name: the files or lines it writes)
ENTRY_POINTS = {
    "pipelines.extract_features": ("pipelines/extract_features.py", [
        "records-*.tfrecord", layout.MANIFEST_FILE, layout.VOCABULARY_FILE, layout.WORD_COUNTS_FILE,
        f"{layout.DEAD_LETTER_PREFIX}-*.jsonl"]),
    "pipelines.caption_and_score": ("pipelines/caption_and_score.py", [
        f"{layout.CAPTIONS_PREFIX}-*.jsonl", layout.METRICS_JSON, layout.BLEU_JSON,
        f"{layout.COCO_RESULTS_PREFIX}-*.json", layout.REPORT_HTML, f"{layout.DEAD_LETTER_PREFIX}-*.jsonl"]),
    "trainer.task": ("trainer/task.py", [
        f"{layout.EXPORT_DIR}/", layout.MODEL_FILE, layout.BUNDLE_FILE, layout.EVAL_FILE, layout.EVAL_CAPTIONS_FILE,
        layout.SUMMARY_FILE, "history.json"]),
    "trainer.local_cluster": ("trainer/local_cluster.py", ["worker-<i>.log"]),
    "captioner.caption": ("captioner/caption.py", ["path<TAB>caption", "JSON lines"]),
    "captioner.config": ("captioner/config/__main__.py", ["every key, its value, default and doc"]),
    "tools.demo_data": ("tools/demo_data.py", ["images/", "captions.txt", "Flickr_8k.*Images.txt"]),
    "captioner.encoders.from_tflite": ("captioner/encoders/from_tflite.py", [".keras"]),
    "tools.end_to_end": ("tools/end_to_end.py", ["features/", "job/", "captions/", "results.md"]),
    "tools.screenshot_gallery": ("tools/screenshot_gallery.py", ["PNG"]),
}


def _declared_flags(path: str) -> set:
    source = open(os.path.join(PROJECT_ROOT, path), encoding="utf-8").read()
    if "add_config_flags" in source:
        source += open(os.path.join(PROJECT_ROOT, "captioner/config/files.py"), encoding="utf-8").read()
    return set(re.findall(r'add_argument\(\s*"(--[a-z_]+)"', source)) - {"--_measure", "--_encoder", "--_count"}


def _help(path: str) -> str:
    """The --help text, unwrapped, of the module in `path` (a package's __main__ imports without running)."""
    module = importlib.import_module(path[:-3].replace("/", "."))
    return " ".join(module.build_parser().format_help().split())


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_help_names_every_flag_and_what_the_command_writes(module):
    path, writes = ENTRY_POINTS[module]
    said = _help(path)
    flags = _declared_flags(path)
    assert flags, f"found no flags declared in {path}"
    assert not sorted(flag for flag in flags if flag not in said), f"{module} --help misses flags"
    assert not [name for name in writes if name not in said], f"{module} --help does not name what it writes"


def test_every_python_m_entry_point_is_checked():
    """A module run with `python -m` (it calls main under __main__) has a row above."""
    found = set()
    for package in ("captioner", "pipelines", "trainer", "tools"):
        for folder, _, names in os.walk(os.path.join(PROJECT_ROOT, package)):
            for name in names:
                path = os.path.join(folder, name)
                if name.endswith(".py") and 'if __name__ == "__main__":' in open(path, encoding="utf-8").read():
                    module = os.path.relpath(path, PROJECT_ROOT)[:-3].replace(os.sep, ".")
                    found.add(module.removesuffix(".__main__"))
    assert found == set(ENTRY_POINTS)
