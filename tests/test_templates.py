"""The Flex Template metadata files: well formed, and every parameter is a flag of the pipeline it launches."""
from __future__ import annotations

import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = {  # metadata file -> the pipeline entry point it launches
    "templates/extract_features.metadata.json": "pipelines/extract_features.py",
    "templates/caption_and_score.metadata.json": "pipelines/caption_and_score.py",
}


def _read(relative: str) -> str:
    path = os.path.join(ROOT, relative)
    assert os.path.isfile(path), f"{relative} does not exist, but the templates name it"
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _flags(source: str) -> dict:
    """{flag name: required} from the `add_argument("--name", ...)` calls in a module's text."""
    flags = {}
    for match in re.finditer(r"add_argument\(\s*[\"']--([\w-]+)[\"'](.*?)\)\s*$", source, re.S | re.M):
        flags[match.group(1)] = bool(re.search(r"required\s*=\s*True", match.group(2).split("add_argument(")[0]))
    return flags


def _pipeline_flags(pipeline: str) -> dict:
    source = _read(pipeline)
    flags = _flags(source)
    if "add_config_flags" in source:
        flags.update(_flags(_read("captioner/config/files.py")))
    return flags


@pytest.mark.parametrize("metadata_file", sorted(TEMPLATES))
def test_metadata_is_well_formed(metadata_file):
    metadata = json.loads(_read(metadata_file))
    assert metadata.get("name") and metadata.get("description")
    names = [p["name"] for p in metadata["parameters"]]
    assert len(names) == len(set(names)), f"duplicate parameters in {metadata_file}"
    for parameter in metadata["parameters"]:
        assert parameter.get("label") and parameter.get("helpText"), parameter["name"]
        assert isinstance(parameter.get("isOptional", False), bool), parameter["name"]
        regexes = [re.compile(r) for r in parameter.get("regexes", [])]
        example = re.search(r"Example: (\S+)$", parameter["helpText"])
        if example and regexes:
            assert any(r.fullmatch(example.group(1)) for r in regexes), \
                f"{metadata_file}: the example {example.group(1)!r} of {parameter['name']} fails its own regexes"
        if "path" in parameter["helpText"].lower() or "Cloud Storage" in parameter["helpText"]:
            assert regexes, f"{metadata_file}: {parameter['name']} takes a gs:// path but has no regexes"


@pytest.mark.parametrize("metadata_file", sorted(TEMPLATES))
def test_metadata_parameters_are_pipeline_flags(metadata_file):
    flags = _pipeline_flags(TEMPLATES[metadata_file])
    metadata = json.loads(_read(metadata_file))
    unknown = [p["name"] for p in metadata["parameters"] if p["name"] not in flags]
    assert not unknown, f"{metadata_file} declares parameters that {TEMPLATES[metadata_file]} has no flag for: {unknown}"
    optional = {p["name"] for p in metadata["parameters"] if p.get("isOptional", False)}
    declared = {p["name"] for p in metadata["parameters"]}
    required = {name for name, is_required in flags.items() if is_required}
    assert required <= declared - optional, \
        f"required flags of {TEMPLATES[metadata_file]} missing or optional in {metadata_file}: {sorted(required - (declared - optional))}"
