"""Running a built pipeline the same way from a laptop, Dataflow, or a Flex Template launcher."""
from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions


def run_to_completion(build, options: PipelineOptions) -> bool:
    """Builds with `build(pipeline)` and runs; True once the job finished, False when it was only launched.

    A Flex Template launcher (or --template_location) must return as soon as the job
    is submitted, so the caller cannot read the job's outputs then.
    """
    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    result = pipeline.run()
    if options.view_as(GoogleCloudOptions).template_location or options.view_as(StandardOptions).no_wait_until_finish:
        logging.info("job submitted; not waiting for it to finish")
        return False
    result.wait_until_finish()
    return True


def configure_logging() -> None:
    """The stage's own progress at INFO; Beam's own INFO chatter (worker harness, gRPC) hidden."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
