"""The feature extraction job: images and captions -> TFRecord shards, manifest, vocabulary.

    graph            the Beam graph (`build_pipeline`) and its settings
    encoder_handler  RunInference's ModelHandler for the project's encoders

`python -m pipelines.extract_features` is its entry point.
"""
