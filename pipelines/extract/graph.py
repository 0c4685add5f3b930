"""The feature extraction pipeline graph: images and captions -> TFRecord shards, manifest, vocabulary.

`build_pipeline` only constructs the graph (tests and the entry point call it);
`pipelines/extract_features.py` parses flags, checks the inputs and runs it.

    images (glob | listing | dead letters) -> join captions, splits (split lists or a Karpathy file) and COCO
      ids by name (CoGroupByKey)
      -> [drop images already in an earlier folder] -> read + decode (dead letters) -> RunInference(encoder)
      -> one tf.train.Example per image -> shards per split (Beam sinks)
      -> word counts (+ the earlier folder's) -> vocabulary -> dead letters (sharded) -> manifest.json (last)

Memory per worker is flat in the number of images: per-image data moves only by
joins and sinks; what reaches one worker is bounded (counts, the vocabulary,
file names, samples of at most EXAMPLES_KEPT ids).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from captioner import manifest, schema, storage, text
from captioner.config import ExtractConfig, TextConfig
from captioner.images import KEPT_JPEG_QUALITY
from captioner.input_files import listings
from captioner.layout import DEAD_LETTER_PREFIX, VOCABULARY_FILE, WORD_COUNTS_FILE, shard_prefix
from pipelines import progress
from pipelines.extract.encoder_handler import EncoderModelHandler
from pipelines.extract.records import TRAIN_CAPTIONS, AssembleRecord, AssignSplit
from pipelines.inputs import joins
from pipelines.inputs import sources as read
from pipelines.inputs.dead_letters import DEAD_LETTER, dead_letter, to_json
from pipelines.inputs.decode import DecodeImages
from pipelines.inputs.shards import ReadShards

EXAMPLES_KEPT = 100  # ids of captions without an image, refused caption lines: a sample in the manifest


@dataclasses.dataclass
class ExtractSettings:
    """Everything the graph needs: the inputs, the output folder and the `extract` config section."""
    output: str
    encoder_identity: Dict
    feature_info: Dict
    config: ExtractConfig = dataclasses.field(default_factory=ExtractConfig)
    cleaning: str = dataclasses.field(default_factory=lambda: TextConfig().cleaning)  # text.cleaning
    images: Optional[str] = None             # a glob
    image_list: Optional[str] = None         # listing file(s), optionally with captions
    retry_dead_letters: Optional[str] = None  # dead-letter files of an earlier run: extract those images again
    captions: Optional[str] = None
    splits: Optional[str] = None
    key_scheme: str = listings.BY_NAME        # what the caption and split files key images by (name or id)
    skip_existing: Optional[str] = None      # a features folder: its images are not extracted again, its shards kept
    previous_manifest: Optional[Dict] = None  # that folder's manifest, read (and checked) by the entry point
    encoder_threads: Optional[int] = None


def _sample(pcoll, label: str):
    """A bounded, deterministic sample (the smallest values) and the count, for the manifest."""
    return (pcoll | f"Sample{label}" >> beam.combiners.Top.Smallest(EXAMPLES_KEPT),
            pcoll | f"Count{label}" >> beam.combiners.Count.Globally())


def _previous_ids(pipeline, settings: ExtractSettings):
    files = [path for split in schema.SPLITS
             for path in manifest.shard_files(settings.previous_manifest, settings.skip_existing, split)]
    previous = (pipeline
                | "PreviousShards" >> beam.Create(files)
                | "ReadPrevious" >> ReadShards())  # a damaged earlier shard stops the job, naming it
    return previous.records | "PreviousIds" >> beam.Map(lambda record: schema.parse_example_py(record)["image_id"])


def _word_counts(pipeline, train_captions, settings: ExtractSettings):
    """(word, count) over this run's train captions plus, when incremental, the earlier folder's counts."""
    words = (train_captions
             | "Words" >> beam.FlatMap(lambda captions: [w for c in captions for w in c.split()])
             | "CountWords" >> beam.combiners.Count.PerElement())
    if not settings.previous_manifest:
        return words
    earlier = (pipeline
               | "ReadEarlierCounts" >> beam.io.ReadFromText(storage.join(
                   settings.skip_existing, settings.previous_manifest["vocabulary"]["counts_file"]))
               | "ParseEarlierCounts" >> beam.FlatMap(lambda line: text.parse_vocabulary(line)))
    return (words, earlier) | "AllCounts" >> beam.Flatten() | "SumCounts" >> beam.CombinePerKey(sum)


def _write_lines(lines: List[str], path: str) -> str:
    storage.write_text(path, "".join(line + "\n" for line in lines))
    return path


def _to_extract(pipeline, images, listed_captions, refused: list, settings: ExtractSettings):
    """Images joined with their captions and split (or all 'unsplit' without a caption file): (the images to
    extract, the caption names without an image, dead letters)."""
    if listed_captions is None and not settings.captions and not settings.splits:
        orphans = pipeline | "NoCaptionFile" >> beam.Create([])
        todo = (images | "Unsplit" >> beam.Map(lambda image: (image[0], image[1], "unsplit", (), None))
                | "Spread" >> beam.Reshuffle())
        return todo, orphans, []
    data = {}
    if listed_captions is not None:
        data["captions"] = listed_captions
    elif settings.captions:
        pairs = pipeline | "Captions" >> read.ReadCaptionPairs(settings.captions)
        data["captions"] = pairs["pairs"]
        refused.append(pairs[read.BAD_LINES])
        for tag, found in (("splits", pairs["splits"]), ("coco_id", pairs["coco_ids"])):
            if found is not None:
                data[tag] = found
    if settings.splits:
        data["splits"] = pipeline | "Splits" >> read.ReadSplits(settings.splits)
    scheme = listings.BY_ID if listed_captions is not None else settings.key_scheme
    joined = images | "JoinByName" >> joins.JoinByName(scheme, ambiguous_tags=tuple(data), **data)
    assigned = joined.images | "AssignSplit" >> beam.ParDo(AssignSplit()).with_outputs(DEAD_LETTER, main="ok")
    return assigned.ok, joined[joins.ORPHANS], [joined[DEAD_LETTER], assigned[DEAD_LETTER]]


def _encode_and_assemble(todo, settings: ExtractSettings, dead: list):
    """Decode, encode (RunInference) and assemble each image's record; failures join `dead`."""
    cfg = settings.config
    decoded = todo | "DecodeImages" >> DecodeImages(settings.encoder_identity["input_size"], cfg.max_pixels)
    dead.append(decoded[DEAD_LETTER])
    handler = KeyedModelHandler(EncoderModelHandler(settings.encoder_identity, cfg.batch_size,
                                                    settings.encoder_threads))
    encoded, failed = (decoded.images
                       | "KeyForInference" >> beam.Map(lambda e: (tuple(e[:5]), e[5]))
                       | "Encode" >> RunInference(handler).with_exception_handling())
    dead.append(failed.failed_inferences | "FailedBatches" >> beam.FlatMap(
        lambda failure: [dead_letter(key[0], key[1], f"encoder failed on its batch: {failure[1]}", "encode")
                         for key, _ in failure[0]]))
    return (encoded
            | "Progress" >> progress.LogProgress("extract", "images encoded")
            | "Assemble" >> beam.ParDo(AssembleRecord(settings.cleaning, cfg.keep_images)).with_outputs(
                TRAIN_CAPTIONS, main="records"))


