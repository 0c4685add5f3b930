"""The caption job's outputs, as an OutputSpec says, all written by Beam sinks in parallel, and bleu.json last.

    captions-SSSSS-of-NNNNN.jsonl    one row per image (id, path, caption, log-prob, references, sentence
                                     BLEU, CIDEr-D)
    captions-SSSSS-of-NNNNN.parquet  the same rows, PARQUET_SCHEMA (caption.parquet)
    captions-SSSSS-of-NNNNN.csv      id, path, caption, log-prob, sentence BLEU, CIDEr-D (caption.csv)
    coco_results-SSSSS-of-NNNNN.json the captions as the official COCO evaluation reads them (coco_results.py)
    dead_letter-SSSSS-of-NNNNN.jsonl every image that got no caption, with the stage and the reason
    report.html                      the gallery of a bounded sample (sample.py), its images read again from
                                     their paths after the sample (the rows carry none)
    metrics.json                     everything: the field's scores in both tokenizations (scoring.py), what
                                     was skipped and why, counts, the model, the list of every file above
    bleu.json                        nltk BLEU (the project's score since the tutorials), counts, the files

The scores come in computed (scoring.py); this module only writes.

Nothing here collects the rows in one worker: the sinks write shards from every
worker, scores are combines, the gallery a bounded sample. bleu.json is the
commit marker: written after everything else (metrics.json just before it), it names the run's files.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import Dict, List, Optional

import apache_beam as beam
import pyarrow as pa

from captioner import manifest, storage
from captioner.errors import InputError
from captioner.layout import BLEU_JSON, CAPTIONS_PREFIX, COCO_RESULTS_PREFIX, DEAD_LETTER_PREFIX, METRICS_JSON, \
    REPORT_HTML
from pipelines.caption.coco_results import WriteCocoResults
from pipelines.caption.gallery import file_thumbnail, render_gallery
from pipelines.caption.sample import GallerySample
from pipelines.inputs.dead_letters import to_json

EXAMPLES_KEPT = 20
PARQUET_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("path", pa.string()), ("caption", pa.string()), ("log_prob", pa.float64()),
    ("sentence_bleu", pa.float64()), ("cider_d", pa.float64()), ("references", pa.list_(pa.string())),
    ("coco_id", pa.int64())])
CSV_HEADER = ["image_id", "path", "caption", "log_prob", "sentence_bleu", "cider_d"]


def _plain(row: Dict) -> Dict:
    """A row as the files hold it: PARQUET_SCHEMA's columns (coco_id None unless a COCO file gave one)."""
    return {name: row.get(name) for name in PARQUET_SCHEMA.names}


def _score(value) -> str:
    return "" if value is None else f"{value:.6f}"


def _jsonl(row: Dict) -> str:
    return json.dumps(_plain(row), ensure_ascii=False, sort_keys=True)


def _csv_line(row: Dict) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(
        [row["image_id"], row["path"], row["caption"], f"{row['log_prob']:.6f}", _score(row["sentence_bleu"]),
         _score(row["cider_d"])])
    return buffer.getvalue()


def row_id(jsonl_line: str) -> str:
    """The image id of one captions-*.jsonl line (an incremental run's anti-join reads only that)."""
    return json.loads(jsonl_line)["image_id"]


def caption_files(output: str) -> List[str]:
    """The captions-*.jsonl files of a finished caption output, as its bleu.json lists them."""
    path = storage.join(output, BLEU_JSON)
    if not storage.exists(path):
        raise InputError(f"--skip_existing {output} holds no {BLEU_JSON}: it is not a finished caption output; "
                         "point at the --output folder of a caption job that finished")
    summary = json.loads(storage.read_text(path))
    if "files" not in summary:  # an output written before the outputs were sharded
        return [storage.join(output, "captions.jsonl")]
    return [name if storage.is_remote(name) or name.startswith("/") else storage.join(output, name)
            for name in summary["files"]["captions_jsonl"]]


def listed_files(summary: Dict, folder: str) -> List[str]:
    """Every file a finished caption output's bleu.json names (full paths): what --overwrite may delete."""
    if "files" not in summary:  # an output written before the outputs were sharded
        return [storage.join(folder, name) for name in ("captions.jsonl", "captions.csv", REPORT_HTML, METRICS_JSON)]
    names = [name for names in summary["files"].values() for name in names] + [summary.get("gallery", REPORT_HTML)]
    return [name if storage.is_remote(name) or name.startswith("/") else storage.join(folder, name) for name in names]


def identity_of(bundle: Dict) -> Dict:
    """What the report says about the model: decoder and encoder identity."""
    return {"decoder": bundle["decoder"], "encoder": bundle["encoder"]["name"],
            "encoder_sha256": bundle["encoder"]["weights_sha256"]}


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """What WriteOutputs writes: where, in how many shards (0: the runner's choice), which formats, how many
    gallery rows, and whether the gallery shows each row's image (read again from its path: the images path)."""
    folder: str
    num_shards: int = 0
    parquet: bool = True
    csv: bool = True
    gallery_size: int = 60
    thumbnails: bool = False


@dataclasses.dataclass(frozen=True)
class RunFacts:
    """What bleu.json says of the run besides its counts and scores."""
    model: Dict                          # identity_of(bundle)
    decoding: Dict                       # Decoding.to_dict()
    input: str                           # the images, listing, dead letters or features (split) captioned
    skip_existing: List[str] = dataclasses.field(default_factory=list)
    records_listed: Optional[int] = None  # with features: the split's records as the manifest counts them


