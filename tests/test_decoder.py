"""The decoder architectures: each trains and saves without custom objects, and steps like it runs whole."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from captioner.config import TrainConfig
from captioner.decoder import DECODERS, architectures, search, stepwise
from captioner.decoder.decoding import Decoding
from captioner.text import PAD_ID, START_ID
from trainer import export, training


@pytest.mark.slow
@pytest.mark.parametrize("decoder,shape", [("merge", [12]), ("init_lstm", [2, 2, 12]), ("attention", [12]),
                                           ("transformer", [2, 2, 12])])
def test_every_decoder_trains_and_saves_without_custom_objects(decoder, shape, tmp_path):
    keras.utils.set_random_seed(0)
    model = architectures.build_decoder(decoder, shape, vocab_size=20, embedding_dim=8, units=16, dropout=0.1)
    train_cfg = TrainConfig(learning_rate=0.01, lr_schedule="constant", label_smoothing=0.1)
    training.compile_model(model, train_cfg, steps_per_epoch=2, tokens_per_caption=5.0)
    x = {"features": np.random.rand(8, *shape).astype("float32"), "tokens": np.random.randint(0, 20, (8, 7))}
    y = np.random.randint(0, 20, (8, 7))
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    path = str(tmp_path / "decoder.keras")
    export.plain_copy(model).save(path)  # what export saves: uncompiled, strategy-free
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert not [layer for layer in loaded.layers if isinstance(layer, keras.layers.Lambda)]
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("decoder,shape", [("merge", [3, 3, 12]), ("init_lstm", [12]), ("attention", [3, 3, 12]),
                                           ("attention", [12]), ("transformer", [12]),
                                           ("transformer", [3, 3, 12])])
def test_stepwise_decoding_reproduces_whole_sequence_logits(decoder, shape):
    """Decoding feeds one token at a time with carried state; it must compute what training's model computes."""
    keras.utils.set_random_seed(1)
    model = architectures.build_decoder(decoder, shape, vocab_size=30, embedding_dim=8, units=16, dropout=0.3)
    features = np.random.rand(5, *shape).astype("float32")
    tokens = np.random.randint(0, 30, (5, 9)).astype("int32")
    whole = model({"features": features, "tokens": tokens}, training=False).numpy()
    stepper = stepwise.StepwiseDecoder(model)
    state = stepper.start(features, tokens.shape[1])
    for t in range(tokens.shape[1]):
        logits, state = stepper.step(state, tokens[:, t])
        np.testing.assert_allclose(logits.numpy(), whole[:, t], rtol=1e-4, atol=1e-5, err_msg=f"step {t}")


def test_every_decoder_gives_float32_logits_under_mixed_precision():
    features = {"pooled": np.random.rand(2, 12).astype("float32"), "spatial": np.random.rand(2, 2, 2, 12)}
    tokens = np.random.randint(0, 20, (2, 4)).astype("int32")
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        for decoder in DECODERS:
            for kind, values in features.items():
                model = architectures.build_decoder(decoder, values.shape[1:], vocab_size=20, embedding_dim=8,
                                                    units=16)
                assert model.get_layer("word_embedding").compute_dtype == "bfloat16"
                logits = model({"features": values.astype("float32"), "tokens": tokens}, training=False)
                assert logits.dtype == "float32" and logits.shape == (2, 4, 20), (decoder, kind)
                assert np.isfinite(keras.ops.convert_to_numpy(logits)).all(), (decoder, kind)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _log_probs_of(model, features, ids):
    """Total log p (teacher forcing, the whole-sequence model) of each row's words after START, END included."""
    log_probs = tf.nn.log_softmax(model({"features": features, "tokens": ids[:, :-1]}, training=False)).numpy()
    picked = np.take_along_axis(log_probs, ids[:, 1:, None], axis=-1)[..., 0]
    return (picked * (ids[:, 1:] != PAD_ID)).sum(axis=1)


@pytest.mark.slow
def test_greedy_beam_and_sampling_search_a_transformer():
    keras.utils.set_random_seed(2)
    model = architectures.build_decoder("transformer", [2, 2, 12], vocab_size=12, embedding_dim=8, units=16,
                                        dropout=0.1, transformer_layers=2, transformer_heads=2)
    features = np.random.default_rng(0).random((4, 2, 2, 12), np.float32)
    decoder = search.SequenceDecoder(model, 12)
    greedy, greedy_scores = decoder.greedy(features, max_length=6)
    one, one_scores = decoder.beam(features, beam_size=1, max_length=6, length_penalty=0.0)
    np.testing.assert_array_equal(one, greedy)
    np.testing.assert_array_equal(one_scores, greedy_scores)
    beam, beam_scores = decoder.beam(features, beam_size=3, max_length=6, length_penalty=0.0)
    assert beam.shape == greedy.shape == (4, 8) and (beam[:, 0] == START_ID).all()
    assert (beam_scores >= greedy_scores - 1e-5).all()
    # the scores are what the whole model gives those captions: the caches followed the beams
    np.testing.assert_allclose(beam_scores, _log_probs_of(model, features, beam), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(greedy_scores, _log_probs_of(model, features, greedy), rtol=1e-4, atol=1e-4)
    ranked, ranked_scores = decoder.ranked(features, Decoding(3, 0.0, 6), top=3)  # every beam, best first
    np.testing.assert_array_equal(ranked[:, 0], beam)
    assert (np.diff(ranked_scores, axis=1) <= 0).all()  # no length penalty: ranked by the log-probability
    assert all(len({tuple(row) for row in image}) == 3 for image in ranked)  # three different captions
    np.testing.assert_allclose(ranked_scores.ravel(), _log_probs_of(model, np.repeat(features, 3, axis=0),
                                                                     ranked.reshape(12, 8)), rtol=1e-4, atol=1e-4)
    sampled, sampled_scores = decoder.sample(features, samples_per_image=3, max_length=6, seed=5)
    assert sampled.shape == (12, 8) and (sampled[:, 0] == START_ID).all()
    np.testing.assert_allclose(sampled_scores, _log_probs_of(model, np.repeat(features, 3, axis=0), sampled),
                               rtol=1e-4, atol=1e-4)
