"""The embedded demo dataset: coloured shapes with captions, in the Flickr8k layout, no download.

Each 64x64 JPEG shows one or two shapes (colour, shape, size, position) on a
plain or dark background. Captions are fully determined by what is drawn, so a
small decoder can learn them; 3 of each image's 5 captions use one canonical
template (varied only in capitals and trailing punctuation, which cleaning
removes) and 2 use other phrasings, as human captions would. The files match
the real dataset's (`images/`, a token-format `captions.txt`, the three split
lists), so every stage runs on it unchanged. The same seed gives byte-identical
files; `folder` may be local or `gs://`.

    python -m tools.demo_data /tmp/demo --num_images 300 --seed 0
"""
from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw

from captioner import cli, storage
from captioner.errors import UsageError
from captioner.layout import SPLIT_FILES

IMAGE_SIZE = 64
COLOURS = {
    "red": (215, 35, 35), "green": (35, 165, 55), "blue": (40, 70, 215),
    "yellow": (235, 205, 40), "white": (245, 245, 245),
}
BACKGROUNDS = {"plain": (150, 150, 150), "dark": (25, 25, 35)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"big": 13, "small": 7}  # half the shape's width in pixels; fixed, so area tells shapes apart
POSITIONS = {"left": (16, 32), "right": (48, 32), "top": (32, 16), "bottom": (32, 48), "center": (32, 32)}
POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top",
                    "bottom": "at the bottom", "center": "in the center"}
RELATIONS = {"horizontal": ("left", "right", "to the left of", "to the right of"),
             "vertical": ("top", "bottom", "above", "below")}
CAPTIONS_FILE = "captions.txt"
IMAGES_DIR = "images"
SPLIT_FRACTIONS = (0.70, 0.15)  # train, dev; test takes the rest
CANONICAL_PER_IMAGE, CAPTIONS_PER_IMAGE = 3, 5
_JITTER, _COLOUR_JITTER = 1, 4  # small: the thumbnail encoder sees 8x8-pixel cells


@dataclass(frozen=True)
class Shape:
    colour: str
    kind: str
    size: str
    position: str

    @property
    def words(self) -> str:
        return f"{self.size} {self.colour} {self.kind}"


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: Tuple[Shape, ...]
    relation: Optional[str] = None  # "horizontal" or "vertical" when there are two shapes


def random_scene(rng: random.Random) -> Scene:
    background = rng.choice(sorted(BACKGROUNDS))

    def shape(position: str) -> Shape:
        return Shape(rng.choice(sorted(COLOURS)), rng.choice(SHAPES), rng.choice(sorted(SIZES)), position)

    if rng.random() < 0.5:
        return Scene(background, (shape(rng.choice(sorted(POSITIONS))),))
    relation = rng.choice(sorted(RELATIONS))
    first, second = RELATIONS[relation][:2]
    return Scene(background, (shape(first), shape(second)), relation)


def _jitter(colour: Sequence[int], rng: random.Random) -> Tuple[int, ...]:
    return tuple(min(255, max(0, c + rng.randint(-_COLOUR_JITTER, _COLOUR_JITTER))) for c in colour)


