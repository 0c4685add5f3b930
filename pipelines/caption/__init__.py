"""The caption-and-score job: images (or extracted features) -> captions, the field's scores, a gallery.

    graph                 the Beam graph (`build_pipeline`) and its settings; rows carry ids and paths, no images
    captioner_handler     RunInference's ModelHandler for a captioner bundle (encoder + beam search)
    scoring               the one scoring path: references cleaned once, per-row sentence BLEU and CIDEr-D
    document_frequencies  CIDEr-D's document frequencies: a bounded side input and a join by n-gram
    score_totals          one combine of the statistics: bleu.json's nltk BLEU and metrics.json's scores
    outputs               what an OutputSpec asks: sharded captions, dead letters, metrics.json, bleu.json
    coco_results          the COCO results files (pycocoevalcap's input format)
    sample                the gallery's bounded sample of rows
    gallery               the self-contained, sortable HTML report (its images read for the sample only)

`python -m pipelines.caption_and_score` is its entry point.
"""
