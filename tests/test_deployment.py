"""The deployment files hold together, checked without the cloud and without Docker.

cloudbuild.yaml (step ids, waitFor, substitutions, the files and images it names), the Dockerfiles
(COPY sources, `pip check`, entry points, the Beam version against setup.py) and .dockerignore. The Flex
Template metadata: test_templates.py; the wheel and the sdist: test_packaging.py.
"""
from __future__ import annotations

import fnmatch
import glob
import json
import os
import re
import shlex

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("captioner", "pipelines", "trainer", "configs")
DOCKERFILES = ("docker/trainer.Dockerfile", "docker/beam.Dockerfile")
CI_SCRIPT = ".ci/run"
TEMPLATES = ("templates/extract_features.metadata.json", "templates/caption_and_score.metadata.json")


def _path(relative: str) -> str:
    return os.path.join(ROOT, relative)


def _read(relative: str) -> str:
    with open(_path(relative), encoding="utf-8") as handle:
        return handle.read()


def _require(relative: str) -> str:
    """The file's text; a missing file fails the test, naming it."""
    assert os.path.isfile(_path(relative)), f"{relative} does not exist, but the deployment files name it"
    return _read(relative)


# ---------------------------------------------------------------------------------------------- cloudbuild.yaml

@pytest.fixture(scope="module")
def cloudbuild() -> dict:
    build = yaml.safe_load(_read("cloudbuild.yaml"))
    assert isinstance(build, dict) and build.get("steps"), "cloudbuild.yaml has no steps"
    return build


def _step_strings(step: dict) -> list:
    strings = list(step.get("args") or []) + [step.get("entrypoint") or "", step.get("script") or ""]
    return [s for s in strings if isinstance(s, str)]


def test_every_step_has_a_unique_id(cloudbuild):
    ids = [step.get("id") for step in cloudbuild["steps"]]
    assert all(ids), f"steps without an id: {[s.get('name') for s in cloudbuild['steps'] if not s.get('id')]}"
    assert len(ids) == len(set(ids)), f"duplicate step ids: {ids}"


def test_wait_for_names_earlier_steps(cloudbuild):
    seen = set()
    for step in cloudbuild["steps"]:
        for wanted in step.get("waitFor") or []:
            assert wanted == "-" or wanted in seen, f"step {step['id']} waits for {wanted!r}, not an earlier step id"
        seen.add(step["id"])


def test_substitutions_are_declared_and_used(cloudbuild):
    used_text = json.dumps({"steps": cloudbuild["steps"], "images": cloudbuild.get("images", [])})
    used = set(re.findall(r"\$\{?(_[A-Z0-9_]+)", used_text))
    declared = set(cloudbuild.get("substitutions") or {})
    assert used <= declared, f"substitutions used but not declared: {sorted(used - declared)}"
    assert declared <= used, f"substitutions declared but never used (Cloud Build rejects them): {sorted(declared - used)}"
    assert {"_PROJECT", "_REGION", "_REPOSITORY", "_BUCKET", "_TAG"} <= declared
    if any("${" in str(v) for v in cloudbuild["substitutions"].values()):
        assert (cloudbuild.get("options") or {}).get("dynamicSubstitutions") is True, \
            "a substitution defaults to another one: set options.dynamicSubstitutions: true"


def _referenced_repo_paths(cloudbuild) -> set:
    paths = set()
    for step in cloudbuild["steps"]:
        for text in _step_strings(step):
            for token in shlex.split(text):
                value = token.split("=", 1)[1] if token.startswith("--") and "=" in token else token
                if "$" in value or "://" in value or value.startswith("-"):
                    continue
                if re.fullmatch(r"[\w.-]+(/[\w.-]+)+", value) or value.endswith((".Dockerfile", ".json", ".sh")):
                    paths.add(value)
        if step.get("dir"):
            paths.add(step["dir"])
    return paths


def test_files_named_by_the_build_exist(cloudbuild):
    referenced = _referenced_repo_paths(cloudbuild)
    expected = set(DOCKERFILES) | set(TEMPLATES) | {CI_SCRIPT}
    assert expected <= referenced, f"cloudbuild.yaml does not use {sorted(expected - referenced)}"
    missing = sorted(p for p in referenced - {CI_SCRIPT} if not os.path.exists(_path(p)))
    assert not missing, f"cloudbuild.yaml names files that are not in the repo: {missing}"


