"""Where every stage puts its files: the one place their names are spelled.

Each folder a stage writes is read by another stage (a features folder by the
trainer and the caption job, a job dir's export/ by the caption job), so writer
and readers take the names from here and can never disagree about what is where.
The trainer's own working files (backups, checkpoints, history) are named in
`trainer/job_folder.py`, since only the trainer reads them.
"""
from __future__ import annotations

# A data folder in the Flickr8k layout: images/, a caption file and one split list per split.
SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "dev": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}

# A features folder (`python -m pipelines.extract_features --output`).
MANIFEST_FILE = "manifest.json"          # written last: the run's list of files (readers read only those)
VOCABULARY_FILE = "vocabulary.txt"        # train words seen at least extract.min_word_count times
WORD_COUNTS_FILE = "word_counts.txt"      # every train word's count, so an incremental run can add to them
DEAD_LETTER_PREFIX = "dead_letter"        # dead_letter-SSSSS-of-NNNNN.jsonl; also in a caption output folder
FEATURES_ENCODER_DIR = "encoder"         # extract.float_encoder: the float .keras rebuild of a .tflite encoder
FEATURES_FILES = (MANIFEST_FILE, VOCABULARY_FILE, WORD_COUNTS_FILE, f"{DEAD_LETTER_PREFIX}*.jsonl",
                  "*/records-*.tfrecord", f"{FEATURES_ENCODER_DIR}/*.keras")  # names an extraction's files have


def shard_prefix(split: str) -> str:
    """Shards of one split are `<split>/records-SSSSS-of-NNNNN.tfrecord`."""
    return f"{split}/records"


# A trainer job dir (`python -m trainer.task --job_dir`): what other stages read from it.
EXPORT_DIR = "export"
EVAL_FILE = "eval.json"
EVAL_CAPTIONS_FILE = "eval_captions.jsonl"
SUMMARY_FILE = "summary.json"

# A captioner bundle (JOB_DIR/export): the decoder, its token table and bundle.json.
BUNDLE_FILE = "bundle.json"
MODEL_FILE = "decoder.keras"
BUNDLE_VOCABULARY_FILE = "vocabulary.txt"
ENCODER_DIR = "encoder"                  # a copy of the encoder's file (e.g. the .tflite) ...
FINE_TUNED_ENCODER_FILE = "encoder.keras"  # ... or the encoder fine-tuned with the decoder, in encoder/

# A caption output folder (`python -m pipelines.caption_and_score --output`): sharded outputs, then the summary.
CAPTIONS_PREFIX = "captions"             # captions-SSSSS-of-NNNNN.jsonl / .parquet / .csv
COCO_RESULTS_PREFIX = "coco_results"     # coco_results-SSSSS-of-NNNNN.json: the official evaluation's input
METRICS_JSON = "metrics.json"            # every score, both tokenizations, what was skipped and why
BLEU_JSON = "bleu.json"                  # written last: scores, counts and the list of every output file
REPORT_HTML = "report.html"
CAPTION_FILES = (BLEU_JSON, METRICS_JSON, REPORT_HTML, f"{CAPTIONS_PREFIX}-*", f"{COCO_RESULTS_PREFIX}-*",
                 f"{DEAD_LETTER_PREFIX}*.jsonl",
                 "captions.jsonl", "captions.csv")  # names a caption job's files have (and had before it sharded)
