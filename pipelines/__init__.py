"""The Apache Beam jobs: feature extraction, and batch captioning scored with the captioning field's metrics.

    extract_features   entry point of the extraction job (its graph in extract/)
    caption_and_score  entry point of the caption job (its graph, scoring and outputs in caption/)
    inputs/            what both jobs read: images, caption and split files, joins, shards, dead letters
    launch, progress, outcome, worker_errors   running a job: Beam options, progress lines, counts, errors
"""
from pipelines import worker_errors

# A local worker process imports this package to run the project's DoFns: from then on its stderr
# leaves out the tracebacks the launcher reports in one line (worker_errors.py). A no-op elsewhere.
worker_errors.quiet_worker_stderr()