def test_ci_script_exists(cloudbuild):
    test_steps = [s for s in cloudbuild["steps"] if any(CI_SCRIPT in t for t in _step_strings(s))]
    assert test_steps and all(s["name"].startswith("python:3.11") for s in test_steps), \
        "the test step should run .ci/run in a python:3.11 image"
    _require(CI_SCRIPT)


def _docker_build_tags(cloudbuild) -> dict:
    """{tag: (step, dockerfile, {build arg: value})} for every `docker build` step."""
    built = {}
    for step in cloudbuild["steps"]:
        args = step.get("args") or []
        if not args or args[0] != "build" or "docker" not in step["name"]:
            continue
        dockerfile = args[args.index("-f") + 1] if "-f" in args else "Dockerfile"
        build_args = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--build-arg")
        for i, arg in enumerate(args):
            if arg in ("-t", "--tag"):
                built[args[i + 1]] = (step, dockerfile, build_args)
    return built


def test_images_are_built_pushed_and_listed(cloudbuild):
    built = _docker_build_tags(cloudbuild)
    pushed = {step["args"][1] for step in cloudbuild["steps"] if (step.get("args") or [None])[0] == "push"}
    images = cloudbuild.get("images") or []
    assert images, "cloudbuild.yaml has no images: list"
    for image in images:
        assert image in built, f"{image} is listed in images: but no docker build step tags it"
        assert image.startswith("${_REGION}-docker.pkg.dev/${_PROJECT}/${_REPOSITORY}/"), image
    assert set(built) <= set(images), f"built but not listed: {sorted(set(built) - set(images))}"
    assert set(built) <= pushed, f"built but never pushed by a step: {sorted(set(built) - pushed)}"
    names = {image.rsplit("/", 1)[1] for image in images}
    assert {"captioner-trainer:${_TAG}", "captioner-beam:${_TAG}"} <= names
    dockerfiles = {dockerfile for _, dockerfile, _ in built.values()}
    assert set(DOCKERFILES) <= dockerfiles
    # A pushed image must be pushed after the tests passed; a template must point at a pushed image.
    waits = {step["id"]: set(step.get("waitFor") or []) for step in cloudbuild["steps"]}
    for step in cloudbuild["steps"]:
        args = step.get("args") or []
        if args[:1] == ["push"]:
            assert "test" in waits[step["id"]], f"{step['id']} pushes without waiting for the tests"
        if args[:3] == ["dataflow", "flex-template", "build"]:
            image = next(a.split("=", 1)[1] for a in args if a.startswith("--image="))
            push_steps = {s["id"] for s in cloudbuild["steps"] if (s.get("args") or [])[:2] == ["push", image]}
            assert push_steps and push_steps <= waits[step["id"]], \
                f"{step['id']} builds a template for {image} before it is pushed"


def test_each_template_is_built_from_its_metadata(cloudbuild):
    template_steps = [s for s in cloudbuild["steps"] if (s.get("args") or [])[:3] == ["dataflow", "flex-template", "build"]]
    metadata = {}
    for step in template_steps:
        args = step["args"]
        assert args[3].startswith("gs://${_BUCKET}/") and args[3].endswith(".json"), args[3]
        assert "--sdk-language=PYTHON" in args
        metadata[next(a.split("=", 1)[1] for a in args if a.startswith("--metadata-file="))] = step
    assert set(metadata) == set(TEMPLATES)


# ------------------------------------------------------------------------------------------------- Dockerfiles

