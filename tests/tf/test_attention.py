"""The attention decoder: one-word steps reproduce training, its regulariser, saving and loading."""
import numpy as np
import pytest

from captioning.model.decoder import Architecture, DecoderConfig, build_model, compile_model, feature_statistics, set_feature_statistics, step_decoder
from captioning.model.model_dir import load_keras_model, load_weights, save_keras

GRID = (2, 3, 5)  # rows, columns, channels
CONFIG = DecoderConfig(
    vocab_size=30, max_length=9, feature_dim=30, feature_shape=GRID,
    architecture=Architecture(decoder="attention", embedding_dim=8, units=16, hidden_units=20, attention_units=12, dropout=0.0),
)


def _model(seed=0, config=CONFIG):
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model(config)
    rng = np.random.default_rng(seed)
    set_feature_statistics(model, *feature_statistics(rng.normal(3.0, 2.0, size=(50, 30))))
    return model


def _batch(seed=2, rows=3, steps=8):
    rng = np.random.default_rng(seed)
    features = rng.normal(3.0, 2.0, size=(rows, 30)).astype("float32")
    ids = rng.integers(4, 30, size=(rows, steps)).astype("int32")
    ids[:, 0] = 2  # startseq
    return features, ids


def test_one_step_decoder_reproduces_teacher_forced_scores():
    import tensorflow as tf

    model = _model()
    features, ids = _batch()
    expected = tf.nn.log_softmax(model([features, ids], training=False)).numpy()  # (3, 8, 30)
    step = step_decoder(model, CONFIG)
    state = step.initial_state(features)
    assert [tuple(s.shape) for s in state] == [(3, 6, 12), (3, 6, 12), (3, 16), (3, 16)]
    for t in range(8):
        log_probs, state = step.step(tf.constant(ids[:, t]), state)
        np.testing.assert_allclose(log_probs.numpy(), expected[:, t], rtol=1e-4, atol=1e-5)


def test_the_picture_matters_cell_by_cell():
    """Moving a cell's content elsewhere in the grid changes the scores: the decoder knows where it looked."""
    model = _model()
    features, ids = _batch(rows=1)
    grid = features.reshape(1, 6, 5)
    swapped = grid[:, [1, 0, 2, 3, 4, 5]].reshape(1, 30)  # two cells traded places, same pooled content
    a = np.asarray(model([features, ids], training=False))
    b = np.asarray(model([swapped, ids], training=False))
    assert np.abs(a - b).max() > 1e-4


def test_attention_weights_are_a_distribution_over_cells():
    model = _model()
    features, ids = _batch()
    weights = step_decoder(model, CONFIG).attention(features, ids).numpy()  # (3, 8, 6)
    assert weights.shape == (3, 8, 6)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-5)


def test_regulariser_counts_only_real_steps_and_only_while_training():
    import tensorflow as tf

    model = _model()
    features, ids = _batch(rows=2)
    ids[0, 4:] = [3, 0, 0, 0]  # startseq w w w endseq pad pad pad: 4 steps predict a word
    model([features, ids], training=False)
    assert not model.losses
    model([features, ids], training=True)
    (penalty,) = model.losses
    weights = step_decoder(model, CONFIG).attention(features, ids).numpy()  # (2, 8, 6), dropout is 0
    real = np.ones((2, 8))
    real[0, 4:] = 0
    looked = (weights * real[:, :, None]).sum(axis=1)  # (2, 6)
    assert float(penalty) == pytest.approx(CONFIG.architecture.attention_penalty * np.mean((1 - looked) ** 2), rel=1e-4)
    with tf.GradientTape() as tape:
        model([features, ids], training=True)
        total = tf.add_n(model.losses)
    score = model.get_layer("attention_lstm").score_kernel
    assert np.abs(tape.gradient(total, score).numpy()).max() > 0  # the regulariser trains the attention


def test_whole_model_checkpoint_and_weights_round_trip(tmp_path):
    """The .keras checkpoint (custom layers and optimizer state included) and the weights file rebuild the same network."""
    model = _model(seed=4)
    compile_model(model, 1e-3)
    features, ids = _batch()
    model.fit([features, ids], np.roll(ids, -1, axis=1), epochs=2, verbose=0)  # optimizer state to carry over
    expected = np.asarray(model([features, ids], training=False))
    save_keras(model, str(tmp_path / "epoch-0001.keras"))
    restored = load_keras_model(str(tmp_path / "epoch-0001.keras"))
    np.testing.assert_allclose(np.asarray(restored([features, ids], training=False)), expected, rtol=1e-5, atol=1e-6)
    assert int(restored.optimizer.iterations.numpy()) == 2
    for saved, loaded in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_allclose(np.asarray(loaded), np.asarray(saved), rtol=1e-6)
    save_keras(model, str(tmp_path / "model.weights.h5"))
    rebuilt = build_model(CONFIG)
    load_weights(rebuilt, str(tmp_path / "model.weights.h5"))
    np.testing.assert_allclose(np.asarray(rebuilt([features, ids], training=False)), expected, rtol=1e-5, atol=1e-6)


def test_feature_statistics_are_pooled_per_channel():
    model = _model()
    rng = np.random.default_rng(9)
    grids = rng.normal(0.0, 1.0, size=(40, 6, 5)) * np.arange(1, 6) + np.arange(5) * 10  # channel c: mean 10c, std c+1
    set_feature_statistics(model, *feature_statistics(grids.reshape(40, 30)))
    norm = model.get_layer("feature_norm")
    out = np.asarray(norm(grids.astype("float32")))
    flat = grids.reshape(-1, 5)
    np.testing.assert_allclose(out.reshape(-1, 5), (flat - flat.mean(axis=0)) / flat.std(axis=0), rtol=1e-3, atol=1e-3)


def test_fit_trains_with_the_regulariser_and_reports_plain_dev_loss():
    import keras

    model = _model()
    compile_model(model, 1e-2)
    features, ids = _batch(rows=16, steps=8)
    targets = np.roll(ids, -1, axis=1)
    weights = np.ones_like(targets, dtype="float32")
    history = model.fit([features, ids], targets, sample_weight=weights, epochs=3, batch_size=8, verbose=0, validation_data=([features, ids], targets, weights))
    assert history.history["loss"][-1] < history.history["loss"][0]
    entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(targets, model([features, ids], training=False))
    assert history.history["val_loss"][-1] == pytest.approx(float(entropy), rel=1e-4)  # no regulariser in the dev loss
