"""The wheel and the sdist that Dataflow workers and the images install hold every module and shipped config."""
from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("captioner", "pipelines", "trainer", "configs")

pytestmark = pytest.mark.slow  # builds the packages


def _ignore_local_state(directory, names):
    relative = os.path.relpath(directory, ROOT).replace(os.sep, "/")
    dropped = {".git", ".venv", "build", "dist", ".pytest_cache", "__pycache__", "runs"} if relative == "." else {"__pycache__"}
    if relative == "bench":
        dropped.add("out")
    return [n for n in names if n in dropped or n.endswith(".egg-info") or n.endswith(".pyc")]


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory):
    """The project as a build context sees it, without build/ or egg-info left over from local installs.

    The wheel and the sdist are built from this snapshot and compared with it, so files that appear in the
    working tree while the test runs cannot make it flaky.
    """
    source = tmp_path_factory.mktemp("project") / "src"
    shutil.copytree(ROOT, source, ignore=_ignore_local_state)
    return str(source)


def _cpu_env() -> dict:
    env = dict(os.environ)
    env.pop("CAPTIONER_GPU", None)
    return env


def _run(command, cwd, env=None, timeout=120):
    result = subprocess.run(command, cwd=cwd, env=env or _cpu_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _can_build_wheel_offline() -> bool:
    import setuptools
    version = tuple(int(x) for x in re.findall(r"\d+", setuptools.__version__)[:2])
    return version >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _repo_files(root: str) -> set:
    """Every .py file of the packages and every shipped config under `root`, as paths inside the package tree."""
    files = set()
    for package in PACKAGES:
        for directory, subdirectories, names in os.walk(os.path.join(root, package)):
            subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
            for name in names:
                if name.endswith(".py"):
                    files.add(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/"))
    files |= {os.path.relpath(p, root).replace(os.sep, "/") for p in glob.glob(os.path.join(root, "configs", "*.yaml"))}
    assert {"captioner/__init__.py", "configs/local.yaml"} <= files
    return files


@pytest.fixture(scope="module")
def wheel_names(source_copy, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("wheel"))
    # Without `wheel` (setuptools < 70.1) pip builds in an isolated environment fetched from the index.
    no_isolation = ["--no-build-isolation"] if _can_build_wheel_offline() else []
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *no_isolation, "-w", out, source_copy],
         cwd=source_copy)
    wheels = glob.glob(os.path.join(out, "*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        scripts = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    return names, metadata + scripts


@pytest.fixture(scope="module")
def sdist_names(source_copy, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sdist"))
    _run([sys.executable, "setup.py", "-q", "sdist", "-d", out], cwd=source_copy)
    archives = glob.glob(os.path.join(out, "*.tar.gz"))
    assert len(archives) == 1, archives
    with tarfile.open(archives[0]) as archive:
        names = archive.getnames()
    root = names[0].split("/", 1)[0]
    return {name[len(root) + 1:] for name in names if name.startswith(root + "/")}


def test_wheel_ships_every_module_and_config(wheel_names, source_copy):
    names, metadata = wheel_names
    missing = sorted(_repo_files(source_copy) - names)
    assert not missing, f"the wheel lacks files that are in the repo: {missing}"
    assert not any(n.startswith("tests/") for n in names), "tests leaked into the wheel"
    requirements = re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)
    core = [r for r in requirements if "extra ==" not in r]
    assert any(r.startswith("tensorflow-cpu") for r in core), core
    assert not any(r.startswith("tensorflow[") or r.startswith("tensorflow ") or r.startswith("tensorflow=")
                   for r in core), f"CPU wheel must not also require the CUDA TensorFlow: {core}"


def test_sdist_ships_every_module_and_config(sdist_names, source_copy):
    missing = sorted((_repo_files(source_copy) | {"setup.py"}) - sdist_names)
    assert not missing, f"the sdist (what --setup_file stages for Dataflow workers) lacks: {missing}"


def test_gpu_build_requires_only_cuda_tensorflow(source_copy, tmp_path):
    env = dict(_cpu_env(), CAPTIONER_GPU="1")
    _run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)], cwd=source_copy, env=env)
    requires = (next(tmp_path.glob("*.egg-info")) / "requires.txt").read_text()
    core = requires.split("\n[", 1)[0].split()
    assert any(r.startswith("tensorflow[and-cuda]") for r in core), core
    assert not any(r.startswith("tensorflow-cpu") for r in core), f"GPU build would install both TensorFlows: {core}"


def test_console_scripts_run_the_python_m_entry_points(wheel_names, source_copy):
    _, metadata = wheel_names
    scripts = dict(re.findall(r"^(captioner-[\w-]+) = ([\w.]+):command$", metadata, re.M))
    assert scripts == {"captioner-extract": "pipelines.extract_features", "captioner-train": "trainer.task",
                       "captioner-caption-and-score": "pipelines.caption_and_score",
                       "captioner-caption": "captioner.caption"}
    for module in scripts.values():
        with open(os.path.join(source_copy, *module.split(".")) + ".py") as handle:
            source = handle.read()
        assert "command = cli.command(main)" in source and 'command()' in source.split('if __name__ == "__main__":')[1]
