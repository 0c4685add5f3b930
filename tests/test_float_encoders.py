"""Float Keras encoders rebuilt from the shipped TFLite MobileNets, and the `.keras` encoder family."""
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from captioner import encoders
from captioner.encoders import from_tflite
from tests.conftest import PROJECT_ROOT, flickr_photos

V2_TFLITE = "mobilenet_v2_1.0_224_quant.tflite"
pytestmark = pytest.mark.slow  # three conversions and 100 real images through five models


@pytest.fixture(scope="module")
def converted(shared_dir, mobilenet_v1_tflite, tmp_path_factory):
    """v1 and v2 features, and the v2 classifier, converted once for the module."""
    folder = tmp_path_factory.mktemp("converted")
    paths = {"v1": str(folder / "v1.keras"), "v2": str(folder / "v2.keras"), "v2c": str(folder / "v2c.keras")}
    v2 = os.path.join(shared_dir, "models", V2_TFLITE)
    for key, source, classifier in (("v1", mobilenet_v1_tflite, False), ("v2", v2, False), ("v2c", v2, True)):
        model, _ = from_tflite.convert(source, classifier=classifier)
        from_tflite.save(model, paths[key])
    return paths


@pytest.fixture(scope="module")
def flickr(shared_dir):
    """The first 100 Flickr8k photos (sorted names) as uint8 [100, 224, 224, 3] RGB."""
    return flickr_photos(shared_dir, 100)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_v1_map_agrees_with_the_tflite_map(converted, mobilenet_v1_tflite, flickr):
    images = flickr[:64]
    tflite = encoders.load_encoder(mobilenet_v1_tflite, spatial=True, num_threads=2)
    info = tflite.feature_info()["spatial"]
    expected = (tflite.encode(images)["spatial"].astype(np.float32) - info["zero_point"]) * info["scale"]
    rebuilt = encoders.load_encoder(converted["v1"], spatial=True)
    maps = np.concatenate([rebuilt.encode(images[i:i + 32])["spatial"] for i in range(0, 64, 32)])
    cosines = _cosines(expected, maps)
    print(f"v1 float vs TFLite 7x7x1024 map over 64 images: mean cosine {cosines.mean():.4f}, "
          f"worst {cosines.min():.4f}")
    assert cosines.mean() >= 0.99 and cosines.min() >= 0.98


def test_v2_classifier_picks_the_tflite_top1_class(converted, shared_dir, flickr):
    tflite = encoders.load_encoder(os.path.join(shared_dir, "models", V2_TFLITE))  # batch 1 built in: per image
    probabilities = tflite.encode(flickr)["pooled"]
    classifier = keras.saving.load_model(converted["v2c"], safe_mode=True)  # the float32 logits themselves
    logits = np.concatenate([classifier(flickr[i:i + 50].astype(np.float32)).numpy() for i in range(0, 100, 50)])
    assert logits.shape == (100, 1001) and logits.dtype == np.float32
    rate = float((logits.argmax(axis=1) == probabilities.argmax(axis=1)).mean())
    print(f"v2 float classifier top-1 = TFLite top-1 on {rate:.0%} of 100 images")
    assert rate >= 0.9
    with pytest.raises(encoders.EncoderError, match=r"outputs a vector \[1001\], which has no spatial map"):
        encoders.load_encoder(converted["v2c"], spatial=True)


def test_layers_are_blocks_with_the_tflite_strides_and_activations(converted):
    v1 = keras.saving.load_model(converted["v1"], safe_mode=True)
    assert v1.layers[1].name == "preprocess" and v1.layers[1].get_config()["scale"] == 1 / 128
    strided = [layer.name for layer in v1.layers if getattr(layer, "strides", (1, 1)) == (2, 2)]
    assert strided == ["block0_conv", "block2_depthwise", "block4_depthwise", "block6_depthwise",
                       "block12_depthwise"]
    assert {layer.get_config()["activation"] for layer in v1.layers if hasattr(layer, "strides")} == {"relu6"}
    assert v1.output.shape[1:] == (7, 7, 1024)
    blocks = encoders.encoder_blocks(v1)
    assert [block[0].split("_")[0] for block in blocks] == [f"block{n}" for n in range(14)]
    v2 = keras.saving.load_model(converted["v2"], safe_mode=True)
    assert v2.output.shape[1:] == (7, 7, 1280) and len(encoders.encoder_blocks(v2)) == 19
    assert any(isinstance(layer, keras.layers.Add) for layer in v2.layers)  # the residual connections
    projections = [layer for layer in v2.layers if layer.name.endswith("_project")]
    assert projections and all(layer.get_config()["activation"] == "linear" for layer in projections)


