"""Every entry point's --help names every flag it accepts (read from its own argparse calls)."""
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

ENTRY_POINTS = {
    "pipelines.extract_features": "pipelines/extract_features.py",
    "pipelines.caption_and_score": "pipelines/caption_and_score.py",
    "tools.end_to_end": "tools/end_to_end.py",
    "tools.screenshot_gallery": "tools/screenshot_gallery.py",
    "trainer.task": "trainer/task.py",
    "captioner.demo_data": "captioner/demo_data.py",
    "captioner.config": "captioner/config/__main__.py",
    "captioner.caption": "captioner/caption.py",
}


def _declared_flags(path: str) -> set:
    source = open(os.path.join(PROJECT_ROOT, path), encoding="utf-8").read()
    if "add_config_flags" in source:
        source += open(os.path.join(PROJECT_ROOT, "captioner/config/files.py"), encoding="utf-8").read()
    return set(re.findall(r'add_argument\(\s*"(--[a-z_]+)"', source)) - {"--_measure", "--_encoder", "--_count"}


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_help_lists_every_flag(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    flags = _declared_flags(ENTRY_POINTS[module])
    assert flags, f"found no flags declared in {ENTRY_POINTS[module]}"
    missing = sorted(flag for flag in flags if flag not in result.stdout)
    assert not missing, f"{module} --help does not mention {missing}"
