import numpy as np
import pytest

from captioning.model.decoder import Architecture, DecoderConfig, StepDecoder, build_training_model, feature_statistics, load_glove, set_feature_statistics
from captioning.model.model_dir import load_weights, save_keras

CONFIG = DecoderConfig(vocab_size=30, max_length=9, feature_dim=12, architecture=Architecture(embedding_dim=8, units=16, hidden_units=20))


def _model(seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    model = build_training_model(CONFIG)
    rng = np.random.default_rng(seed)
    set_feature_statistics(model, *feature_statistics(rng.normal(3.0, 2.0, size=(50, 12))))
    return model


def test_training_model_scores_every_position():
    model = _model()
    ids = np.random.default_rng(1).integers(4, 30, size=(4, 8)).astype("int32")
    ids[1, 5:] = ids[3, 2:] = 0  # padding after the caption
    logits = np.asarray(model([np.ones((4, 12), "float32"), ids], training=False))
    assert logits.shape == (4, 8, 30)


def test_one_step_decoder_reproduces_teacher_forced_scores():
    """Feeding words one at a time gives the same next-word distribution at every position."""
    import tensorflow as tf

    model = _model()
    rng = np.random.default_rng(2)
    features = rng.normal(3.0, 2.0, size=(3, 12)).astype("float32")
    ids = rng.integers(1, 30, size=(3, 8)).astype("int32")
    expected = tf.nn.log_softmax(model([features, ids], training=False)).numpy()  # (3, 8, 30)
    step = StepDecoder(model)
    state = step.initial_state(features)
    for t in range(8):
        log_probs, state = step.step(tf.constant(ids[:, t]), state)
        np.testing.assert_allclose(log_probs.numpy(), expected[:, t], rtol=1e-4, atol=1e-5)


def test_feature_statistics_standardise_and_survive_a_weights_round_trip(tmp_path):
    model = _model()
    vectors = np.random.default_rng(3).normal(3.0, 2.0, size=(50, 12))
    mean, variance, count = feature_statistics(vectors)
    set_feature_statistics(model, mean, variance, count)
    norm = model.get_layer("feature_norm")
    out = np.asarray(norm(vectors.astype("float32")))
    np.testing.assert_allclose(out, (vectors - mean) / np.sqrt(variance), rtol=1e-4, atol=1e-4)
    save_keras(model, str(tmp_path / "w.weights.h5"))
    again = build_training_model(CONFIG)
    load_weights(again, str(tmp_path / "w.weights.h5"))
    np.testing.assert_allclose(np.asarray(again.get_layer("feature_norm")(vectors.astype("float32"))), out, rtol=1e-5)


def test_glove_file_initialises_known_words(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("dog 1 2 3\nrunning 4 5 6\nzebra 7 8 9\n")
    words = ("<pad>", "<unk>", "startseq", "endseq", "dog", "running", "cat")
    matrix, found = load_glove(str(path), words, 3, seed=0)
    assert found == 2 and matrix.shape == (7, 3)
    np.testing.assert_array_equal(matrix[4], [1, 2, 3])
    np.testing.assert_array_equal(matrix[0], [0, 0, 0])
    assert np.abs(matrix[6]).max() < 1.0  # unknown word: small random vector


def test_glove_dimension_mismatch_names_the_line(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("dog 1 2\n")
    with pytest.raises(ValueError, match=r"glove.txt:1: 2 values for 'dog', expected 3"):
        load_glove(str(path), ("<pad>", "<unk>", "startseq", "endseq", "dog"), 3)
