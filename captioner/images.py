"""Decoding and validating one image: the single implementation both Beam pipelines use.

A file either becomes a uint8 RGB array of the encoder's size or raises
`ImageRejected` with a short reason for the dead-letter output, so one bad file
never takes a batch down. The format is sniffed from the bytes (Flickr-style
folders hold PNGs, GIFs and HTML error pages saved as `.jpg`), the pixel count
is checked from the header before any pixel is decoded (decompression bombs),
and files are fully loaded, so a truncated file is rejected rather than half
decoded (this relies on Pillow's `ImageFile.LOAD_TRUNCATED_IMAGES` staying
False, its default; nothing here changes Pillow's global settings).

Resizing uses Pillow's BILINEAR filter, which, when shrinking, widens its
support like an antialiasing filter (unlike `tf.image.resize`'s bilinear);
images already at the target size (the real dataset's 224x224) are not resized.
"""
from __future__ import annotations

import io
import os
import posixpath
import re
from typing import Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats a photo collection plausibly holds; Pillow's rarer plugins (TGA, PCX,
# SPIDER...) accept almost any bytes and are a needless attack surface here.
_ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "DIB", "TIFF", "AVIF")

# Magic numbers, only to word the reason when Pillow cannot read a header.
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"),
    (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)
KEPT_JPEG_QUALITY = 90  # extract.keep_images: fine enough that the encoder sees what it saw, ~19 KB at 224x224
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


class ImageRejected(ValueError):
    """A file that cannot become an image; `reason` is short and stable enough to count in reports."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def image_id(path: str) -> str:
    """The file's base name, exactly as the Flickr8k caption files key captions (case, spaces, unicode kept)."""
    name = posixpath.basename(path) if "://" in path else os.path.basename(path)
    if not name:
        raise ValueError(f"path {path!r} ends in a separator: it names no file")
    return name


def _allowed_formats() -> Tuple[str, ...]:
    Image.init()
    return tuple(name for name in _ALLOWED_FORMATS if name in Image.OPEN)


def _unidentified_reason(data: bytes) -> str:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<"):
        return "not an image (HTML?)"
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return f"truncated or corrupt: unreadable {name} header"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "truncated or corrupt: unreadable WEBP header"
    return "not an image (unknown format)"


def _bomb_reason(error: Exception, max_pixels: int) -> str:
    """Pillow's own bomb guard fired before the header size was ours to read; its message has the count."""
    found = _BOMB_PIXELS.search(str(error))
    pixels = found.group(1) if found else "?"
    return f"too many pixels: {pixels} > limit {max_pixels} (Pillow: {type(error).__name__})"


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Identifies the format and checks the header's size; no pixel data is decoded yet."""
    if not data:
        raise ImageRejected("empty file")
    try:
        image = Image.open(io.BytesIO(data), formats=_allowed_formats())
    except UnidentifiedImageError:
        raise ImageRejected(_unidentified_reason(data)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageRejected(_bomb_reason(error, max_pixels)) from None
    except Exception as error:  # noqa: BLE001 - a plugin that knows the format but not this header
        raise ImageRejected(f"truncated or corrupt: {error}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageRejected(f"empty image: {width}x{height}")
    if width * height > max_pixels:
        raise ImageRejected(f"too many pixels: {width}x{height} > limit {max_pixels}")
    return image


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit grey (and mode I, which PNG and TIFF decoders use for it) scaled to 8 bit, not clipped."""
    values = np.asarray(image).astype(np.float32)
    grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB")


def _float_to_rgb(image: Image.Image) -> Image.Image:
    """Mode F: taken as 0..1 when it fits, else as 0..255."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float32))
    if values.size and values.max() <= 1.0:
        values = values * 255.0
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited over white."""
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image)
    if image.mode == "F":
        return _float_to_rgb(image)
    if image.has_transparency_data:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_image(data: bytes, size: Tuple[int, int], max_pixels: int = 50_000_000) -> np.ndarray:
    """Encoded bytes -> uint8 array `[size[0], size[1], 3]` (size is (height, width)), RGB.

    EXIF orientation is applied, an animated file gives its first frame, and
    anything Pillow cannot fully decode raises `ImageRejected` with the reason.
    Pillow's own bomb guard still applies on top of `max_pixels`: above twice
    `Image.MAX_IMAGE_PIXELS` (~179M) it raises, and that becomes `ImageRejected`
    too (as does its warning where warnings are errors). Its warning alone is not
    caught: filtering warnings is process-wide and not thread-safe, and Beam runs
    DoFns in threads; under the default `max_pixels` such images are rejected anyway.
    """
    height, width = (int(v) for v in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be (height, width) > 0, got {size!r}")
    image = _open_checked(data, max_pixels)
    with image:
        image = _load_upright(image, max_pixels)
    return fit_image(image, (height, width))


def fit_image(image: Image.Image, size: Tuple[int, int]) -> np.ndarray:
    """A decoded Pillow image of any mode and size -> the encoder's uint8 RGB `[size[0], size[1], 3]`: what
    every path to an encoder does (the pipelines' decoding and the Python API alike)."""
    height, width = (int(v) for v in size)
    try:
        image = to_rgb(image)
    except ValueError as error:  # a mode Pillow cannot convert (e.g. LAB)
        raise ImageRejected(f"unsupported pixel mode {image.mode}: {error}") from None
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.array(image, dtype=np.uint8)


def encode_jpeg(pixels: np.ndarray, quality: int = KEPT_JPEG_QUALITY) -> bytes:
    """uint8 RGB [h, w, 3] -> JPEG bytes (how records keep an image for fine-tuning: ~19 KB at 224x224)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8), "RGB").save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def _load_upright(image: Image.Image, max_pixels: int) -> Image.Image:
    """Decodes every pixel (so truncation is caught) and applies the EXIF orientation."""
    try:
        image.load()
        return ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageRejected(_bomb_reason(error, max_pixels)) from None
    except MemoryError:
        raise ImageRejected("too large to decode (out of memory)") from None
    except Exception as error:  # noqa: BLE001 - decoders raise OSError, SyntaxError, struct.error, zlib.error...
        raise ImageRejected(f"truncated or corrupt: {error}") from None