def _write_splits(records, settings: ExtractSettings):
    """({split: its shard files}, {split: its record count}): one TFRecord sink per split."""
    by_split = records | "BySplit" >> beam.Partition(
        lambda record, _: schema.SPLITS.index(record[0]), len(schema.SPLITS))
    written, counts = {}, {}
    for split, split_records in zip(schema.SPLITS, by_split):
        written[split] = (split_records
                          | f"Examples{split}" >> beam.Values()
                          | f"Write{split}" >> beam.io.WriteToTFRecord(
                              storage.join(settings.output, shard_prefix(split)), file_name_suffix=".tfrecord",
                              num_shards=settings.config.num_shards))
        counts[split] = split_records | f"Count{split}" >> beam.combiners.Count.Globally()
    return written, counts


def _write_vocabulary(pipeline, train_captions, settings: ExtractSettings):
    """(the vocabulary's lines, the vocabulary and word-count files written)."""
    out = settings.output
    word_counts = _word_counts(pipeline, train_captions, settings) | "AllWords" >> beam.combiners.ToList()
    vocabulary = word_counts | "Vocabulary" >> beam.Map(lambda counts, n: text.vocabulary_lines(dict(counts), n),
                                                        settings.config.min_word_count)
    vocabulary_file = vocabulary | "WriteVocabulary" >> beam.Map(_write_lines, storage.join(out, VOCABULARY_FILE))
    counts_file = word_counts | "WriteCounts" >> beam.Map(
        lambda counts, path: _write_lines(text.vocabulary_lines(dict(counts), 1), path),
        storage.join(out, WORD_COUNTS_FILE))
    return vocabulary, (vocabulary_file, counts_file) | "VocabularyWritten" >> beam.Flatten()


