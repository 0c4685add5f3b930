"""A folder of small awkward image files, for the decoder's tests and the Beam pipelines' tests.

`write_image_zoo(folder)` writes every file and says what must happen to it:
None when it must decode, else a substring of the expected rejection reason.
Files are tiny (mostly 32x24) so pipeline tests that read the zoo stay fast;
the decompression bombs are a few hundred KB at most, written without ever
holding their pixels in memory.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from typing import Dict, Optional

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 32, 24

EMPTY = "empty.jpg"
TRUNCATED_JPEG = "truncated.jpg"
RANDOM_BYTES = "random_bytes.jpg"
HTML_PAGE = "error_page.jpg"
ALPHA_PNG = "alpha_png_saved_as.jpg"            # left half transparent, right half opaque blue
ANIMATED_GIF = "animated_gif_saved_as.png"      # frame 0 red, frame 1 green
GRAY_JPEG = "grayscale.jpg"
CMYK_JPEG = "cmyk_red.jpg"
GRAY16_PNG = "gray16.png"                       # see _gray16_values
GRAY16_BIG_ENDIAN_TIFF = "gray16_big_endian.tif"
INT32_TIFF = "int32_gray.tif"                   # mode I holding 16-bit values
EXIF_ROTATED = "exif_rotated.jpg"               # stored 32x24, red block top-left, orientation 6
ONE_PIXEL = "one_pixel.png"
WIDE = "wide_4000x50.jpg"
BOMB = "bomb_40000x40000.png"                   # above Pillow's own hard limit
BOMB_WARNED = "bomb_10000x10000.png"            # between Pillow's warning and error limits
BOMB_SMALL = "bomb_8000x8000.png"               # under Pillow's limits, over the default max_pixels
UPPER_CASE = "UPPER_CASE.JPG"
ODD_NAME = 'café "quoted" it\'s.jpg'
WEBP = "lossless.webp"
BMP = "bitmap_saved_as.jpg"
TIFF = "tiff_saved_as.jpg"
ONE_BIT = "one_bit.png"                         # left half black, right half white
PALETTE_TRANSPARENT = "palette_transparent.png"  # palette index 0 transparent (left half), 1 green
GRAY_ALPHA = "gray_alpha.png"                   # mode LA, top half transparent

RED, GREEN, BLUE = (220, 20, 20), (20, 200, 20), (20, 40, 220)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _scene(width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """A noisy RGB picture (noise so a JPEG's scan data dominates its size)."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def _halves(left: tuple, right: tuple, mode: str = "RGBA") -> Image.Image:
    image = Image.new(mode, (WIDTH, HEIGHT), left)
    image.paste(right, (WIDTH // 2, 0, WIDTH, HEIGHT))
    return image


def _gray16_values() -> np.ndarray:
    """Top half: a 0..65535 ramp across the columns; bottom half: blocks of 0, 32768 and 65535."""
    values = np.zeros((HEIGHT, WIDTH), dtype=np.uint16)
    values[: HEIGHT // 2] = np.linspace(0, 65535, WIDTH).round().astype(np.uint16)
    third = WIDTH // 3
    values[HEIGHT // 2:, :third] = 0
    values[HEIGHT // 2:, third: 2 * third] = 32768
    values[HEIGHT // 2:, 2 * third:] = 65535
    return values


def _zeros_zlib(total: int, chunk: int = 1 << 22) -> bytes:
    """A zlib stream of `total` zero bytes in ~40 ms: after a full flush deflate forgets its history,
    so one compressed chunk can be repeated; the Adler-32 of n zeros is (n mod 65521) << 16 | 1."""
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = raw.compress(bytes(chunk)) + raw.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(total, chunk)
    tail = raw.compress(bytes(rest)) + raw.flush()
    adler = ((total % 65521) << 16) | 1
    return b"\x78\xda" + block * count + tail + adler.to_bytes(4, "big")


def png_bomb(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of any size, a few hundred KB for 40000x40000."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale, no interlace
    row_bytes = 1 + (width + 7) // 8                                # filter byte + packed pixels
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", _zeros_zlib(row_bytes * height)) + chunk(b"IEND", b""))


def _exif_rotated() -> bytes:
    image = Image.new("RGB", (WIDTH, HEIGHT), (128, 128, 128))
    image.paste(RED, (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    return _encode(image, "JPEG", quality=95, exif=exif.tobytes())


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (WIDTH, HEIGHT), colour) for colour in (RED, GREEN)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _palette_transparent() -> bytes:
    image = Image.new("P", (WIDTH, HEIGHT), 1)
    image.putpalette([0, 0, 0, *GREEN] + [0] * (256 - 2) * 3)
    image.paste(0, (0, 0, WIDTH // 2, HEIGHT))
    return _encode(image, "PNG", transparency=0)


def _gray_alpha() -> bytes:
    image = Image.new("LA", (WIDTH, HEIGHT), (0, 255))
    image.paste((0, 0), (0, 0, WIDTH, HEIGHT // 2))
    return _encode(image, "PNG")


def zoo_files() -> Dict[str, tuple]:
    """{file name: (bytes, expected)}; expected is None or a substring of the rejection reason."""
    jpeg = _encode(_scene(64, 48), "JPEG", quality=95)
    cmyk = Image.new("CMYK", (WIDTH, HEIGHT), (0, 255, 255, 0))
    gray16 = Image.fromarray(_gray16_values(), "I;16")
    return {
        EMPTY: (b"", "empty file"),
        TRUNCATED_JPEG: (jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        RANDOM_BYTES: (np.random.default_rng(2).integers(0, 256, 3000, dtype=np.uint8).tobytes(), "not an image"),
        HTML_PAGE: (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
                    b"<body><h1>Not Found</h1></body></html>\n", "HTML"),
        ALPHA_PNG: (_encode(_halves((0, 0, 0, 0), (*BLUE, 255)), "PNG"), None),
        ANIMATED_GIF: (_animated_gif(), None),
        GRAY_JPEG: (_encode(_scene().convert("L"), "JPEG"), None),
        CMYK_JPEG: (_encode(cmyk, "JPEG", quality=95), None),
        GRAY16_PNG: (_encode(gray16, "PNG"), None),
        GRAY16_BIG_ENDIAN_TIFF: (_encode(gray16.convert("I").convert("I;16B"), "TIFF"), None),
        INT32_TIFF: (_encode(Image.fromarray(_gray16_values().astype(np.int32), "I"), "TIFF"), None),
        EXIF_ROTATED: (_exif_rotated(), None),
        ONE_PIXEL: (_encode(Image.new("RGB", (1, 1), GREEN), "PNG"), None),
        WIDE: (_encode(Image.new("RGB", (4000, 50), BLUE), "JPEG"), None),
        BOMB: (png_bomb(40000, 40000), "too many pixels"),
        BOMB_WARNED: (png_bomb(10000, 10000), "too many pixels"),
        BOMB_SMALL: (png_bomb(8000, 8000), "too many pixels"),
        UPPER_CASE: (_encode(_scene(), "JPEG"), None),
        ODD_NAME: (_encode(_scene(), "JPEG"), None),
        WEBP: (_encode(_scene(), "WEBP", lossless=True), None),
        BMP: (_encode(_scene(), "BMP"), None),
        TIFF: (_encode(_scene(), "TIFF"), None),
        ONE_BIT: (_encode(_halves(0, 1, mode="1"), "PNG"), None),
        PALETTE_TRANSPARENT: (_palette_transparent(), None),
        GRAY_ALPHA: (_gray_alpha(), None),
    }


def write_image_zoo(folder: str) -> Dict[str, Optional[str]]:
    """Writes the zoo into `folder`; returns {file name: None if it must decode, else a reason substring}."""
    os.makedirs(folder, exist_ok=True)
    expected = {}
    for name, (data, outcome) in zoo_files().items():
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(data)
        expected[name] = outcome
    return expected
