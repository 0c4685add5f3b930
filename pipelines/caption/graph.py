"""The caption-and-score pipeline graph: images (or extracted features) -> captions, scores, a gallery.

    images:   glob | listing | dead letters -> join references and the include list by name (CoGroupByKey)
              -> [drop images an earlier output has] -> decode (dead letters) -> RunInference(encoder + search)
    features: the split's shards, as the manifest lists them (references come with the records)
              -> [drop images an earlier output has] -> RunInference(search)
    -> rows (ids, paths, captions, raw references: no pixels) -> scores (scoring.py: references cleaned once,
       sentence BLEU and CIDEr-D per row, bleu.json's and metrics.json's corpus scores from one combine)
    -> what an OutputSpec asks (outputs.py): sharded JSONL / Parquet / CSV, COCO results, a gallery of a bounded
       sample (its images read again from their paths), metrics.json, bleu.json last

No per-image data is a side input: memory per worker stays flat in the number of images.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from captioner import manifest, schema
from captioner.config import Config
from captioner.decoder.decoding import Decoding
from captioner.input_files import listings
from pipelines import progress
from pipelines.caption import outputs
from pipelines.caption.captioner_handler import FEATURES, IMAGES, CaptionerModelHandler
from pipelines.caption.scoring import ScoreCaptions
from pipelines.inputs import joins
from pipelines.inputs import sources as read
from pipelines.inputs.dead_letters import DEAD_LETTER, NAMESPACE, dead_letter
from pipelines.inputs.decode import DecodeImages
from pipelines.inputs.shards import DAMAGED, ReadShards


@dataclasses.dataclass
class CaptionSettings:
    model: str                      # the trainer's export folder
    output: str
    bundle: Dict                    # bundle.json of the export
    config: Config = dataclasses.field(default_factory=Config)  # decoding and outputs (caption), max_pixels
    images: Optional[str] = None    # a glob
    image_list: Optional[str] = None
    retry_dead_letters: Optional[str] = None
    features: Optional[str] = None  # a features folder (the fast path) ...
    features_manifest: Optional[Dict] = None  # ... and its manifest, read and checked by the entry point
    split: str = "test"
    skip_damaged_shards: bool = False  # go on past a features shard that fails its checks, counting what it held
    references: Optional[str] = None
    include: Optional[str] = None   # a file of the names (or ids) to caption; None: every image
    key_scheme: str = listings.BY_NAME  # what the references and include files key images by
    skip_existing: List[str] = dataclasses.field(default_factory=list)  # earlier output folders
    threads: Optional[int] = None   # per worker, for the encoder and the decoder (None: all cores)

    @property
    def source(self) -> str:
        return FEATURES if self.features else IMAGES


def _first(values):
    """The COCO id a join found for an image (the smallest, should files disagree), or None."""
    return min(values) if values else None


def _image_inputs(pipeline, settings: CaptionSettings):
    """Images with their references: (id, path, raw references, COCO id), what the join refused, and the matched
    images."""
    images, listed_refs, refused = read.read_images(pipeline, settings.image_list, settings.retry_dead_letters,
                                                    settings.images)
    data, scheme = {}, settings.key_scheme
    if settings.references:
        pairs = pipeline | "References" >> read.ReadCaptionPairs(settings.references)
        data["references"] = pairs["pairs"]
        refused.append(pairs[read.BAD_LINES])
        if pairs["coco_ids"] is not None:
            data["coco_id"] = pairs["coco_ids"]
    elif listed_refs is not None:
        data["references"], scheme = listed_refs, listings.BY_ID
    if settings.include:
        data["include"] = pipeline | "Include" >> read.ReadNames(settings.include, True)
    if not data:
        return (images | "NoData" >> beam.Map(lambda image: (image[0], image[1], (), None))
                | "Spread" >> beam.Reshuffle(),
                {}, images, refused)
    joined = images | "JoinByName" >> joins.JoinByName(
        scheme, ambiguous_tags=("references",) if "references" in data else (),
        required="include" if settings.include else None, **data)
    with_refs = joined.images | "RawReferences" >> beam.Map(lambda e: (e[0], e[1], tuple(
        sorted(r for r in e[2].get("references", []) if r.strip())), _first(e[2].get("coco_id"))))
    return with_refs, {"dead": joined[DEAD_LETTER], "excluded": joined[joins.EXCLUDED],
                       "orphans": joined[joins.ORPHANS]}, images, refused


def _feature_records(pipeline, settings: CaptionSettings):
    """(the split's stored records as (id, path, raw references, COCO id, stored features) in the dtype stored,
    the damaged shards left out)."""
    info = settings.features_manifest["features"]
    files = manifest.shard_files(settings.features_manifest, settings.features, settings.split)
    read = (pipeline
            | "Shards" >> beam.Create(files)
            | "ReadRecords" >> ReadShards(settings.skip_damaged_shards))
    records = (read.records
               | "Parse" >> beam.Map(schema.parse_example_py)
               | "Record" >> beam.Map(lambda r: (
                   r["image_id"], r["image_path"], tuple(c for c in r["raw_captions"] if c), r["coco_id"],
                   {name: schema.array_from_bytes(r[name], info[name]) for name in info if r[name] is not None})))
    return records, read[DAMAGED]


class MakeRow(beam.DoFn):
    """((id, path, raw references, COCO id), (caption, log-prob)) -> a caption row: ids, path, texts, no image.

    Scoring (scoring.py) cleans the references and scores the row; the gallery reads its few images again from
    their paths, so no pixels travel through the job's shuffles.
    """

    def __init__(self):
        self.captioned = Metrics.counter(NAMESPACE, "images_captioned")
        self.unreferenced = Metrics.counter(NAMESPACE, "images_without_references")

    def process(self, element):
        (image_id, path, raw_references, coco_id), result = element
        caption, log_prob = result.inference
        self.captioned.inc()
        if not raw_references:
            self.unreferenced.inc()
        yield {"image_id": image_id, "path": path, "caption": caption, "log_prob": float(log_prob),
               "raw_references": list(raw_references), "coco_id": coco_id}


def _previous_ids(pipeline, settings: CaptionSettings):
    files = [path for folder in settings.skip_existing for path in outputs.caption_files(folder)]
    return (pipeline
            | "PreviousOutputs" >> beam.Create(files)
            | "ReadPrevious" >> beam.io.ReadAllFromText()
            | "PreviousIds" >> beam.Map(lambda line: outputs.row_id(line)))


def _outputs(settings: CaptionSettings):
    """(what the job writes, the run's facts for bleu.json)."""
    cfg = settings.config.caption
    spec = outputs.OutputSpec(settings.output, cfg.num_shards, cfg.parquet, cfg.csv, cfg.gallery_size,
                              thumbnails=settings.source == IMAGES)
    features = settings.features_manifest
    facts = outputs.RunFacts(
        outputs.identity_of(settings.bundle), Decoding.from_config(cfg).to_dict(),
        settings.images or settings.image_list or settings.retry_dead_letters
        or f"{settings.features} ({settings.split})", list(settings.skip_existing),
        features["counts"][settings.split] if features else None)
    return spec, facts


def build_pipeline(pipeline: beam.Pipeline, settings: CaptionSettings) -> Dict[str, beam.PCollection]:
    """Adds the caption-and-score graph to `pipeline`; returns its main PCollections (for tests)."""
    decoding, dead, refused = settings.config.caption, [], []
    if settings.source == IMAGES:
        todo, refusals, matched, refused = _image_inputs(pipeline, settings)
        dead += [refusals["dead"]] if refusals else []
    else:
        todo, damaged = _feature_records(pipeline, settings)
        matched, refusals = todo, {"damaged_shards": damaged}
    skipped = pipeline | "NothingSkipped" >> beam.Create([])
    if settings.skip_existing:
        kept = todo | "SkipExisting" >> joins.DropExisting(_previous_ids(pipeline, settings))
        todo, skipped = kept.images, kept[joins.SKIPPED]
    if settings.source == IMAGES:
        decoded = todo | "DecodeImages" >> DecodeImages(settings.bundle["encoder"]["input_size"],
                                                        settings.config.extract.max_pixels)
        dead.append(decoded[DEAD_LETTER])
        keyed = decoded.images | "KeyImages" >> beam.Map(lambda e: ((e[0], e[1], e[2], e[3]), e[4]))
    else:
        keyed = todo | "KeyRecords" >> beam.Map(lambda e: ((e[0], e[1], e[2], e[3]), e[4]))

    handler = KeyedModelHandler(CaptionerModelHandler(settings.model, settings.source, decoding.batch_size,
                                                      Decoding.from_config(decoding), settings.threads,
                                                      decoding.share_model, decoding.model_copies))
    captioned, failed = keyed | "Caption" >> RunInference(handler).with_exception_handling()
    dead.append(failed.failed_inferences | "FailedBatches" >> beam.FlatMap(
        lambda failure: [dead_letter(key[0], key[1], f"captioning failed on its batch: {failure[1]}", "caption")
                         for key, _ in failure[0]]))
    rows = (captioned
            | "Progress" >> progress.LogProgress("caption", "images captioned")
            | "Rows" >> beam.ParDo(MakeRow()))
    scored = rows | "Score" >> ScoreCaptions(manifest.cleaning_of(settings.bundle), decoding.meteor,
                                             decoding.field_scores)
    dead_letters = dead | "AllDeadLetters" >> beam.Flatten()
    counted = {"matched": matched, "skipped_existing": skipped, **{name: refusals[name] for name in
                                                                   ("excluded", "orphans", "damaged_shards")
                                                                   if name in refusals},
               "lines_refused": (refused or [pipeline | "NoRefusedLines" >> beam.Create([])])
               | "Refused" >> beam.Flatten()}
    written = ({"rows": scored["rows"], "dead_letters": dead_letters, "bleu": scored["bleu"],
                "metrics": scored["metrics"], "counted": counted} | "Outputs" >> outputs.WriteOutputs(*_outputs(settings)))
    return {"rows": scored["rows"], "dead_letters": dead_letters, "summary": written}
