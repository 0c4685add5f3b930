"""A photo with its caption set under it, like the classic tutorial's sample output: a new file, the original
untouched, sized for a screen, the text wrapped, in the font that ships with Pillow."""
from __future__ import annotations

import io
import os
from typing import List

from PIL import Image, ImageDraw, ImageFont, ImageOps

from captioner import storage
from captioner.images import to_rgb

WIDTH = 640        # pixels: the picture is scaled to this width (never up), its caption set below it
FONT_SIZE = 22
MARGIN = 14
LINE_SPACING = 6


def _lines(text: str, font: ImageFont.FreeTypeFont, width: int) -> List[str]:
    """`text` wrapped into lines no wider than `width` pixels (a word longer than that gets its own line)."""
    lines: List[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and font.getlength(candidate) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines or [""]


def captioned_picture(image: Image.Image, caption: str) -> Image.Image:
    """`image` (any mode, EXIF-oriented already) scaled to WIDTH at most, with `caption` below it."""
    picture = to_rgb(image)
    if picture.width > WIDTH:
        picture = picture.resize((WIDTH, max(1, round(picture.height * WIDTH / picture.width))),
                                 Image.Resampling.LANCZOS)
    width = max(picture.width, 320)
    font = ImageFont.load_default(size=FONT_SIZE)
    lines = _lines(caption, font, width - 2 * MARGIN)
    band = 2 * MARGIN + len(lines) * (FONT_SIZE + LINE_SPACING)
    canvas = Image.new("RGB", (width, picture.height + band), "white")
    canvas.paste(picture, ((width - picture.width) // 2, 0))
    draw = ImageDraw.Draw(canvas)
    for number, line in enumerate(lines):
        draw.text((MARGIN, picture.height + MARGIN + number * (FONT_SIZE + LINE_SPACING)), line, fill="black",
                  font=font)
    return canvas


def write_captioned(path: str, caption: str, folder: str, taken: set) -> str:
    """Writes `folder/<name>.jpg` for the image at `path` (local or gs://) and returns where; a name another
    image already took gets a number (`name-2.jpg`)."""
    with Image.open(io.BytesIO(storage.read_bytes(path))) as opened:
        picture = captioned_picture(ImageOps.exif_transpose(opened), caption)
    stem = os.path.splitext(os.path.basename(path.rstrip("/")))[0] or "image"
    name, number = f"{stem}.jpg", 1
    while name in taken:
        number += 1
        name = f"{stem}-{number}.jpg"
    taken.add(name)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    target = storage.join(folder, name)
    storage.write_bytes(target, buffer.getvalue())
    return target
