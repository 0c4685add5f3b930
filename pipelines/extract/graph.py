"""The feature extraction pipeline graph: images and captions -> TFRecord shards, manifest, vocabulary.

`build_pipeline` only constructs the graph (tests and the entry point call it);
`pipelines/extract_features.py` parses flags and runs it.

    match -> group by id (redistributes) -> read + decode (dead letters) -> RunInference(encoder)
      -> join captions and split (side inputs) -> one tf.train.Example per image -> shards per split
      -> vocabulary (Beam combine over train captions) -> dead_letter.jsonl -> manifest.json (last)
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Iterable, List, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from captioner import captions as caption_files
from captioner import manifest, schema, storage, text
from captioner.config import ExtractConfig
from captioner.layout import DEAD_LETTER_FILE, VOCABULARY_FILE, shard_prefix
from pipelines import inputs
from pipelines.extract.encoder_handler import EncoderModelHandler

_LOG = logging.getLogger(__name__)
ORPHAN_IDS_KEPT = 100


@dataclasses.dataclass
class ExtractSettings:
    """Everything the graph needs: the inputs, the output folder and the `extract` config section."""
    images: str
    output: str
    encoder_identity: Dict
    feature_info: Dict
    config: ExtractConfig = dataclasses.field(default_factory=ExtractConfig)
    captions: Optional[str] = None
    splits: Optional[str] = None
    encoder_threads: Optional[int] = None


class AssembleRecord(beam.DoFn):
    """(id, path, features) + captions + split -> (split, serialized Example, cleaned train captions)."""

    def __init__(self):
        self.records = Metrics.counter(inputs.NAMESPACE, "records_written")
        self.uncaptioned = Metrics.counter(inputs.NAMESPACE, "images_without_captions")

    def process(self, element, captions_by_id, split_by_id):
        (image_id, path), features = element
        raw = sorted(captions_by_id.get(image_id, []))
        cleaned = [c for c in (text.clean_caption(r) for r in raw) if c]
        split = split_by_id.get(image_id, "unsplit")
        if not raw:
            self.uncaptioned.inc()
        self.records.inc()
        yield split, schema.make_example(image_id, path, split, cleaned, raw,
                                          features["pooled"], features.get("spatial"))
        if split == "train":
            yield beam.pvalue.TaggedOutput("train_captions", cleaned)


def _dead_letters_from_failed_batches(failed):
    batch, error = failed
    for (image_id, path), _ in batch:
        yield inputs.dead_letter(path, f"encoder failed on its batch: {error}", "encode")


def _write_lines(lines: List[str], path: str) -> str:
    storage.write_text(path, "".join(line + "\n" for line in lines))
    return path


def _vocabulary(word_counts, min_count: int) -> List[str]:
    return text.vocabulary_lines(dict(word_counts), min_count)


def _orphan_caption_ids(keyed_paths, caption_pairs):
    """Image ids that have captions but no matched file (a known Flickr8k quirk has one)."""
    joined = ({"image": keyed_paths | "IdsOnly" >> beam.Map(lambda kv: (kv[0], None)),
               "caption": caption_pairs | "CaptionIds" >> beam.Map(lambda kv: (kv[0], None))}
              | "JoinIds" >> beam.CoGroupByKey())
    return joined | "NoImage" >> beam.FlatMap(
        lambda kv: [kv[0]] if kv[1]["caption"] and not kv[1]["image"] else [])


def _count(pcoll, label: str):
    return pcoll | f"Count{label}" >> beam.combiners.Count.Globally()


def build_pipeline(pipeline: beam.Pipeline, settings: ExtractSettings) -> Dict[str, beam.PCollection]:
    """Adds the extraction graph to `pipeline`; returns its main PCollections (for tests)."""
    out, cfg = settings.output, settings.config
    paths = pipeline | "MatchImages" >> inputs.MatchImages(settings.images)
    matched = paths | "OnePerId" >> inputs.KeepFirstPerId()
    decoded = matched.images | "DecodeImages" >> inputs.DecodeImages(
        settings.encoder_identity["input_size"], cfg.max_pixels)

    handler = KeyedModelHandler(EncoderModelHandler(
        settings.encoder_identity, cfg.batch_size, settings.encoder_threads))
    encoded, failed = (decoded.images
                       | "KeyForInference" >> beam.Map(lambda e: ((e[0], e[1]), e[2]))
                       | "Encode" >> RunInference(handler).with_exception_handling())
    features = encoded | "InferenceOnly" >> beam.MapTuple(lambda key, result: (key, result.inference))

    caption_pairs = pipeline | "Captions" >> inputs.ReadCaptionPairs(settings.captions)
    captions_by_id = caption_pairs | "GroupCaptions" >> beam.GroupByKey()
    split_of = caption_files.read_splits(settings.splits) if settings.splits else {}
    splits = pipeline | "Splits" >> beam.Create(sorted(split_of.items()))

    assembled = features | "Assemble" >> beam.ParDo(
        AssembleRecord(), beam.pvalue.AsDict(captions_by_id), beam.pvalue.AsDict(splits)
    ).with_outputs("train_captions", main="records")

    by_split = assembled.records | "BySplit" >> beam.Partition(
        lambda record, _: schema.SPLITS.index(record[0]), len(schema.SPLITS))
    written, counts = [], {}
    for split, records in zip(schema.SPLITS, by_split):
        examples = records | f"Examples{split}" >> beam.Values()
        written.append(examples | f"Write{split}" >> beam.io.WriteToTFRecord(
            storage.join(out, shard_prefix(split)), file_name_suffix=".tfrecord", num_shards=cfg.num_shards))
        counts[split] = _count(records, split)

    vocabulary = (assembled.train_captions
                  | "Words" >> beam.FlatMap(lambda captions: [w for c in captions for w in c.split()])
                  | "CountWords" >> beam.combiners.Count.PerElement()
                  | "AllWords" >> beam.combiners.ToList()
                  | "Vocabulary" >> beam.Map(_vocabulary, cfg.min_word_count))
    vocabulary_file = vocabulary | "WriteVocabulary" >> beam.Map(_write_lines, storage.join(out, VOCABULARY_FILE))

    dead = ((matched.dead_letter, decoded.dead_letter,
             failed.failed_inferences | "FailedBatches" >> beam.FlatMap(_dead_letters_from_failed_batches))
            | "AllDeadLetters" >> beam.Flatten())
    dead_file = (dead
                 | "DeadJson" >> beam.Map(inputs.dead_letter_json)
                 | "DeadList" >> beam.combiners.ToList()
                 | "WriteDeadLetters" >> beam.Map(lambda lines, path: _write_lines(sorted(lines), path),
                                                  storage.join(out, DEAD_LETTER_FILE)))

    orphans = (_orphan_caption_ids(matched.images, caption_pairs)
               | "OrphanList" >> beam.combiners.ToList())
    side = beam.pvalue.AsSingleton
    manifest_path = (pipeline
                     | "ManifestTrigger" >> beam.Create([None])
                     | "WriteManifest" >> beam.Map(
                         _write_manifest, settings,
                         **{f"count_{split}": side(count) for split, count in counts.items()},
                         dead_count=side(_count(dead, "DeadLetters")),
                         matched_count=side(_count(paths, "Matched")),
                         vocabulary=side(vocabulary), orphans=side(orphans),
                         written=beam.pvalue.AsList(
                             tuple(written) + (vocabulary_file, dead_file) | "AllWritten" >> beam.Flatten())))
    return {"records": assembled.records, "dead_letters": dead, "manifest": manifest_path}


def _write_manifest(_, settings: ExtractSettings, dead_count: int, matched_count: int, vocabulary: List[str],
                    orphans: List[str], written: Iterable[str], **split_counts: int) -> str:
    """Runs after every shard, the vocabulary and the dead letters are written (`written` is a side input)."""
    del written
    counts = {split: split_counts[f"count_{split}"] for split in schema.SPLITS}
    body = manifest.build(settings.encoder_identity, settings.feature_info, counts, dead_count,
                          images_matched=matched_count,
                          min_word_count=settings.config.min_word_count, vocabulary_size=len(vocabulary))
    body["captions_without_images"] = {"count": len(orphans), "ids": sorted(orphans)[:ORPHAN_IDS_KEPT]}
    return manifest.write(settings.output, body)

