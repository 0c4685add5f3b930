"""The decoder architectures: each trains and saves without custom objects, and steps like it runs whole."""
import keras
import numpy as np
import pytest

from captioner.config import TrainConfig
from captioner.decoder import architectures, stepwise
from trainer import export, training


@pytest.mark.slow
@pytest.mark.parametrize("decoder,shape", [("merge", [12]), ("init_lstm", [2, 2, 12]), ("attention", [12])])
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
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("decoder,shape", [("merge", [3, 3, 12]), ("init_lstm", [12]), ("attention", [3, 3, 12]),
                                           ("attention", [12])])
def test_stepwise_decoding_reproduces_whole_sequence_logits(decoder, shape):
    """Decoding feeds one token at a time with carried state; it must compute what training's model computes."""
    keras.utils.set_random_seed(1)
    model = architectures.build_decoder(decoder, shape, vocab_size=30, embedding_dim=8, units=16, dropout=0.3)
    features = np.random.rand(5, *shape).astype("float32")
    tokens = np.random.randint(0, 30, (5, 9)).astype("int32")
    whole = model({"features": features, "tokens": tokens}, training=False).numpy()
    stepper = stepwise.StepwiseDecoder(model)
    state = stepper.start(features)
    for t in range(tokens.shape[1]):
        logits, state = stepper.step(state, tokens[:, t])
        np.testing.assert_allclose(logits.numpy(), whole[:, t], rtol=1e-4, atol=1e-5, err_msg=f"step {t}")
