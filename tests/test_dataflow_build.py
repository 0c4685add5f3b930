"""The pipelines build for Dataflow (validated by the runner, not submitted), and --setup_file ships every module."""
import os
import tarfile

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.stager import Stager

from captioner import encoders
from pipelines.caption import graph as caption_graph
from pipelines.extract import graph as extract_graph
from tests import import_graph
from tests.conftest import PROJECT_ROOT

DATAFLOW_FLAGS = [
    "--runner=DataflowRunner", "--project=my-project", "--region=us-central1", "--job_name=captioner-build-test",
    "--temp_location=gs://my-bucket/tmp", "--staging_location=gs://my-bucket/staging", "--no_auth",
    "--dry_run=True", f"--setup_file={os.path.join(PROJECT_ROOT, 'setup.py')}",
]


def _extraction_graph(pipeline):
    encoder = encoders.load_encoder("thumbnail", spatial=True)
    extract_graph.build_pipeline(pipeline, extract_graph.ExtractSettings(
        images="gs://my-bucket/images/*.jpg", output="gs://my-bucket/features",
        captions=None, splits=None, encoder_identity=encoder.identity, feature_info=encoder.feature_info()))


def _caption_graph(pipeline):
    encoder = encoders.load_encoder("thumbnail", spatial=True)
    bundle = {"decoder": "attention", "encoder": encoder.identity, "features": encoder.feature_info()}
    caption_graph.build_pipeline(pipeline, caption_graph.CaptionSettings(
        model="gs://my-bucket/jobs/run1/export", output="gs://my-bucket/captions", bundle=bundle,
        images="gs://my-bucket/new-photos/**"))


GRAPHS = {"extract_features": _extraction_graph, "caption_and_score": _caption_graph}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_pipeline_builds_under_dataflow_runner_without_submitting(name):
    pipeline = beam.Pipeline(options=PipelineOptions(DATAFLOW_FLAGS))
    GRAPHS[name](pipeline)
    result = pipeline.run()
    job = result.job.proto
    assert job.name == "captioner-build-test"
    transforms = result.job.proto_pipeline.components.transforms
    labels = {t.unique_name for t in transforms.values()}
    assert any("Write" in label for label in labels), sorted(labels)[:20]


@pytest.mark.slow
def test_setup_file_sdist_holds_every_project_module_the_workers_import(tmp_path):
    graph = import_graph.build_graph()
    modules = import_graph.project_modules()
    entry_points = ["pipelines.extract_features", "pipelines.caption_and_score"]
    needed = {module for entry in entry_points for module in import_graph.reachable(graph, entry) | {entry}}
    files = {os.path.relpath(modules[module], PROJECT_ROOT) for module in needed}
    assert {"captioner/encoders/registry.py", "pipelines/extract/graph.py", "pipelines/caption/graph.py",
            "captioner/bundle.py", "captioner/schema.py", "captioner/decoder/search.py"} <= files
    sdist = Stager._build_setup_package(os.path.join(PROJECT_ROOT, "setup.py"), str(tmp_path))
    with tarfile.open(sdist) as archive:
        shipped = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing = sorted(files - shipped)
    assert not missing, f"modules the pipelines import but absent from the --setup_file sdist: {missing}"
    assert {"configs/local.yaml", "configs/flickr8k.yaml", "configs/dataflow.yaml"} <= shipped