def test_the_converted_file_loads_safely_without_this_project(converted, tmp_path):
    code = ("import sys, keras; m = keras.saving.load_model(sys.argv[1], safe_mode=True); "
            "assert 'captioner' not in sys.modules; print(tuple(m.output.shape))")
    run = subprocess.run([sys.executable, "-c", code, converted["v1"]], cwd=str(tmp_path), text=True,
                         capture_output=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert run.returncode == 0 and "(None, 7, 7, 1024)" in run.stdout, run.stderr[-2000:]


def test_other_graphs_and_wrong_flags_are_refused_in_one_line(mobilenet_v1_tflite, tmp_path, capsys):
    import tensorflow as tf
    inputs = keras.Input((4,))
    dense = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    other = tmp_path / "dense.tflite"
    other.write_bytes(tf.lite.TFLiteConverter.from_keras_model(dense).convert())
    run = subprocess.run([sys.executable, "-m", "captioner.encoders.from_tflite", str(other),
                          str(tmp_path / "out.keras")], cwd=PROJECT_ROOT, text=True, capture_output=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 1 and len(errors) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "supports the MobileNet v1 and v2 TFLite graphs" in errors[0]
    assert not (tmp_path / "out.keras").exists()

    from captioner import cli
    for argv, code, says in (([mobilenet_v1_tflite, str(tmp_path / "c.keras"), "--classifier"], 1, "classifier"),
                             ([str(tmp_path / "missing.tflite"), str(tmp_path / "m.keras")], 1, "does not exist"),
                             ([mobilenet_v1_tflite, str(tmp_path / "m.h5")], 2, "does not end in .keras")):
        assert cli.run(from_tflite.main, argv) == code
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and says in err and "Traceback" not in err, err


def test_keras_family_shapes_identity_and_round_trip(converted, flickr, tmp_path):
    path = str(tmp_path / "v1.keras")
    shutil.copy(converted["v1"], path)
    spatial, pooled_only = (encoders.load_encoder(path, spatial=flag) for flag in (True, False))
    assert spatial.input_size == (224, 224) and spatial.feature_info() == {
        "pooled": {"shape": [1024], "dtype": "float16", "scale": None, "zero_point": 0},
        "spatial": {"shape": [7, 7, 1024], "dtype": "float16", "scale": None, "zero_point": 0}}
    out = spatial.encode(flickr[:4])
    assert out["spatial"].shape == (4, 7, 7, 1024) and out["spatial"].dtype == np.float16  # stored as float16
    mean = out["spatial"].astype(np.float32).mean(axis=(1, 2))
    np.testing.assert_allclose(out["pooled"].astype(np.float32), mean, rtol=2e-3, atol=2e-3)
    single = spatial.encode(flickr[2:3])["spatial"][0].astype(np.float32)
    np.testing.assert_allclose(single, out["spatial"][2].astype(np.float32), rtol=2e-3, atol=2e-3)
    assert set(pooled_only.encode(flickr[:2])) == {"pooled"}

    identity = spatial.identity
    assert identity["weights"] == "file" and identity["source"] == path and identity["name"] == "v1.keras"
    assert identity["preprocessing"] == "inside the model: Rescaling(scale=0.0078125, offset=-1.0)"
    resaved = str(tmp_path / "resaved.keras")
    keras.saving.load_model(path, safe_mode=True).save(resaved)
    assert encoders.load_encoder(resaved).identity["weights_sha256"] == identity["weights_sha256"]
    assert encoders.encoder_from_identity(identity).identity == identity
    old_manifest = {key: value for key, value in identity.items() if key != "preprocessing"}
    assert encoders.encoder_from_identity(old_manifest).identity == identity

    changed = keras.saving.load_model(path, safe_mode=True)
    weights = changed.get_weights()
    weights[-1] = weights[-1] + 0.5
    changed.set_weights(weights)
    changed.save(path)
    with pytest.raises(encoders.EncoderError, match="but the features/model were made with sha256"):
        encoders.encoder_from_identity(identity)


def test_trainable_models_save_and_load_through_the_keras_family(converted, flickr, mobilenet_v1_tflite, tmp_path):
    v1 = encoders.load_encoder(converted["v1"], spatial=True)
    for name, encoder in (("v1", v1), ("app", encoders.load_encoder("mobilenet_v2", spatial=True))):
        model = encoder.trainable_model()
        assert model.output.shape[1:] == tuple(encoder.feature_info()["spatial"]["shape"])
        path = str(tmp_path / f"{name}.keras")
        model.save(path)
        reloaded = encoders.load_encoder(path, spatial=True)
        np.testing.assert_allclose(reloaded.encode(flickr[:2])["spatial"].astype(np.float32),
                                   encoder.encode(flickr[:2])["spatial"].astype(np.float32), rtol=2e-2, atol=2e-2)
    with pytest.raises(encoders.EncoderError, match="from_tflite"):
        encoders.load_encoder(mobilenet_v1_tflite).trainable_model()
