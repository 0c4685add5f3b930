"""Apache Beam pipelines: feature extraction, and batch captioning with BLEU scoring."""
from pipelines import worker_errors

# A local worker process imports this package to run the project's DoFns: from then on its stderr
# leaves out the tracebacks the launcher reports in one line (worker_errors.py). A no-op elsewhere.
worker_errors.quiet_worker_stderr()
