"""The caption-and-score job: images (or extracted features) -> captions, corpus BLEU, a gallery.

    graph              the Beam graph (`build_pipeline`) and its settings
    captioner_handler  RunInference's ModelHandler for a captioner bundle (encoder + beam search)
    bleu_combine       corpus BLEU as a CombineFn over summed n-gram statistics
    outputs            captions.jsonl / .csv, dead letters, bleu.json, report.html
    gallery            the self-contained, sortable HTML report

`python -m pipelines.caption_and_score` is its entry point.
"""
