"""A file system that fills up under an output: one line, exit 1, no marker, no crash (real tmpfs mounts)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from captioner.layout import BLEU_JSON, MANIFEST_FILE
from tests.conftest import PROJECT_ROOT
from tests.test_interrupts import _caption_flags, _extract_flags, demo  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow
FULL = "file system is full"


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs mounted for one test; skipped, with the reason, where this process cannot mount."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True) if os.geteuid() == 0 else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip("a full file system needs a small tmpfs, and this process cannot mount one (root and "
                    f"CAP_SYS_ADMIN are needed): {mounted.stderr.strip() if mounted else 'not root'}")
    try:
        yield str(mount_point)
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def _said_once(run: subprocess.CompletedProcess, what: str) -> None:
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert run.returncode == 1 and len(errors) == 1 and what in errors[0], run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]


def test_pipelines_on_a_full_disk_say_so_in_one_line_and_mark_nothing_finished(demo, small_disk):  # noqa: F811
    output = os.path.join(small_disk, "captions")
    _said_once(_run("pipelines.caption_and_score", *_caption_flags(demo, output), "--runner=DirectRunner",
                    "--direct_num_workers=2", "--direct_running_mode=multi_processing"), FULL)
    assert not os.path.exists(os.path.join(output, BLEU_JSON))
    features = os.path.join(small_disk, "features")
    _said_once(_run("pipelines.extract_features", *_extract_flags(demo, features), "--runner=FnApiRunner"), FULL)
    assert not os.path.exists(os.path.join(features, MANIFEST_FILE))


def test_the_trainer_stops_before_checkpoints_that_cannot_fit(demo, small_disk):  # noqa: F811
    data, export = demo
    features = os.path.join(os.path.dirname(os.path.dirname(export)), "features")
    job_dir = os.path.join(small_disk, "job")
    _said_once(_run("trainer.task", "--config", "local", "--features", features, "--job_dir", job_dir), "MiB free")
    assert not os.path.exists(os.path.join(job_dir, "export"))