class WriteOutputs(beam.PTransform):
    """{"rows", "dead_letters", "bleu", "metrics" (scoring.py), "counted": {name: PCollection to count}} -> every
    output file, metrics.json, then bleu.json; returns bleu.json's content."""

    def __init__(self, spec: OutputSpec, facts: RunFacts):
        super().__init__()
        self.spec, self.facts = spec, facts

    def _sink(self, pcoll, label: str, prefix: str, suffix: str, **options):
        path = storage.join(self.spec.folder, prefix)
        if suffix == ".parquet":
            return pcoll | f"Write{label}" >> beam.io.WriteToParquet(
                path, PARQUET_SCHEMA, file_name_suffix=suffix, num_shards=self.spec.num_shards)
        return pcoll | f"Write{label}" >> beam.io.WriteToText(path, file_name_suffix=suffix,
                                                               num_shards=self.spec.num_shards, **options)

    def expand(self, inputs):
        rows, dead, spec, side = inputs["rows"], inputs["dead_letters"], self.spec, beam.pvalue.AsSingleton
        files = {"captions_jsonl": self._sink(rows | "Json" >> beam.Map(_jsonl), "Jsonl", CAPTIONS_PREFIX, ".jsonl"),
                 "dead_letters": self._sink(dead | "DeadJson" >> beam.Map(to_json), "DeadLetters",
                                            DEAD_LETTER_PREFIX, ".jsonl"),
                 "coco_results": rows | "CocoResults" >> WriteCocoResults(
                     storage.join(spec.folder, COCO_RESULTS_PREFIX), spec.num_shards)}
        if spec.parquet:
            files["captions_parquet"] = self._sink(rows | "Plain" >> beam.Map(_plain), "Parquet", CAPTIONS_PREFIX,
                                                   ".parquet")
        if spec.csv:
            files["captions_csv"] = self._sink(rows | "CsvLine" >> beam.Map(_csv_line), "Csv", CAPTIONS_PREFIX, ".csv",
                                               header=",".join(CSV_HEADER))
        counts = {"captioned": rows, "dead_letters": dead, **inputs["counted"]}
        counted = {name: side(pcoll | f"Count{name}" >> beam.combiners.Count.Globally())
                   for name, pcoll in counts.items()}
        examples = side(inputs["counted"]["lines_refused"] | "RefusedExamples" >> beam.combiners.Top.Smallest(
            EXAMPLES_KEPT))
        summary = (rows.pipeline
                   | "SummaryTrigger" >> beam.Create([None])
                   | "Summarize" >> beam.Map(self._summary, corpus=side(inputs["bleu"]), refused_examples=examples,
                                             **counted))
        metrics = side(inputs["metrics"])
        report = (rows
                  | "Gallery" >> GallerySample(spec.gallery_size)
                  | "WriteReport" >> beam.Map(self._write_report, summary=side(summary), metrics=metrics))
        written = {name: beam.pvalue.AsList(pcoll) for name, pcoll in files.items()}
        return (summary
                | "WriteSummary" >> beam.Map(self._write_summary, report=side(report), metrics=metrics, **written))

    def _summary(self, _, corpus: Dict, refused_examples, **counts: int) -> Dict:
        scored = corpus["sentences"]
        return {
            "bleu": corpus["bleu"],
            "bleu_names": ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"],
            "counts": {"images_matched": counts["matched"], "captioned": counts["captioned"],
                       "dead_letters": counts["dead_letters"], "skipped_existing": counts["skipped_existing"],
                       "excluded": counts.get("excluded", 0), "scored": scored,
                       "without_references": counts["captioned"] - scored},
            "names_without_images": counts.get("orphans", 0),
            **({"damaged_shards": {"count": counts["damaged_shards"],
                                   "records_left_out": self.facts.records_listed - counts["matched"]}}
               if "damaged_shards" in counts else {}),
            "reference_lines_refused": {"count": counts["lines_refused"], "examples": sorted(refused_examples)},
            "model": self.facts.model,
            "decoding": self.facts.decoding,
            "input": self.facts.input,
            "skip_existing": list(self.facts.skip_existing),
            "hypothesis_length": corpus["hypothesis_length"],
            "reference_length": corpus["reference_length"],
        }

    def _write_report(self, rows: List[Dict], summary: Dict, metrics: Dict) -> str:
        """report.html of the sampled rows, with their images when the spec asks (read now, for these rows only)."""
        if self.spec.thumbnails:
            rows = [dict(row, thumbnail=file_thumbnail(row["path"])) for row in rows]
        storage.write_text(storage.join(self.spec.folder, REPORT_HTML), render_gallery(rows, summary, metrics))
        return REPORT_HTML

    def _write_summary(self, summary: Dict, report: str, metrics: Dict, **files: List[str]) -> Dict:
        """metrics.json (everything), then bleu.json: the marker that the run finished, listing its files."""
        out = self.spec.folder
        listed = {name: sorted(manifest.relative_to(out, path) for path in paths) for name, paths in files.items()}
        summary = dict(summary, gallery=report, files=dict(listed, metrics=[METRICS_JSON]))
        storage.write_text(storage.join(out, METRICS_JSON), json.dumps(dict(summary, **metrics), indent=2,
                                                                       sort_keys=True) + "\n")
        storage.write_text(storage.join(out, BLEU_JSON), json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return summary
