"""The pipelines build for Dataflow (validated by the runner, not submitted), and --setup_file ships every module."""
import os
import sys
import tarfile

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.stager import Stager

from captioner import encoders
from pipelines import captioning, extraction
from tests.conftest import PROJECT_ROOT

DATAFLOW_FLAGS = [
    "--runner=DataflowRunner", "--project=my-project", "--region=us-central1", "--job_name=captioner-build-test",
    "--temp_location=gs://my-bucket/tmp", "--staging_location=gs://my-bucket/staging", "--no_auth",
    "--dry_run=True", f"--setup_file={os.path.join(PROJECT_ROOT, 'setup.py')}",
]


def _extraction_graph(pipeline):
    encoder = encoders.load_encoder("thumbnail", spatial=True)
    extraction.build_pipeline(pipeline, extraction.ExtractSettings(
        images="gs://my-bucket/images/*.jpg", output="gs://my-bucket/features",
        captions=None, splits=None, encoder_identity=encoder.identity, feature_info=encoder.feature_info()))


def _caption_graph(pipeline):
    encoder = encoders.load_encoder("thumbnail", spatial=True)
    bundle = {"decoder": "attention", "encoder": encoder.identity, "features": encoder.feature_info()}
    captioning.build_pipeline(pipeline, captioning.CaptionSettings(
        model="gs://my-bucket/jobs/run1/export", output="gs://my-bucket/captions", bundle=bundle,
        images="gs://my-bucket/new-photos/**"))


GRAPHS = {"extract_features": _extraction_graph, "caption_and_score": _caption_graph}


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


def test_setup_file_sdist_holds_every_project_module_the_workers_import(tmp_path):
    for graph in GRAPHS.values():
        graph(beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])))
    project_modules = {
        os.path.relpath(module.__file__, PROJECT_ROOT)
        for module in list(sys.modules.values())
        if getattr(module, "__file__", None) and os.path.abspath(module.__file__).startswith(PROJECT_ROOT + os.sep)
        and "/tests/" not in module.__file__ and "/.venv/" not in module.__file__
    }
    assert {"captioner/encoders.py", "pipelines/extraction.py", "pipelines/captioning.py",
            "trainer/bundle.py", "captioner/schema.py"} <= project_modules
    sdist = Stager._build_setup_package(os.path.join(PROJECT_ROOT, "setup.py"), str(tmp_path))
    with tarfile.open(sdist) as archive:
        shipped = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing = sorted(project_modules - shipped)
    assert not missing, f"modules imported by the pipelines but absent from the --setup_file sdist: {missing}"
    assert {"configs/local.yaml", "configs/flickr8k.yaml", "configs/dataflow.yaml"} <= shipped