def render(scene: Scene, rng: random.Random) -> Image.Image:
    """Draws the scene; positions and colours get a little jitter so no two images are identical."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), _jitter(BACKGROUNDS[scene.background], rng))
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        x, y = POSITIONS[shape.position]
        x, y = x + rng.randint(-_JITTER, _JITTER), y + rng.randint(-_JITTER, _JITTER)
        r, fill = SIZES[shape.size], _jitter(COLOURS[shape.colour], rng)
        if shape.kind == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        elif shape.kind == "square":
            draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
        else:
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    return image


def canonical_caption(scene: Scene) -> str:
    """The dominant phrasing: what a model should learn to say."""
    if len(scene.shapes) == 1:
        shape = scene.shapes[0]
        return f"a {shape.words} {POSITION_PHRASES[shape.position]}"
    first, second = scene.shapes
    return f"a {first.words} {RELATIONS[scene.relation][2]} a {second.words}"


def _variants(scene: Scene) -> List[str]:
    """Other phrasings of the same content (each at most 16 words once cleaned)."""
    background = f"on a {scene.background} background"
    if len(scene.shapes) == 1:
        s = scene.shapes[0]
        where = POSITION_PHRASES[s.position]
        return [f"there is a {s.words} {where}", f"a {s.colour} {s.kind} {where}", f"a {s.words}",
                f"a {s.words} {where} {background}", f"one {s.colour} {s.kind} {where}",
                f"the picture shows a {s.words}", f"a {s.size} {s.kind} that is {s.colour}"]
    a, b = scene.shapes
    inverse = RELATIONS[scene.relation][3]
    return [f"there is a {a.words} {RELATIONS[scene.relation][2]} a {b.words}",
            f"{a.colour} {a.kind} and {b.colour} {b.kind}", f"a {b.words} {inverse} a {a.words}",
            f"two shapes a {a.words} and a {b.words}", f"a {a.colour} {a.kind} next to a {b.colour} {b.kind}",
            f"a {a.words} and a {b.words} {background}"]


def _surface(caption: str, rng: random.Random) -> str:
    """Capitals and trailing punctuation as people type them (Flickr8k has 'A dog runs .')."""
    if rng.random() < 0.4:
        caption = caption[0].upper() + caption[1:]
    return caption + rng.choice(["", "", ".", " .", "!"])


def captions_for(scene: Scene, rng: random.Random) -> List[str]:
    captions = [canonical_caption(scene)] * CANONICAL_PER_IMAGE
    captions += rng.sample(_variants(scene), CAPTIONS_PER_IMAGE - CANONICAL_PER_IMAGE)
    rng.shuffle(captions)
    return [_surface(c, rng) for c in captions]


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, subsampling=0)  # 4:4:4 keeps small shapes' colours clean
    return buffer.getvalue()


def _split(names: List[str], seed: int) -> dict:
    shuffled = sorted(names)
    random.Random(f"split-{seed}").shuffle(shuffled)
    n_train = round(len(names) * SPLIT_FRACTIONS[0])
    n_dev = round(len(names) * SPLIT_FRACTIONS[1])
    parts = {"train": shuffled[:n_train], "dev": shuffled[n_train:n_train + n_dev],
             "test": shuffled[n_train + n_dev:]}
    return {split: sorted(part) for split, part in parts.items()}


def generate(folder: str, num_images: int = 300, seed: int = 0) -> dict:
    """Writes the demo set into `folder`; returns the counts and the paths written."""
    if num_images < 1:
        raise UsageError(f"--num_images {num_images}: a demo set needs at least 1 image; pass a positive number")
    rng = random.Random(seed)
    width = max(4, len(str(num_images - 1)))
    names, lines = [], []
    images_dir = storage.join(folder, IMAGES_DIR)
    for index in range(num_images):
        name = f"{index:0{width}d}.jpg"
        scene = random_scene(rng)
        storage.write_bytes(storage.join(images_dir, name), _jpeg(render(scene, rng)))
        names.append(name)
        lines += [f"{name}#{n}\t{caption}" for n, caption in enumerate(captions_for(scene, rng))]
    captions_path = storage.join(folder, CAPTIONS_FILE)
    storage.write_text(captions_path, "\n".join(lines) + "\n")
    paths = {"folder": folder, "images": images_dir, "captions": captions_path}
    result = {"images": num_images, "captions": len(lines)}
    for split, part in _split(names, seed).items():
        paths[split] = storage.join(folder, SPLIT_FILES[split])
        storage.write_text(paths[split], "".join(f"{name}\n" for name in part))
        result[split] = len(part)
    result["paths"] = paths
    return result


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m tools.demo_data",
        description="Write the generated shapes demo dataset (64x64 JPEGs, 5 captions each, "
                    "train/dev/test split lists) in the Flickr8k layout.")
    parser.add_argument("out_dir", metavar="OUT_DIR",
                        help="folder to write, local or gs:// (images/, captions.txt, Flickr_8k.*Images.txt)")
    parser.add_argument("--num_images", type=int, default=300,
                        help="how many images to draw; split 70/15/15 into train/dev/test (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; the same seed writes byte-identical files (default: %(default)s)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    result = generate(args.out_dir, args.num_images, args.seed)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