def build_pipeline(pipeline: beam.Pipeline, settings: ExtractSettings) -> Dict[str, beam.PCollection]:
    """Adds the extraction graph to `pipeline`; returns its main PCollections (for tests)."""
    images, listed_captions, refused = read.read_images(pipeline, settings.image_list, settings.retry_dead_letters,
                                                        settings.images)
    todo, orphans, dead = _to_extract(pipeline, images, listed_captions, refused, settings)
    skipped = pipeline | "NothingSkipped" >> beam.Create([])
    if settings.skip_existing:
        kept = todo | "SkipExisting" >> joins.DropExisting(_previous_ids(pipeline, settings))
        todo, skipped = kept.images, kept[joins.SKIPPED]
    assembled = _encode_and_assemble(todo, settings, dead)
    written, counts = _write_splits(assembled.records, settings)
    vocabulary, vocabulary_files = _write_vocabulary(pipeline, assembled[TRAIN_CAPTIONS], settings)
    dead_letters = dead | "AllDeadLetters" >> beam.Flatten()
    dead_files = (dead_letters
                  | "DeadJson" >> beam.Map(to_json)
                  | "WriteDeadLetters" >> beam.io.WriteToText(storage.join(settings.output, DEAD_LETTER_PREFIX),
                                                              file_name_suffix=".jsonl"))
    side = beam.pvalue.AsSingleton
    summary = {
        **{f"count_{split}": side(count) for split, count in counts.items()},
        **{f"files_{split}": beam.pvalue.AsList(files) for split, files in written.items()},
        "dead_files": beam.pvalue.AsList(dead_files),
        "dead_count": side(dead_letters | "CountDead" >> beam.combiners.Count.Globally()),
        "matched_count": side(images | "CountMatched" >> beam.combiners.Count.Globally()),
        "skipped_count": side(skipped | "CountSkipped" >> beam.combiners.Count.Globally()),
        "vocabulary": side(vocabulary), "written": beam.pvalue.AsList(vocabulary_files),
    }
    refused_lines = (refused or [pipeline | "NoRefusedLines" >> beam.Create([])]) | "Refused" >> beam.Flatten()
    for label, pcoll in (("orphans", orphans), ("refused", refused_lines)):
        sample, count = _sample(pcoll, label.title())
        summary[f"{label}_sample"], summary[f"{label}_count"] = side(sample), side(count)
    manifest_path = (pipeline
                     | "ManifestTrigger" >> beam.Create([None])
                     | "WriteManifest" >> beam.Map(_write_manifest, settings, **summary))
    return {"records": assembled.records, "dead_letters": dead_letters, "manifest": manifest_path}


def _write_manifest(_, settings: ExtractSettings, dead_files, dead_count: int, matched_count: int,
                    skipped_count: int, vocabulary: List[str], written, orphans_sample, orphans_count: int,
                    refused_sample, refused_count: int, **per_split) -> str:
    """Runs after every shard, the vocabulary and the dead letters are written (their names are side inputs)."""
    del written
    out, previous = settings.output, settings.previous_manifest or {}
    new_counts = {split: per_split[f"count_{split}"] for split in schema.SPLITS}
    shards = {split: [manifest.relative_to(out, path) for path in per_split[f"files_{split}"]]
              for split in schema.SPLITS}
    if previous:
        for split in schema.SPLITS:
            shards[split] += manifest.shard_files(previous, settings.skip_existing, split)
    this_run = {"images_matched": matched_count, "records_written": sum(new_counts.values()),
                "dead_letters": dead_count, "skipped_existing": skipped_count,
                "captions_without_images": {"count": orphans_count, "examples": sorted(orphans_sample)},
                "caption_lines_refused": {"count": refused_count, "examples": sorted(refused_sample)},
                "images": settings.images or settings.image_list or settings.retry_dead_letters,
                "ids": "path relative to " + listings.fixed_prefix(settings.images) if settings.images
                else "path as listed"}
    body = manifest.build(
        settings.encoder_identity, settings.feature_info,
        counts={split: new_counts[split] + previous.get("counts", {}).get(split, 0) for split in schema.SPLITS},
        shards=shards, dead_letter_files=[manifest.relative_to(out, path) for path in dead_files],
        min_word_count=settings.config.min_word_count, vocabulary_size=len(vocabulary), this_run=this_run,
        cleaning=settings.cleaning, images=manifest.images_entry(settings.encoder_identity["input_size"],
                                                                 KEPT_JPEG_QUALITY)
        if settings.config.keep_images else None)
    body["captions_without_images"] = this_run["captions_without_images"]
    if previous:
        body["merged_from"] = [settings.skip_existing] + previous.get("merged_from", [])
    return manifest.write(out, body)
