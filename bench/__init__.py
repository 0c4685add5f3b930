"""Benchmarks of the captioner against the classic Keras merge-model tutorial, run from the repository root:

    .venv/bin/python -m bench.extract   feature extraction: the pipeline vs the encoder's limit vs the classic loop
    .venv/bin/python -m bench.train     training and greedy decoding: the trainer vs the tutorial's method
    .venv/bin/python -m bench.caption   caption and score from JPEG files: the pipeline vs the per-word loop

`harness` holds what they share (child processes and their peak RSS, timing, Markdown tables), `tutorial`
the baseline method. Results: bench/RESULTS.md.
"""
