"""The caption-and-score pipeline graph: images (or extracted features) -> captions, BLEU, gallery.

    images:   match -> group by id -> decode (dead letters) -> RunInference(bundle: encoder + beam search)
    features: read the split's shards (references come with them) -> RunInference(bundle: beam search)
    -> rows (+ smoothed sentence BLEU) -> corpus BLEU (a CombineFn over summed n-gram statistics)
    -> captions.jsonl, captions.csv, dead_letter.jsonl, bleu.json, report.html
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from captioner import bleu, images, manifest, schema, storage, text
from captioner.config import Config
from pipelines import inputs
from pipelines.caption import outputs
from pipelines.caption.bleu_combine import CorpusBleuFn
from pipelines.caption.captioner_handler import FEATURES, IMAGES, CaptionerModelHandler
from pipelines.caption.gallery import thumbnail_data_uri


@dataclasses.dataclass
class CaptionSettings:
    model: str                      # the trainer's export folder
    output: str
    bundle: Dict                    # bundle.json of the export
    config: Config = dataclasses.field(default_factory=Config)  # decoding (caption) and extract.max_pixels
    images: Optional[str] = None
    features: Optional[str] = None
    split: str = "test"
    references: Optional[str] = None
    include: Optional[List[str]] = None   # image ids to caption (None: every matched image)
    threads: Optional[int] = None   # per worker, for the encoder and the decoder (None: all cores)

    @property
    def source(self) -> str:
        return IMAGES if self.images else FEATURES


def _image_inputs(pipeline, settings: CaptionSettings):
    """((id, path, thumbnail), pixels), dead letters, the matched count, and references from --references."""
    paths = pipeline | "MatchImages" >> inputs.MatchImages(settings.images)
    if settings.include is not None:
        wanted = frozenset(settings.include)
        paths = paths | "Include" >> beam.Filter(lambda path: images.image_id(path) in wanted)
    matched = paths | "OnePerId" >> inputs.KeepFirstPerId()
    decoded = matched.images | "DecodeImages" >> inputs.DecodeImages(
        settings.bundle["encoder"]["input_size"], settings.config.extract.max_pixels)
    keyed = decoded.images | "WithThumbnail" >> beam.Map(
        lambda e: ((e[0], e[1], thumbnail_data_uri(e[2])), e[2]))
    references = (pipeline
                  | "References" >> inputs.ReadCaptionPairs(settings.references)
                  | "CleanReferences" >> beam.MapTuple(lambda image_id, raw: (image_id, text.clean_caption(raw)))
                  | "GroupReferences" >> beam.GroupByKey())
    dead = (matched.dead_letter, decoded.dead_letter) | "InputDeadLetters" >> beam.Flatten()
    return keyed, dead, paths, references


def _feature_inputs(pipeline, settings: CaptionSettings):
    """The split's stored records: ((id, path, None), features), no dead letters, references from the records."""
    features_manifest = manifest.read(settings.features)
    manifest.check_compatible(features_manifest, settings.bundle["encoder"], settings.bundle["features"],
                              source=settings.features)
    info = features_manifest["features"]
    records = (pipeline
               | "ReadRecords" >> beam.io.ReadFromTFRecord(
                   storage.join(settings.features, features_manifest["shards"][settings.split]))
               | "Parse" >> beam.Map(schema.parse_example_py))
    keyed = records | "KeyRecords" >> beam.Map(lambda r: ((r["image_id"], r["image_path"], None), {
        name: schema.array_from_bytes(r[name], info[name]) for name in info if r.get(name) is not None}))
    references = records | "StoredReferences" >> beam.Map(lambda r: (r["image_id"], r["captions"]))
    dead = pipeline | "NoInputDeadLetters" >> beam.Create([])
    return keyed, dead, records, references


class MakeRow(beam.DoFn):
    """((id, path, thumbnail), (caption, log-prob)) + references -> a report row with smoothed sentence BLEU."""

    def __init__(self):
        self.captioned = Metrics.counter(inputs.NAMESPACE, "images_captioned")
        self.unreferenced = Metrics.counter(inputs.NAMESPACE, "images_without_references")

    def process(self, element, references_by_id):
        (image_id, path, thumbnail), result = element
        caption, log_prob = result.inference
        references = [r for r in references_by_id.get(image_id, []) if r]
        self.captioned.inc()
        if not references:
            self.unreferenced.inc()
        sentence = bleu.sentence_bleu([r.split() for r in references], caption.split()) if references else None
        yield {"image_id": image_id, "path": path, "caption": caption, "log_prob": float(log_prob),
               "references": references, "sentence_bleu": sentence, "thumbnail": thumbnail}


def _dead_letters_from_failed_batches(failed):
    batch, error = failed
    for (image_id, path, _), _ in batch:
        yield inputs.dead_letter(path, f"captioning failed on its batch: {error}", "caption")


def build_pipeline(pipeline: beam.Pipeline, settings: CaptionSettings) -> Dict[str, beam.PCollection]:
    """Adds the caption-and-score graph to `pipeline`; returns its main PCollections (for tests)."""
    inputs = _image_inputs if settings.source == IMAGES else _feature_inputs
    keyed, input_dead, matched, references = inputs(pipeline, settings)

    decoding = settings.config.caption
    decode_args = {"beam_size": decoding.beam_size, "length_penalty": decoding.length_penalty,
                   "max_length": decoding.max_length}
    handler = KeyedModelHandler(CaptionerModelHandler(settings.model, settings.source, decoding.batch_size,
                                                      decode_args, settings.threads))
    captioned, failed = keyed | "Caption" >> RunInference(handler).with_exception_handling()
    rows = captioned | "Rows" >> beam.ParDo(MakeRow(), beam.pvalue.AsDict(references))

    scores = (rows
              | "Scored" >> beam.Filter(lambda row: row["references"])
              | "BleuInputs" >> beam.Map(lambda row: ([r.split() for r in row["references"]], row["caption"].split()))
              | "CorpusBleu" >> beam.CombineGlobally(CorpusBleuFn()))
    dead = ((input_dead, failed.failed_inferences | "FailedBatches" >> beam.FlatMap(_dead_letters_from_failed_batches))
            | "AllDeadLetters" >> beam.Flatten())

    report = (pipeline
              | "ReportTrigger" >> beam.Create([None])
              | "WriteReport" >> beam.Map(
                  outputs.write_all, settings=settings,
                  rows=beam.pvalue.AsList(rows), dead_letters=beam.pvalue.AsList(dead),
                  corpus=beam.pvalue.AsSingleton(scores),
                  matched=beam.pvalue.AsSingleton(matched | "CountMatched" >> beam.combiners.Count.Globally())))
    return {"rows": rows, "dead_letters": dead, "report": report}

