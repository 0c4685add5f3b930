"""The encoder registry: real TFLite encoders, keras.applications built with random weights, the toy."""
import hashlib
import os
import warnings

import numpy as np
from apache_beam.internal import pickler as beam_pickler
import pytest
import tensorflow as tf

from captioner import encoders
from captioner.errors import UsageError
from tests.conftest import flickr_photos


@pytest.fixture(scope="module")
def flickr_images(shared_dir):
    """Five real Flickr8k photos as uint8 [5, 224, 224, 3] RGB."""
    return flickr_photos(shared_dir, 5)


@pytest.fixture(scope="module")
def v1_spatial(mobilenet_v1_tflite):
    return encoders.load_encoder(mobilenet_v1_tflite, spatial=True)


def _direct_invoke(path, images):
    """The reference: a plain batch-1 interpreter, one invoke per image."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    index, output = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    rows = []
    for image in images:
        interpreter.set_tensor(index, image[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(output).reshape(-1))
    return np.stack(rows)


def _random_images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def test_mobilenet_v1_tflite_matches_a_direct_interpreter(v1_spatial, mobilenet_v1_tflite, flickr_images):
    out = v1_spatial.encode(flickr_images)
    assert out["pooled"].dtype == np.uint8 and out["pooled"].shape == (5, 1024)
    assert out["spatial"].dtype == np.uint8 and out["spatial"].shape == (5, 7, 7, 1024)
    np.testing.assert_array_equal(out["pooled"], _direct_invoke(mobilenet_v1_tflite, flickr_images))
    # The spatial map is the real last feature map: its 7x7 average is the pooled embedding.
    averaged = np.round(out["spatial"].reshape(5, 49, 1024).mean(axis=1))
    assert np.abs(averaged - out["pooled"]).max() <= 1

    info = v1_spatial.feature_info()
    assert info["pooled"] == {"shape": [1024], "dtype": "uint8", "scale": pytest.approx(0.0235285, rel=1e-5),
                              "zero_point": 0}
    assert info["spatial"]["shape"] == [7, 7, 1024] and info["spatial"]["dtype"] == "uint8"
    assert info["spatial"]["scale"] == pytest.approx(0.0235285, rel=1e-5)
    assert v1_spatial.identity == {
        "name": "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", "source": mobilenet_v1_tflite,
        "weights": "file", "spatial": True, "input_size": [224, 224],
        "weights_sha256": "f409ef4f73fcbb9667841965623c5c8524aac33d41b9bf5f3667161fb4a76319",
        "preprocessing": "the model's input quantization (uint8 raw RGB)"}


def test_mobilenet_v1_tflite_batch_equals_single_images(v1_spatial, mobilenet_v1_tflite, flickr_images):
    batched = v1_spatial.encode(flickr_images)
    singles = [v1_spatial.encode(flickr_images[i:i + 1]) for i in range(5)]
    for key in ("pooled", "spatial"):
        np.testing.assert_array_equal(batched[key], np.concatenate([s[key] for s in singles]))
    pooled_only = encoders.load_encoder(mobilenet_v1_tflite, num_threads=1)
    assert set(pooled_only.feature_info()) == {"pooled"}
    result = pooled_only.encode(flickr_images[:3])
    assert set(result) == {"pooled"}
    np.testing.assert_array_equal(result["pooled"], batched["pooled"][:3])


def test_mobilenet_v2_tflite_shapes_and_per_image_fallback(shared_dir, flickr_images):
    path = os.path.join(shared_dir, "models", "mobilenet_v2_1.0_224_quant.tflite")
    encoder = encoders.load_encoder(path, spatial=True)
    info = encoder.feature_info()
    assert info["pooled"] == {"shape": [1001], "dtype": "uint8", "scale": 1 / 256, "zero_point": 0}
    assert info["spatial"]["shape"] == [7, 7, 1280] and info["spatial"]["dtype"] == "uint8"
    # Its graph reshapes to [1, 1001], so a batch runs as one invoke per image; results must not differ.
    out = encoder.encode(flickr_images[:3])
    assert out["pooled"].shape == (3, 1001) and out["spatial"].shape == (3, 7, 7, 1280)
    np.testing.assert_array_equal(out["pooled"], _direct_invoke(path, flickr_images[:3]))
    single = encoder.encode(flickr_images[1:2])
    np.testing.assert_array_equal(single["spatial"][0], out["spatial"][1])


def _convert(function, signature, path):
    concrete = tf.function(function, input_signature=[signature]).get_concrete_function()
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([concrete], function).convert())
    return str(path)


def test_float_tflite_scales_to_minus_one_one_and_finds_the_map(tmp_path):
    path = _convert(lambda x: tf.reduce_mean(tf.nn.avg_pool2d(x, 2, 2, "VALID"), axis=[1, 2]),
                    tf.TensorSpec([1, 8, 8, 3], tf.float32), tmp_path / "tiny.tflite")
    encoder = encoders.load_encoder(path, spatial=True)
    assert encoder.input_size == (8, 8)
    assert encoder.feature_info()["spatial"] == {"shape": [4, 4, 3], "dtype": "float32", "scale": None,
                                                 "zero_point": 0}
    images = _random_images(3, (8, 8))
    out = encoder.encode(images)
    scaled = images.astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(out["pooled"], scaled.mean(axis=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(out["spatial"], scaled.reshape(3, 4, 2, 4, 2, 3).mean(axis=(2, 4)), atol=1e-5)


def test_tflite_that_is_not_an_image_encoder_is_refused(tmp_path):
    path = _convert(lambda x: x * 2.0, tf.TensorSpec([1, 10], tf.float32), tmp_path / "vector.tflite")
    with pytest.raises(ValueError, match=r"vector.tflite has input.*\[1, h, w, 3\]"):
        encoders.load_encoder(path)
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="garbage.tflite is not a readable TFLite model"):
        encoders.load_encoder(str(garbage))


@pytest.mark.slow
def test_vgg16_random_weights_are_reproducible():
    first = encoders.load_encoder("vgg16", weights="none", spatial=True)
    assert first.input_size == (224, 224)
    assert first.feature_info() == {
        "pooled": {"shape": [4096], "dtype": "float32", "scale": None, "zero_point": 0},
        "spatial": {"shape": [7, 7, 512], "dtype": "float32", "scale": None, "zero_point": 0}}
    images = _random_images(2, (224, 224))
    out = first.encode(images)
    assert out["pooled"].shape == (2, 4096) and out["pooled"].dtype == np.float32
    assert out["spatial"].shape == (2, 7, 7, 512) and out["spatial"].dtype == np.float32
    identity = first.identity
    del first  # one 138M-parameter VGG16 in memory at a time
    second = encoders.load_encoder("vgg16", weights="none", spatial=True)
    assert second.identity == identity
    np.testing.assert_array_equal(second.encode(images)["pooled"], out["pooled"])


@pytest.mark.parametrize("name, size, pooled, spatial", [
    ("mobilenet_v2", 224, [1280], [7, 7, 1280]),
    ("efficientnet_b0", 224, [1280], [7, 7, 1280]),
    ("inception_v3", 299, [2048], [8, 8, 2048]),
])
@pytest.mark.slow
def test_keras_apps_build_with_the_documented_shapes(name, size, pooled, spatial):
    encoder = encoders.load_encoder(name, weights="none", spatial=True)
    assert encoder.input_size == (size, size)
    assert encoder.identity["input_size"] == [size, size] and encoder.identity["weights"] == "none"
    info = encoder.feature_info()
    assert info["pooled"]["shape"] == pooled and info["spatial"]["shape"] == spatial
    out = encoder.encode(_random_images(1, (size, size)))
    assert out["pooled"].shape == (1, *pooled) and out["spatial"].shape == (1, *spatial)
    assert np.isfinite(out["pooled"]).all()


@pytest.mark.slow
def test_keras_weights_file_is_loaded_and_hashed(tmp_path):
    random_init = encoders.load_encoder("mobilenet_v2", weights="none")
    path = tmp_path / "mobilenet_v2_notop.weights.h5"
    random_init._model.save_weights(str(path))
    from_file = encoders.load_encoder("mobilenet_v2", weights=str(path))
    assert from_file.identity["weights"] == str(path)
    assert from_file.identity["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    images = _random_images(2, (224, 224))
    np.testing.assert_allclose(from_file.encode(images)["pooled"], random_init.encode(images)["pooled"],
                               rtol=1e-5, atol=1e-6)
    round_trip = encoders.encoder_from_identity(from_file.identity)
    assert round_trip.identity == from_file.identity


def test_thumbnail_is_8x8_block_means_of_colour_and_edges():
    encoder = encoders.load_encoder("thumbnail", spatial=True)
    images = _random_images(4, (64, 64))
    out = encoder.encode(images)
    pixels = images.astype(np.float64) / 255
    gray = pixels.mean(axis=3)
    dx = np.abs(np.diff(gray, axis=2, append=gray[:, :, -1:]))
    dy = np.abs(np.diff(gray, axis=1, append=gray[:, -1:, :]))
    channels = np.concatenate([pixels, dx[..., None], dy[..., None]], axis=3)
    expected = channels.reshape(4, 8, 8, 8, 8, 5).mean(axis=(2, 4))
    assert out["spatial"].dtype == np.float32 and out["spatial"].shape == (4, 8, 8, 5)
    np.testing.assert_allclose(out["spatial"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["pooled"], out["spatial"].reshape(4, 320))
    flat = np.full((1, 64, 64, 3), 200, np.uint8)
    assert not encoder.encode(flat)["spatial"][..., 3:].any()  # no edges in a flat image
    assert encoder.identity["weights_sha256"] == hashlib.sha256(b"thumbnail-v2").hexdigest()
    assert encoders.load_encoder("thumbnail").feature_info() == {
        "pooled": {"shape": [320], "dtype": "float32", "scale": None, "zero_point": 0}}
    empty = encoder.encode(np.zeros((0, 64, 64, 3), np.uint8))
    assert empty["pooled"].shape == (0, 320) and empty["spatial"].shape == (0, 8, 8, 5)


def test_bad_inputs_raise_helpful_errors(tmp_path):
    with pytest.raises(UsageError, match=r"(?s)unknown encoder 'resnet9000'.*vgg16.*\.tflite.*thumbnail"):
        encoders.load_encoder("resnet9000")
    missing = str(tmp_path / "nowhere.tflite")
    with pytest.raises(ValueError, match=r"nowhere\.tflite' does not exist"):
        encoders.load_encoder(missing)
    with pytest.raises(ValueError, match=r"neither 'imagenet', 'none' nor an existing weights file"):
        encoders.load_encoder("mobilenet_v2", weights=str(tmp_path / "nowhere.h5"))
    bogus = tmp_path / "bogus.weights.h5"
    bogus.write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"could not load weights .*bogus.weights.h5.*\(notop\)"):
        encoders.load_encoder("mobilenet_v2", weights=str(bogus))
    with pytest.raises(ValueError, match="carries its own weights"):
        encoders.load_encoder(str(tmp_path / "model.tflite"), weights="imagenet")
    with pytest.raises(ValueError, match="has no weights"):
        encoders.load_encoder("thumbnail", weights="imagenet")
    with pytest.raises(ValueError, match=r"shape \[N, 64, 64, 3\], got uint8 \[2, 32, 32, 3\]"):
        encoders.load_encoder("thumbnail").encode(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="got float32"):
        encoders.load_encoder("thumbnail").encode(np.zeros((2, 64, 64, 3), np.float32))


def test_identity_round_trips_and_a_tampered_sha_is_refused(v1_spatial, flickr_images):
    again = encoders.encoder_from_identity(v1_spatial.identity)
    assert again.identity == v1_spatial.identity
    np.testing.assert_array_equal(again.encode(flickr_images[:2])["spatial"],
                                  v1_spatial.encode(flickr_images[:2])["spatial"])
    thumbnail = encoders.load_encoder("thumbnail")
    assert encoders.encoder_from_identity(thumbnail.identity).identity == thumbnail.identity
    tampered = dict(v1_spatial.identity, weights_sha256="0" * 64)
    with pytest.raises(ValueError, match="same weights that were used for extraction"):
        encoders.encoder_from_identity(tampered)
    with pytest.raises(ValueError, match="lacks"):
        encoders.encoder_from_identity({"name": "thumbnail"})


def test_tflite_from_gs_path(gcs_folder, mobilenet_v1_tflite, v1_spatial, flickr_images):
    from captioner import storage
    remote = f"{gcs_folder}/encoders/v1.tflite"
    with open(mobilenet_v1_tflite, "rb") as handle:
        storage.write_bytes(remote, handle.read())
    encoder = encoders.load_encoder(remote, spatial=True)
    assert encoder.identity["source"] == remote
    assert encoder.identity["weights_sha256"] == v1_spatial.identity["weights_sha256"]
    np.testing.assert_array_equal(encoder.encode(flickr_images[:2])["pooled"],
                                  v1_spatial.encode(flickr_images[:2])["pooled"])


def test_encoders_travel_to_beam_workers_as_their_identity(v1_spatial, flickr_images):
    """Beam serializes a DoFn's attributes to ship them to workers; an encoder goes as its identity only."""
    clone = beam_pickler.loads(beam_pickler.dumps(v1_spatial))
    assert clone.identity == v1_spatial.identity and clone is not v1_spatial
    np.testing.assert_array_equal(clone.encode(flickr_images[:1])["pooled"],
                                  v1_spatial.encode(flickr_images[:1])["pooled"])


def test_describe_encoders_lists_every_entry():
    lines = encoders.describe_encoders().splitlines()
    names = [line.split()[0] for line in lines]
    assert names == ["vgg16", "inception_v3", "mobilenet_v2", "efficientnet_b0", "PATH.tflite", "PATH.keras",
                     "thumbnail"]
