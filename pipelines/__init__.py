"""Apache Beam pipelines: feature extraction, and batch captioning with BLEU scoring."""
