"""decode_image against the image zoo: what decodes, what is rejected and why, and how fast bombs fail."""
import io
import os
import time
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from tests import image_zoo as zoo
from captioner.images import ImageRejected, decode_image, image_id


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("zoo"))
    started = time.perf_counter()
    expected = zoo.write_image_zoo(folder)
    return folder, expected, time.perf_counter() - started


def read(zoo_dir, name) -> bytes:
    with open(os.path.join(zoo_dir[0], name), "rb") as handle:
        return handle.read()


def native(zoo_dir, name) -> np.ndarray:
    """Decoded at the file's own (displayed) size, so no resampling blurs the pixels checked."""
    with Image.open(os.path.join(zoo_dir[0], name)) as image:
        width, height = image.size
    return decode_image(read(zoo_dir, name), (height, width)).astype(int)


def test_zoo_is_small_and_quick_to_write(zoo_dir):
    folder, expected, seconds = zoo_dir
    assert seconds < 2
    assert sorted(os.listdir(folder)) == sorted(expected)
    assert all(os.path.getsize(os.path.join(folder, name)) < 1_000_000 for name in expected)


@pytest.mark.parametrize("name", sorted(zoo.zoo_files()))
def test_every_zoo_file_decodes_or_is_rejected_with_its_reason(zoo_dir, name):
    expected = zoo_dir[1][name]
    data = read(zoo_dir, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if expected is None:
            pixels = decode_image(data, (16, 20))
            assert pixels.shape == (16, 20, 3) and pixels.dtype == np.uint8
        else:
            with pytest.raises(ImageRejected) as rejected:
                decode_image(data, (16, 20))
            assert expected in rejected.value.reason
            assert isinstance(rejected.value, ValueError)


def test_reasons_name_the_problem(zoo_dir):
    def reason(name):
        with pytest.raises(ImageRejected) as rejected:
            decode_image(read(zoo_dir, name), (8, 8))
        return rejected.value.reason

    assert reason(zoo.EMPTY) == "empty file"
    assert reason(zoo.HTML_PAGE) == "not an image (HTML?)"
    assert reason(zoo.RANDOM_BYTES) == "not an image (unknown format)"
    assert reason(zoo.TRUNCATED_JPEG).startswith("truncated or corrupt: image file is truncated")
    assert reason(zoo.BOMB_SMALL) == "too many pixels: 8000x8000 > limit 50000000"
    assert reason(zoo.BOMB).startswith("too many pixels: 1600000000 > limit 50000000")


def test_a_truncated_header_is_called_truncated_not_unknown(zoo_dir):
    with pytest.raises(ImageRejected, match="truncated or corrupt"):
        decode_image(read(zoo_dir, zoo.ONE_PIXEL)[:20], (8, 8))


@pytest.mark.parametrize("name", [zoo.BOMB, zoo.BOMB_WARNED, zoo.BOMB_SMALL])
def test_bombs_are_rejected_fast_even_when_warnings_are_errors(zoo_dir, name):
    data = read(zoo_dir, name)
    for action in ("ignore", "error"):
        with warnings.catch_warnings():
            warnings.simplefilter(action)
            started = time.perf_counter()
            with pytest.raises(ImageRejected, match="too many pixels"):
                decode_image(data, (224, 224))
            assert time.perf_counter() - started < 1


def test_max_pixels_is_checked_from_the_header(zoo_dir):
    data = read(zoo_dir, zoo.WIDE)
    assert decode_image(data, (5, 400), max_pixels=4000 * 50).shape == (5, 400, 3)
    with pytest.raises(ImageRejected, match=r"too many pixels: 4000x50 > limit 199999"):
        decode_image(data, (5, 400), max_pixels=4000 * 50 - 1)


def test_pillow_globals_are_left_alone(zoo_dir):
    before = Image.MAX_IMAGE_PIXELS
    for name in zoo_dir[1]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                decode_image(read(zoo_dir, name), (8, 8))
        except ImageRejected:
            pass
    assert Image.MAX_IMAGE_PIXELS == before
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_alpha_is_composited_over_white(zoo_dir):
    pixels = native(zoo_dir, zoo.ALPHA_PNG)
    assert (pixels[:, : zoo.WIDTH // 2] == 255).all()
    assert (pixels[:, zoo.WIDTH // 2:] == zoo.BLUE).all()
    palette = native(zoo_dir, zoo.PALETTE_TRANSPARENT)
    assert (palette[:, : zoo.WIDTH // 2] == 255).all()
    assert (palette[:, zoo.WIDTH // 2:] == zoo.GREEN).all()
    grey_alpha = native(zoo_dir, zoo.GRAY_ALPHA)
    assert (grey_alpha[: zoo.HEIGHT // 2] == 255).all() and (grey_alpha[zoo.HEIGHT // 2:] == 0).all()


def test_animated_gif_gives_its_first_frame(zoo_dir):
    assert (native(zoo_dir, zoo.ANIMATED_GIF) == zoo.RED).all()


@pytest.mark.parametrize("name", [zoo.GRAY16_PNG, zoo.GRAY16_BIG_ENDIAN_TIFF, zoo.INT32_TIFF])
def test_sixteen_bit_grey_is_scaled_not_clipped(zoo_dir, name):
    pixels = native(zoo_dir, name)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 0] == pixels[..., 2]).all()
    ramp = pixels[0, :, 0]
    assert ramp[0] == 0 and ramp[-1] == 255 and (np.diff(ramp) > 0).all()
    third = zoo.WIDTH // 3
    bottom = pixels[-1, :, 0]
    assert (bottom[:third] == 0).all()
    assert (bottom[third: 2 * third] == 128).all()   # 32768 / 257 = 127.5
    assert (bottom[2 * third:] == 255).all()


def test_cmyk_red_stays_red(zoo_dir):
    red, green, blue = native(zoo_dir, zoo.CMYK_JPEG).mean(axis=(0, 1))
    assert red > 200 and green < 60 and blue < 60


def test_grey_and_one_bit_become_grey_rgb(zoo_dir):
    grey = native(zoo_dir, zoo.GRAY_JPEG)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert grey.std() > 20
    one_bit = native(zoo_dir, zoo.ONE_BIT)
    assert (one_bit[:, : zoo.WIDTH // 2] == 0).all() and (one_bit[:, zoo.WIDTH // 2:] == 255).all()


def test_exif_orientation_is_applied(zoo_dir):
    pixels = decode_image(read(zoo_dir, zoo.EXIF_ROTATED), (zoo.WIDTH, zoo.HEIGHT)).astype(int)
    assert pixels.shape == (zoo.WIDTH, zoo.HEIGHT, 3)      # stored 32 wide x 24 high, shown 24 x 32
    top_right, top_left = pixels[2, -3], pixels[2, 2]
    assert top_right[0] > 180 and top_right[1] < 80 and top_right[2] < 80
    assert np.abs(top_left - 128).max() < 20
    assert np.abs(pixels[-3, -3] - 128).max() < 20


def test_one_pixel_image_is_accepted_and_scaled_up(zoo_dir):
    data = read(zoo_dir, zoo.ONE_PIXEL)
    assert (decode_image(data, (1, 1)) == zoo.GREEN).all()
    assert (decode_image(data, (224, 224)) == zoo.GREEN).all()


def test_format_comes_from_the_bytes_not_the_name(zoo_dir):
    scene = np.asarray(zoo._scene(), dtype=int)
    for name in (zoo.WEBP, zoo.BMP, zoo.TIFF):   # lossless formats, two of them named .jpg
        assert (native(zoo_dir, name) == scene).all()


def test_matching_size_is_not_resampled_and_others_use_pillow_bilinear():
    pixels = np.random.default_rng(3).integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    assert (decode_image(buffer.getvalue(), (224, 224)) == pixels).all()
    expected = np.asarray(Image.fromarray(pixels).resize((100, 50), Image.Resampling.BILINEAR))
    assert (decode_image(buffer.getvalue(), (50, 100)) == expected).all()


def test_bad_size_is_a_caller_error_not_a_rejection(zoo_dir):
    with pytest.raises(ValueError) as error:
        decode_image(read(zoo_dir, zoo.ONE_PIXEL), (0, 10))
    assert not isinstance(error.value, ImageRejected)


@pytest.mark.parametrize("path, expected", [
    ("/data/Flicker8k_Dataset/1000268201_693b08cb0e.jpg", "1000268201_693b08cb0e.jpg"),
    ("gs://bucket/images/sub dir/1000268201_693b08cb0e.JPG", "1000268201_693b08cb0e.JPG"),
    ("relative/" + zoo.ODD_NAME, zoo.ODD_NAME),
    ("gs://bucket/x/" + zoo.ODD_NAME, zoo.ODD_NAME),
    ("Ünïcödé ü.jpeg", "Ünïcödé ü.jpeg"),
])
def test_image_id_is_the_exact_base_name(path, expected):
    assert image_id(path) == expected


def test_image_id_of_a_folder_is_an_error():
    with pytest.raises(ValueError):
        image_id("gs://bucket/images/")