def _instructions(relative: str) -> list:
    """[(INSTRUCTION, arguments)] with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in _read(relative).splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def _copy_sources(arguments: str) -> list:
    if arguments.lstrip().startswith("["):
        parts = json.loads(arguments)
    else:
        parts = [p for p in shlex.split(arguments) if not p.startswith("--")]
    return parts[:-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_copies_existing_files_and_checks_dependencies(dockerfile):
    instructions = _instructions(dockerfile)
    assert instructions and instructions[0][0] in ("FROM", "ARG")
    for instruction, arguments in instructions:
        if instruction in ("COPY", "ADD") and "--from=" not in arguments:
            for source in _copy_sources(arguments):
                assert glob.glob(_path(source)), f"{dockerfile}: COPY source {source!r} is not in the repo"
    runs = " ".join(arguments for instruction, arguments in instructions if instruction == "RUN")
    assert re.search(r"\bpip check\b", runs), f"{dockerfile} never runs `pip check`"
    assert re.search(r"\bpip install\b", runs), f"{dockerfile} never installs the project"


def test_trainer_image_installs_gpu_tensorflow_and_runs_the_trainer():
    instructions = dict((i, a) for i, a in _instructions("docker/trainer.Dockerfile") if i in ("FROM", "ENTRYPOINT"))
    runs = [a for i, a in _instructions("docker/trainer.Dockerfile") if i == "RUN"]
    assert "3.11" in instructions["FROM"]
    assert any("CAPTIONER_GPU=1" in run and ".[gpu]" in run for run in runs)
    assert json.loads(instructions["ENTRYPOINT"]) == ["python", "-m", "trainer.task"]
    _require("trainer/task.py")


def test_beam_image_is_a_worker_and_a_launcher(cloudbuild):
    instructions = _instructions("docker/beam.Dockerfile")
    text = _read("docker/beam.Dockerfile")
    runs = " ".join(a for i, a in instructions if i == "RUN")
    assert "'.[eval]'" in runs and "'.[gpu,eval]'" in runs, "workers need Java for METEOR and the COCO tokenization"
    beam_pin = re.search(r"apache-beam\[gcp\]==([0-9.]+)\.\*", _read("setup.py")).group(1)
    sdk_images = re.findall(r"apache/beam_python3\.11_sdk:([\w.]+)", text)
    assert sdk_images and all(v.startswith(beam_pin + ".") for v in sdk_images), \
        f"the Beam SDK images {sdk_images} must match setup.py's apache-beam=={beam_pin}.*"
    assert "python311-template-launcher-base" in text
    copies = [a for i, a in instructions if i == "COPY" and "--from=" in a]
    assert any("/opt/google/dataflow/python_template_launcher" in a for a in copies), "launcher binary not copied"
    assert any(a.split()[-1] == "/opt/apache/beam" for a in copies), "SDK harness not copied"
    entrypoints = [a for i, a in instructions if i == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["/opt/apache/beam/boot"], \
        "the last ENTRYPOINT must stay the Beam SDK harness"
    runs = " ".join(a for i, a in instructions if i == "RUN")
    assert "CAPTIONER_GPU=1" in runs and "GPU" in " ".join(a for i, a in instructions if i == "ARG")
    env = " ".join(a for i, a in instructions if i == "ENV")
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE=/template/pipelines/${PIPELINE}.py" in env
    assert "FLEX_TEMPLATE_PYTHON_SETUP_FILE" not in env and "FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE" not in env, \
        "everything is preinstalled: a setup or requirements file would make every launch and worker reinstall it"
    default = re.search(r"^ARG PIPELINE=(\w+)", text, re.M).group(1)
    pipelines = {default} | {args["PIPELINE"] for _, dockerfile, args in _docker_build_tags(cloudbuild).values()
                             if dockerfile == "docker/beam.Dockerfile" and "PIPELINE" in args}
    assert pipelines == {"extract_features", "caption_and_score"}
    for name in sorted(pipelines):
        _require(f"pipelines/{name}.py")


def _dockerignore_patterns() -> list:
    return [line.strip().rstrip("/") for line in _read(".dockerignore").splitlines()
            if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        candidates = {pattern, pattern[3:]} if pattern.startswith("**/") else {pattern}
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatchcase(prefix, c) for c in candidates for prefix in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_project_and_drops_local_state():
    patterns = _dockerignore_patterns()
    for local in (".venv", ".git", "runs", "bench/out", "captioner/__pycache__", "beam_image_captioner.egg-info"):
        assert _ignored(local, patterns), f".dockerignore does not exclude {local}"
    needed = ["setup.py", "docker/beam.Dockerfile"] + [
        os.path.relpath(p, ROOT) for package in PACKAGES for p in glob.glob(_path(f"{package}/**/*.py"), recursive=True)]
    needed += [os.path.relpath(p, ROOT) for p in glob.glob(_path("configs/*.yaml"))]
    wrongly = [p for p in needed if _ignored(p, patterns)]
    assert not wrongly, f".dockerignore excludes files the images need: {wrongly}"
