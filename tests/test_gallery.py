"""The HTML report escapes everything it is given, sorts, and renders in real Chromium."""
import base64
import hashlib
import io
import os
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from pipelines.caption.gallery import render_gallery, safe_thumbnail, thumbnail_data_uri
from tools import screenshot_gallery

XSS_ID = "<img src=x onerror=alert(1)>.jpg"
QUOTE_ID = '" onmouseover="alert(2)" x=".jpg'
METRICS = {"tokenizations": {"project": {"scores": {"BLEU-1": 0.6012, "BLEU-4": 0.1791, "METEOR": None,
                                                  "ROUGE-L": 0.4455, "CIDEr-D": 0.4321}},
                              "coco": {"skipped": "java not found"}},
           "skipped": {"METEOR": "java not found", "SPICE": "no models"}}
SUMMARY = {
    "bleu": [0.6012, 0.4111, 0.2744, 0.1791],
    "counts": {"images": 4, "with_references": 3, "dead_letter": 1},
    "model": {"encoder": "mobilenet_v1 <b>", "weights_sha256": "ab12cd34", "decoder": {"kind": "merge", "units": 256}},
}


def picture(seed, height=200, width=300):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x + 40 * seed) % 256, (2 * y) % 256, ((x + y) // 2 + 70 * seed) % 256], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def rows():
    return [
        {"image_id": XSS_ID, "caption": "<script>alert('caption')</script> a dog runs", "log_prob": -7.25,
         "references": ["a dog runs on the grass", "<script>alert('ref')</script>"], "sentence_bleu": 0.4213,
         "cider_d": 0.9, "thumbnail": thumbnail_data_uri(picture(1))},
        {"image_id": QUOTE_ID, "caption": "a child in a pink dress is climbing up a set of stairs", "log_prob": -5.1,
         "references": ["a child in pink dress climbing stairs"], "sentence_bleu": 0.31,
         "cider_d": 1.734, "thumbnail": thumbnail_data_uri(picture(2))},
        {"image_id": "no_refs.jpg", "caption": "two dogs play", "log_prob": -3.0, "references": [],
         "sentence_bleu": None, "thumbnail": "javascript:alert(1)"},
        {"image_id": "plain.jpg", "caption": "a man rides a bike", "log_prob": -9.0, "references": ["a man on a bike"],
         "sentence_bleu": 0.05, "cider_d": 0.2, "thumbnail": None},
    ]


class Elements(HTMLParser):
    """Every start tag with its (unescaped) attributes, plus the text of script and style elements."""

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.tags, self.raw, self._open = [], {"script": [], "style": []}, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._open = tag if tag in self.raw else None

    def handle_endtag(self, tag):
        self._open = None

    def handle_data(self, data):
        if self._open:
            self.raw[self._open].append(data)

    def named(self, tag):
        return [attrs for name, attrs in self.tags if name == tag]


def test_xss_image_id_is_text_not_markup(rows):
    html = render_gallery(rows, SUMMARY)
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in html
    parsed = Elements(html)
    assert all(not key.startswith("on") for _, attrs in parsed.tags for key in attrs), "no event handler attributes"
    images = parsed.named("img")
    assert len(images) == 2 and all(img["src"].startswith("data:image/") for img in images)
    # In attributes the ids survive as values (escaped), never as new attributes.
    assert {img["alt"] for img in images} == {XSS_ID, QUOTE_ID}
    assert {tr["data-id"] for tr in parsed.named("tr") if "data-id" in tr} == {XSS_ID, QUOTE_ID, "no_refs.jpg", "plain.jpg"}


def test_scripts_in_captions_and_references_are_escaped(rows):
    html = render_gallery(rows, SUMMARY)
    parsed = Elements(html)
    assert len(parsed.named("script")) == 1, "only the page's own sorting script"
    assert "&lt;script&gt;alert(&#x27;caption&#x27;)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(&#x27;ref&#x27;)&lt;/script&gt;" in html
    assert "mobilenet_v1 &lt;b&gt;" in html and len(parsed.named("b")) == 4, "only the four score figures are bold"


def test_page_is_self_contained_and_its_policy_allows_exactly_its_own_code(rows):
    html = render_gallery(rows, SUMMARY)
    parsed = Elements(html)
    assert not parsed.named("link") and all("src" not in s for s in parsed.named("script"))
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    policy = next(m["content"] for m in parsed.named("meta") if m.get("http-equiv") == "Content-Security-Policy")
    for kind in ("script", "style"):
        (source,) = parsed.raw[kind]
        digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
        assert f"{kind}-src 'sha256-{digest}'" in policy


@pytest.mark.parametrize("src", [
    "javascript:alert(1)", "JavaScript:alert(1)", " javascript:alert(1)", "java\tscript:alert(1)",
    "http://evil.example/x.png", "//evil.example/x.png", "/etc/passwd", "file:///etc/passwd", "C:\\x.png",
    "data:text/html;base64,PHNjcmlwdD4=", "data:image/svg+xml;base64,PHN2Zz4=", "data:image/png;base64,\"><x",
    "thumbs/javascript:x.png", "", None, 42,
])
def test_unsafe_thumbnails_are_dropped(src):
    assert safe_thumbnail(src) is None
    html = render_gallery([{"image_id": "a.jpg", "caption": "c", "log_prob": -1.0, "references": [],
                            "sentence_bleu": None, "thumbnail": src}], SUMMARY)
    assert not Elements(html).named("img") and "no image" in html


@pytest.mark.parametrize("src", ["thumbs/a.jpg", "a b.jpg", "../thumbs/x:y.jpg", "data:image/jpeg;base64,/9j/4AAQ"])
def test_safe_thumbnails_are_kept(src):
    assert safe_thumbnail(src) == src


def test_sort_controls_exist(rows):
    parsed = Elements(render_gallery(rows, SUMMARY))
    (select,) = parsed.named("select")
    assert select["id"] == "sort"
    values = {o["value"] for o in parsed.named("option")}
    assert {"logprob:desc", "logprob:asc", "bleu:desc", "bleu:asc", "cider:desc", "cider:asc"} <= values
    assert {th["data-field"] for th in parsed.named("th") if "data-field" in th} == {"id", "logprob", "bleu", "cider"}
    assert len(parsed.named("button")) == 4


def test_scores_counts_and_model_appear(rows):
    html = render_gallery(rows, SUMMARY)
    for text in ("60.12", "41.11", "27.44", "17.91", "BLEU-4", "42.1", "-7.250", "dead_letter", "ab12cd34",
                 "{&quot;kind&quot;: &quot;merge&quot;, &quot;units&quot;: 256}"):
        assert text in html
    row = next(tr for tr in Elements(html).named("tr") if tr.get("data-id") == "no_refs.jpg")
    assert row["data-bleu"] == "" and row["data-cider"] == "" and row["data-logprob"] == "-3.0"
    assert "173.4" in html  # a row's CIDEr-D, x 100


def test_the_fields_scores_appear_with_what_was_skipped(rows):
    html = render_gallery(rows, SUMMARY, METRICS)
    for text in ("44.5", "43.2", "METEOR", "skipped: METEOR, SPICE"):
        assert text in html
    assert "coco" not in html.split("The field's scores")[1].split("</section>")[0]  # skipped: no row for it
    assert "not computed" in render_gallery(rows, SUMMARY)


def test_empty_report_renders():
    html = render_gallery([], {"bleu": None, "counts": {}, "model": {}})
    parsed = Elements(html)
    assert "no images" in html and "corpus BLEU not computed" in html
    assert parsed.named("select") and not parsed.named("img")


def test_thumbnail_data_uri_is_a_small_jpeg():
    uri = thumbnail_data_uri(picture(0, height=200, width=300), max_side=128)
    assert uri.startswith("data:image/jpeg;base64,") and safe_thumbnail(uri) == uri
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.format == "JPEG" and image.size == (128, 85)


def test_missing_chromium_is_a_clear_error(tmp_path, monkeypatch, capsys):
    report = tmp_path / "report.html"
    report.write_text(render_gallery([], {}))
    monkeypatch.setattr(screenshot_gallery.shutil, "which", lambda name: None)
    assert screenshot_gallery.main([str(report), str(tmp_path / "out.png")]) == 1
    assert "Chromium not found" in capsys.readouterr().err


# Outside CI a missing Chromium skips; under CI=true .ci/run installs it, so a missing one fails the tests.
needs_chromium = pytest.mark.skipif(screenshot_gallery.find_chromium() is None and os.environ.get("CI") != "true",
                                    reason="Chromium is not installed (apt-get install chromium)")


@pytest.mark.slow
@needs_chromium
def test_screenshot_in_headless_chromium(rows, tmp_path):
    report = tmp_path / "report.html"
    report.write_text(render_gallery(rows, SUMMARY), encoding="utf-8")
    out = tmp_path / "shots" / "report.png"
    assert screenshot_gallery.main([str(report), str(out), "--width", "1024", "--height", "700"]) == 0
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (1024, 700)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 10, "the screenshot is blank"


@pytest.mark.slow
@needs_chromium
def test_sorting_script_runs_in_chromium(rows, tmp_path):
    report = tmp_path / "report.html"
    report.write_text(render_gallery(rows, SUMMARY), encoding="utf-8")
    dom = screenshot_gallery.run_chromium(["--dump-dom"], report.resolve().as_uri() + "#sort=logprob:desc",
                                          1024, 700, timeout_s=60)
    parsed = Elements(dom)
    order = [tr["data-id"] for tr in parsed.named("tr") if "data-id" in tr]
    assert order == ["no_refs.jpg", QUOTE_ID, XSS_ID, "plain.jpg"]
    assert "sorted by log-prob (descending)" in dom
    assert all(not key.startswith("on") for _, attrs in parsed.tags for key in attrs)
    dom = screenshot_gallery.run_chromium(["--dump-dom"], report.resolve().as_uri() + "#sort=bleu:asc",
                                          1024, 700, timeout_s=60)
    order = [tr["data-id"] for tr in Elements(dom).named("tr") if "data-id" in tr]
    assert order == ["plain.jpg", QUOTE_ID, XSS_ID, "no_refs.jpg"], "missing BLEU sorts last"
    dom = screenshot_gallery.run_chromium(["--dump-dom"], report.resolve().as_uri() + "#sort=cider:desc",
                                          1024, 700, timeout_s=60)
    order = [tr["data-id"] for tr in Elements(dom).named("tr") if "data-id" in tr]
    assert order == [QUOTE_ID, XSS_ID, "plain.jpg", "no_refs.jpg"] and "sorted by CIDEr-D (descending)" in dom
