"""The packed LSTM computes what Keras's own LSTM computes, values and gradients, for less work."""
import numpy as np
import pytest

from captioning.model.decoder import Architecture, DecoderConfig, build_training_model, feature_statistics, set_feature_statistics
from captioning.model.model_dir import load_keras_model, load_weights, save_keras

BATCH, EMBED, UNITS = 7, 5, 6


def _layers(seed=0, **kwargs):
    """A PackedLSTM and a keras LSTM (zero outputs past the mask, as cuDNN) with the same weights."""
    import keras

    from captioning.model.packing import LSTM as PackedLSTM

    keras.utils.set_random_seed(seed)
    packed = PackedLSTM(UNITS, return_sequences=True, return_state=True, **kwargs)
    reference = keras.layers.LSTM(UNITS, return_sequences=True, return_state=True, zero_output_for_mask=True, **kwargs)
    sample = np.zeros((1, 3, EMBED), "float32")
    packed(sample), reference(sample)
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0.0, 0.4, size=w.shape).astype("float32") for w in reference.get_weights()]  # non-zero bias too
    packed.set_weights(weights), reference.set_weights(weights)
    return packed, reference


def _values_and_gradients(layer, x, mask, h0, c0):
    """Outputs, final states and the gradients of a loss that reads all three, for every input and weight."""
    import tensorflow as tf

    x, h0, c0 = (tf.constant(v) for v in (x, h0, c0))
    rng = np.random.default_rng(9)
    out_weights = tf.constant(rng.normal(size=(x.shape[0], x.shape[1], UNITS)).astype("float32"))  # (B, T, U)
    with tf.GradientTape() as tape:
        tape.watch([x, h0, c0])
        outputs, h, c = layer(x, mask=None if mask is None else tf.constant(mask), initial_state=[h0, c0], training=True)
        loss = tf.reduce_sum(outputs * out_weights) + tf.reduce_sum(h * tf.sin(c))
    gradients = tape.gradient(loss, [x, h0, c0, *layer.trainable_variables])
    return [v.numpy() for v in (outputs, h, c, *gradients)]


def _batch(time, lengths, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, time, EMBED)).astype("float32")
    mask = np.arange(time)[None, :] < np.asarray(lengths)[:, None]  # (B, T), right-padded
    h0, c0 = (rng.normal(0.0, 0.5, size=(BATCH, UNITS)).astype("float32") for _ in range(2))
    return x, mask, h0, c0


NAMES = ("outputs", "h", "c", "d_x", "d_h0", "d_c0", "d_kernel", "d_recurrent_kernel", "d_bias")


def _assert_same(got, expected):
    for name, a, b in zip(NAMES, got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)


def test_packed_path_is_what_a_cpu_runs():
    """Without it the comparisons below would compare Keras's LSTM with itself."""
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        pytest.skip("a GPU runs Keras's cuDNN path; the packed loop is the CPU's")
    packed, _ = _layers()
    assert packed._packs()
    with_dropout, _ = _layers(dropout=0.2)
    assert not with_dropout._packs()  # Keras's own loop: the mask of dropped inputs is per step


@pytest.mark.parametrize("lengths", [
    [9, 4, 0, 9, 1, 6, 3],  # every kind of row: full, empty, one step, unsorted
    [5, 5, 5, 5, 5, 5, 5],  # the longest caption shorter than T: the last steps have no row
])
def test_values_and_gradients_equal_keras_lstm_with_the_same_mask(lengths):
    packed, reference = _layers()
    batch = _batch(9, lengths)
    got, expected = _values_and_gradients(packed, *batch), _values_and_gradients(reference, *batch)
    _assert_same(got, expected)
    rows = np.asarray(lengths)
    assert np.all(got[0][np.arange(9)[None, :] >= rows[:, None]] == 0.0)  # nothing past a row's end
    assert np.all(got[3][np.arange(9)[None, :] >= rows[:, None]] == 0.0)  # and no gradient into padding


def test_without_a_mask_every_step_is_computed():
    packed, reference = _layers()
    x, _, h0, c0 = _batch(6, [6] * BATCH)
    _assert_same(_values_and_gradients(packed, x, None, h0, c0), _values_and_gradients(reference, x, None, h0, c0))


def test_one_compiled_function_serves_batches_of_any_length():
    """Training batches are cut after their longest caption, so T changes from batch to batch."""
    import tensorflow as tf

    packed, reference = _layers()

    def compiled(layer):
        return tf.function(lambda x, mask, h0, c0: layer(x, mask=mask, initial_state=[h0, c0]), reduce_retracing=True)

    run_packed, run_reference = compiled(packed), compiled(reference)
    for time, lengths in ((4, [4, 2, 1, 3, 4, 0, 2]), (11, [11, 7, 3, 9, 1, 2, 10])):
        x, mask, h0, c0 = (tf.constant(v) for v in _batch(time, lengths))
        for a, b in zip(run_packed(x, mask, h0, c0), run_reference(x, mask, h0, c0)):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)


