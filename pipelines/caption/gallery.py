"""The caption report: one self-contained, sortable `report.html`.

Sorting: click a column header, use the select, or open the page with
`#sort=bleu:asc` (fields index, logprob, bleu, cider, id; asc or desc) in the URL.

Image ids, captions and references come from user files and models, so all of
it is untrusted: every value is escaped with `html.escape(quote=True)`, in text
and in attributes alike, and an image source is used only when it is an inline
raster `data:image/...` URI or a plain relative path. As a second line of
defence the page carries a Content-Security-Policy that allows only its own
inline style and script (by hash): should an injected tag ever slip through,
the browser still refuses to run it. The sorting script moves rows around and
never writes markup.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
from html import escape
from typing import Iterable, List, Mapping, Optional

import numpy as np

from captioner import images
from captioner.metrics import report

_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]*\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_CSS = """
:root { --ink: #1f2328; --muted: #656d76; --line: #d8dee4; --accent: #0969da; --card: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink); background: #fff; }
h1 { font-size: 22px; margin: 0 0 16px; }
h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); margin: 0 0 8px; }
.top { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 16px; margin-bottom: 20px; }
.panel { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
.scores { display: flex; gap: 20px; }
.score b { display: block; font-size: 26px; font-variant-numeric: tabular-nums; }
.score span, .muted { color: var(--muted); font-size: 13px; }
dl { display: grid; grid-template-columns: auto auto; gap: 2px 12px; margin: 0; font-size: 13px; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; max-width: 40em; }
.controls { display: flex; align-items: center; gap: 12px; margin: 0 0 8px; font-size: 14px; }
select { font: inherit; padding: 3px 6px; }
table { border-collapse: collapse; width: 100%; }
th { position: sticky; top: 0; background: #fff; text-align: left; white-space: nowrap; font-size: 13px; border-bottom: 2px solid var(--line); padding: 6px 8px; }
th.num { text-align: right; }
th button { font: inherit; font-weight: 600; color: var(--accent); background: none; border: 0; padding: 0; cursor: pointer; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
td { border-bottom: 1px solid var(--line); padding: 8px; vertical-align: top; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; text-align: right; }
td.id { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; overflow-wrap: anywhere; max-width: 16em; }
td.caption { font-size: 16px; font-weight: 500; max-width: 24em; }
td.refs ul { margin: 0; padding-left: 18px; color: var(--muted); font-size: 13px; }
img.thumb, .nothumb { display: block; max-width: 128px; max-height: 128px; border-radius: 4px; }
.nothumb { width: 96px; height: 72px; background: var(--card); border: 1px dashed var(--line); color: var(--muted); font-size: 12px; display: flex; align-items: center; justify-content: center; }
.empty { padding: 24px; text-align: center; color: var(--muted); }
"""

_JS = """
(function () {
  var body = document.getElementById("rows");
  var select = document.getElementById("sort");
  var status = document.getElementById("sort-status");
  var headers = document.querySelectorAll("th[data-field]");
  var names = {logprob: "log-prob", bleu: "sentence BLEU", cider: "CIDEr-D", id: "image id", index: "input order"};
  function value(row, field) {
    var raw = row.getAttribute("data-" + field);
    if (field === "id") { return raw; }
    var number = parseFloat(raw);
    return isNaN(number) ? null : number;
  }
  function sortBy(field, direction) {
    var rows = Array.prototype.slice.call(body.rows);
    var sign = direction === "desc" ? -1 : 1;
    rows.sort(function (a, b) {
      var x = value(a, field), y = value(b, field);
      if (x === null || y === null) {
        if (x !== y) { return x === null ? 1 : -1; }  /* missing values last, either way */
      } else if (x < y) { return -sign; } else if (x > y) { return sign; }
      return value(a, "index") - value(b, "index");
    });
    rows.forEach(function (row) { body.appendChild(row); });
    headers.forEach(function (th) {
      th.setAttribute("aria-sort", th.getAttribute("data-field") === field ? (sign > 0 ? "ascending" : "descending") : "none");
    });
    select.value = field + ":" + direction;
    status.textContent = rows.length + " images, sorted by " + names[field] +
      (field === "index" ? "" : (sign > 0 ? " (ascending)" : " (descending)"));
  }
  select.addEventListener("change", function () {
    var parts = select.value.split(":");
    sortBy(parts[0], parts[1]);
  });
  headers.forEach(function (th) {
    th.querySelector("button").addEventListener("click", function () {
      var field = th.getAttribute("data-field");
      var current = th.getAttribute("aria-sort");
      var first = field === "id" ? "asc" : "desc";
      sortBy(field, current === "descending" ? "asc" : current === "ascending" ? "desc" : first);
    });
  });
  var wanted = /^#sort=(index|logprob|bleu|cider|id):(asc|desc)$/.exec(window.location.hash);
  sortBy(wanted ? wanted[1] : "index", wanted ? wanted[2] : "asc");
})();
"""


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


_CSP = (f"default-src 'none'; img-src data: 'self'; style-src {_csp_hash(_CSS)}; "
        f"script-src {_csp_hash(_JS)}; base-uri 'none'; form-action 'none'")


def _e(value) -> str:
    return escape(str(value), quote=True)


def safe_thumbnail(src: Optional[str]) -> Optional[str]:
    """`src` if it is an inline raster image or a plain relative path, else None.

    Rejects every scheme but `data:image/` (so `javascript:`, `http:`, `file:`),
    absolute and protocol-relative paths, and control characters (which
    browsers strip, so "java\\tscript:" would otherwise be a scheme).
    """
    if not isinstance(src, str) or not src:
        return None
    if _DATA_IMAGE.match(src):
        return src
    if _CONTROL.search(src) or src.lstrip() != src or "javascript:" in src.lower():
        return None
    first_segment = re.split(r"[/?#]", src, maxsplit=1)[0]
    if ":" in first_segment or src.startswith(("/", "\\")) or "\\" in src:
        return None
    return src


def thumbnail_data_uri(image: np.ndarray, max_side: int = 128) -> str:
    """A small JPEG of an HxWx3 uint8 image as a `data:image/jpeg;base64,` URI."""
    from PIL import Image

    picture = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def file_thumbnail(path: str, max_side: int = 128) -> Optional[str]:
    """`thumbnail_data_uri` of the image file at `path` (local or gs://), or None when it cannot be read now:
    the gallery reads its few sampled images again rather than every row carrying one."""
    from apache_beam.io.filesystems import FileSystems
    from PIL import Image, ImageOps

    try:
        with FileSystems.open(path) as handle, Image.open(io.BytesIO(handle.read())) as picture:
            picture.draft("RGB", (max_side, max_side))  # JPEG: decode at the smallest scale still >= max_side
            return thumbnail_data_uri(np.asarray(images.to_rgb(ImageOps.exif_transpose(picture))), max_side)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _number(value, digits: int, scale: float = 1.0) -> str:
    if value is None or not math.isfinite(float(value)):
        return "\u2014"
    return f"{float(value) * scale:.{digits}f}"


def _data_number(value) -> str:
    return "" if value is None or not math.isfinite(float(value)) else repr(float(value))


def _details(mapping: Optional[Mapping]) -> str:
    if not mapping:
        return '<p class="muted">none</p>'
    items = []
    for key, value in mapping.items():
        shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        items.append(f"<dt>{_e(key)}</dt><dd>{_e(shown)}</dd>")
    return "<dl>" + "".join(items) + "</dl>"


def _scores(bleu: Optional[List[float]]) -> str:
    if not bleu:
        return '<p class="muted">no references: corpus BLEU not computed</p>'
    cells = "".join(f'<div class="score"><b>{_number(b, 2, 100)}</b><span>BLEU-{n}</span></div>'
                    for n, b in enumerate(bleu, start=1))
    return f'<div class="scores">{cells}</div><p class="muted">corpus BLEU &times; 100, unsmoothed</p>'


_FIELD_SCORES = ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D")  # of report.NAMES, what papers' tables show


def _field_scores(metrics: Optional[Mapping]) -> str:
    """metrics.json's corpus scores, one row per tokenization, x 100 as papers print them."""
    tokenizations = (metrics or {}).get("tokenizations") or {}
    scored = {name: tokenizations[name]["scores"] for name in report.TOKENIZATIONS
              if (tokenizations.get(name) or {}).get("scores")}
    if not scored:
        return '<p class="muted">no references: not computed</p>'
    head = "".join(f"<th class=\"num\">{_e(n)}</th>" for n in _FIELD_SCORES)
    body = "".join(f"<tr><td>{_e(tokenization)}</td>" + "".join(
        f'<td class="num">{_number(scores.get(n), 1, 100)}</td>' for n in _FIELD_SCORES) + "</tr>"
        for tokenization, scores in scored.items())
    skipped = ", ".join(sorted((metrics or {}).get("skipped") or {}))
    return (f"<table><thead><tr><th>tokenization</th>{head}</tr></thead><tbody>{body}</tbody></table>"
            f'<p class="muted">corpus scores &times; 100 (metrics.json){"; skipped: " + _e(skipped) if skipped else ""}'
            "</p>")


def _row(index: int, row: Mapping) -> str:
    image_id = row.get("image_id", "")
    thumb = safe_thumbnail(row.get("thumbnail"))
    if thumb:
        lazy = "" if thumb.startswith("data:") else ' loading="lazy"'
        picture = f'<img class="thumb" src="{_e(thumb)}" alt="{_e(image_id)}"{lazy}>'
    else:
        picture = '<div class="nothumb">no image</div>'
    references = row.get("references") or []
    refs = ("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in references) + "</ul>") if references \
        else '<span class="muted">no references</span>'
    log_prob, sentence_bleu, cider_d = row.get("log_prob"), row.get("sentence_bleu"), row.get("cider_d")
    return (
        f'<tr data-index="{index}" data-id="{_e(image_id)}" data-logprob="{_data_number(log_prob)}" '
        f'data-bleu="{_data_number(sentence_bleu)}" data-cider="{_data_number(cider_d)}">'
        f"<td>{picture}</td><td class=\"id\">{_e(image_id)}</td>"
        f'<td class="caption">{_e(row.get("caption", ""))}</td>'
        f'<td class="num">{_number(log_prob, 3)}</td><td class="refs">{refs}</td>'
        f'<td class="num">{_number(sentence_bleu, 1, 100)}</td><td class="num">{_number(cider_d, 1, 100)}</td></tr>'
    )


def render_gallery(rows: Iterable[Mapping], summary: Mapping, metrics: Optional[Mapping] = None) -> str:
    """The whole report as one HTML string: scores, counts and model on top, then one row per image.

    `metrics` is metrics.json's content (the field's scores); without it that panel says none were computed.
    """
    rows = list(rows)
    body = "".join(_row(i, row) for i, row in enumerate(rows)) or \
        '<tr><td colspan="7" class="empty">no images</td></tr>'
    options = "".join(f'<option value="{v}">{label}</option>' for v, label in [
        ("index:asc", "input order"), ("logprob:desc", "log-prob, high first"), ("logprob:asc", "log-prob, low first"),
        ("bleu:desc", "sentence BLEU, high first"), ("bleu:asc", "sentence BLEU, low first"),
        ("cider:desc", "CIDEr-D, high first"), ("cider:asc", "CIDEr-D, low first"), ("id:asc", "image id")])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Caption report</title>
<style>{_CSS}</style></head>
<body>
<h1>Caption report</h1>
<div class="top">
<section class="panel"><h2>Corpus BLEU</h2>{_scores(summary.get("bleu"))}</section>
<section class="panel"><h2>The field's scores</h2>{_field_scores(metrics)}</section>
<section class="panel"><h2>Counts</h2>{_details(summary.get("counts"))}</section>
<section class="panel"><h2>Model</h2>{_details(summary.get("model"))}</section>
</div>
<div class="controls"><label for="sort">Sort by</label><select id="sort">{options}</select>
<span id="sort-status" class="muted" aria-live="polite">{len(rows)} images</span></div>
<table id="captions"><thead><tr><th>Image</th>
<th data-field="id" aria-sort="none"><button type="button">Image id</button></th><th>Caption</th>
<th class="num" data-field="logprob" aria-sort="none"><button type="button">Log-prob</button></th><th>References</th>
<th class="num" data-field="bleu" aria-sort="none"><button type="button">Sentence BLEU</button></th>
<th class="num" data-field="cider" aria-sort="none"><button type="button">CIDEr-D</button></th></tr></thead>
<tbody id="rows">{body}</tbody></table>
<script>{_JS}</script>
</body></html>
"""