def test_a_mask_with_a_gap_is_refused():
    import tensorflow as tf

    packed, _ = _layers()
    x, mask, h0, c0 = _batch(5, [5] * BATCH)
    mask[2, 1] = False  # a hole inside row 2
    with pytest.raises(tf.errors.InvalidArgumentError, match="the mask must be right-padded"):
        packed(tf.constant(x), mask=tf.constant(mask), initial_state=[tf.constant(h0), tf.constant(c0)])


CONFIG = DecoderConfig(vocab_size=30, max_length=9, feature_dim=12, architecture=Architecture(embedding_dim=8, units=16, hidden_units=20, dropout=0.0))


def _keras_lstm_merge_model(config):
    """The merge model as it was built with Keras's own LSTM and no mask (same layer names)."""
    import keras
    from keras import layers

    sizes = config.architecture
    features = keras.Input((config.feature_dim,), name="features")
    input_ids = keras.Input((None,), dtype="int32", name="input_ids")
    image = layers.Normalization(name="feature_norm")(features)
    image = layers.Dense(sizes.units, activation="relu", name="image_dense")(layers.Dropout(sizes.dropout, name="image_dropout")(image))
    words = layers.Dropout(sizes.dropout, name="word_dropout")(layers.Embedding(config.vocab_size, sizes.embedding_dim, name="embedding")(input_ids))
    sequence = layers.LSTM(sizes.units, return_sequences=True, name="lstm")(words)
    merged = layers.Add(name="merge")([sequence, layers.Reshape((1, sizes.units), name="image_time")(image)])
    logits = layers.Dense(config.vocab_size, name="logits")(layers.Dense(sizes.hidden_units, activation="relu", name="hidden")(merged))
    return keras.Model([features, input_ids], logits)


def _padded_batch(seed=3):
    rng = np.random.default_rng(seed)
    lengths = np.array([9, 4, 6, 2, 9])  # tokens incl. startseq and endseq
    tokens = np.zeros((5, 9), "int32")
    for row, n in enumerate(lengths):
        tokens[row, 0], tokens[row, 1 : n - 1], tokens[row, n - 1] = 2, rng.integers(4, 30, n - 2), 3
    features = rng.normal(3.0, 2.0, size=(5, 12)).astype("float32")
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    return features, inputs, targets, (targets != 0).astype("float32")


def _loss_and_gradients(model, batch):
    import keras
    import tensorflow as tf

    features, inputs, targets, weights = batch
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")
    with tf.GradientTape() as tape:
        loss = loss_fn(targets, model([features, inputs], training=True), sample_weight=weights)
    return float(loss), [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]  # the embedding's are IndexedSlices


def test_merge_model_trains_exactly_as_with_keras_lstm_over_padding(tmp_path):
    """Same weights, a batch of padded captions: the per-word loss and every gradient are those
    of the Keras LSTM run over the padding too, and the older model's weights file loads."""
    import keras

    keras.utils.set_random_seed(0)
    before = _keras_lstm_merge_model(CONFIG)
    set_feature_statistics(before, *feature_statistics(np.random.default_rng(0).normal(3.0, 2.0, size=(50, 12))))
    save_keras(before, str(tmp_path / "model.weights.h5"))
    model = build_training_model(CONFIG)
    load_weights(model, str(tmp_path / "model.weights.h5"))
    assert type(model.get_layer("lstm")).__module__ == "captioning.model.packing"
    for a, b in zip(model.get_weights(), before.get_weights()):
        np.testing.assert_array_equal(a, b)

    batch = _padded_batch()
    features, inputs, _, _ = batch
    real = inputs != 0
    logits, expected_logits = model([features, inputs]).numpy(), before([features, inputs]).numpy()  # (B, T, V)
    np.testing.assert_allclose(logits[real], expected_logits[real], rtol=1e-5, atol=1e-6)
    assert np.all(logits[~real] == 0.0)  # padding is not computed
    loss, gradients = _loss_and_gradients(model, batch)
    expected_loss, expected_gradients = _loss_and_gradients(before, batch)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert len(gradients) == len(expected_gradients)
    for variable, a, b in zip(model.trainable_variables, gradients, expected_gradients):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=variable.path)


def test_a_checkpoint_of_the_merge_model_restores_its_packed_lstm(tmp_path):
    model = build_training_model(CONFIG)
    save_keras(model, str(tmp_path / "epoch-0001.keras"))
    restored = load_keras_model(str(tmp_path / "epoch-0001.keras"))
    assert type(restored.get_layer("lstm")).__module__ == "captioning.model.packing"
    _, inputs, _, _ = _padded_batch()
    features = np.ones((5, 12), "float32")
    np.testing.assert_allclose(restored([features, inputs]).numpy(), model([features, inputs]).numpy(), rtol=1e-6)
