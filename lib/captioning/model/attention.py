"""The attention decoder: an LSTM that looks at the CNN's spatial grid again for every word.

Soft attention as in Show, Attend and Tell (Xu et al., 2015): the picture is a grid of N
cells (7x7 for ResNet50), each a vector of the last feature map. Before each word the
LSTM's state scores every cell, a softmax turns the scores into weights, and the weighted
mean of the cells (the context) is fed to the LSTM together with the previous word, so a
caption can say "a red circle" while looking at the circle and "two blue squares" while
looking at the squares. A learned vector per cell is added to its features, so the
context also says where it came from ("to the left of").

Training model::

    features (B, N*C) ─ Reshape (B, N, C) ─ Normalization (per channel) ─ Dense(A, relu) ─ + cell positions ─ cells (B, N, A)
    input_ids (B, T) ─ Embedding(E) ─ Dropout ─ words (B, T, E)
    AttentionLSTM(words, cells): h0, c0 from the mean cell; every step t:
        alpha_t = softmax(w · tanh(K cells + Q h_{t-1}))          (B, N)
        z_t = sigmoid(g · h_{t-1}) * sum_i alpha_ti cells_i        (B, A)  gated context
        h_t, c_t = LSTM([word_t, z_t], h_{t-1}, c_t-1)            (B, U)
    [h_t, z_t, word_t] ─ Dropout ─ Dense(H, relu) ─ Dense(V) logits (B, T, V)   ("deep output")

Doubly stochastic regularisation: while training, the layer adds
``penalty * mean over images and cells of (1 - sum_t alpha_ti)^2`` to the loss (the sum
over the caption's real steps), which asks the decoder to look at every part of the
picture over a caption instead of staring at one cell; it is not part of ``val_loss``.

Inference runs the same layers one word at a time through :class:`AttentionStepDecoder`
(``initial_state`` / ``step``), which the compiled search drives like the merge decoder's.
This module imports Keras at the top (it defines Keras layers); the pure modules import it
only inside functions.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from captioning.model.decoder import END_ID, DecoderConfig, embedded_words


@keras.saving.register_keras_serializable(package="captioning")
class CellPositions(layers.Layer):
    """Adds a learned vector to every grid cell: (B, N, A) -> (B, N, A)."""

    def build(self, input_shape):
        self.positions = self.add_weight(name="positions", shape=(int(input_shape[1]), int(input_shape[2])), initializer=keras.initializers.RandomNormal(stddev=0.1))

    def call(self, cells):
        return cells + self.positions[None, :, :]  # (B, N, A)


@keras.saving.register_keras_serializable(package="captioning")
class AttentionLSTM(layers.Layer):
    """An LSTM fed with a soft-attention context of the grid cells at every step.

    ``call([words (B, T, E), cells (B, N, A), input_ids (B, T)])`` -> (outputs (B, T, U),
    contexts (B, T, A)). ``start``, ``attend`` and ``cell`` are the pieces of one step, used
    as they are by the step decoder, so inference computes exactly what training did.
    """

    def __init__(self, units: int, attention_units: int, penalty: float = 1.0, end_id: int = END_ID, **kwargs):
        super().__init__(**kwargs)
        self.units, self.attention_units, self.penalty, self.end_id = int(units), int(attention_units), float(penalty), int(end_id)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "attention_units": self.attention_units, "penalty": self.penalty, "end_id": self.end_id}

    def build(self, input_shape):
        words_shape, cells_shape, _ = input_shape
        embed, width, units, keys = int(words_shape[-1]), int(cells_shape[-1]), self.units, self.attention_units

        def weight(name, shape, initializer="glorot_uniform"):
            return self.add_weight(name=name, shape=shape, initializer=initializer)

        self.init_h, self.init_h_bias = weight("init_h", (width, units)), weight("init_h_bias", (units,), "zeros")
        self.init_c, self.init_c_bias = weight("init_c", (width, units)), weight("init_c_bias", (units,), "zeros")
        self.key_kernel, self.key_bias = weight("key_kernel", (width, keys)), weight("key_bias", (keys,), "zeros")
        self.query_kernel = weight("query_kernel", (units, keys))
        self.score_kernel = weight("score_kernel", (keys,), keras.initializers.RandomNormal(stddev=0.05))
        self.gate_kernel, self.gate_bias = weight("gate_kernel", (units, 1)), weight("gate_bias", (1,), "zeros")
        self.kernel = weight("kernel", (embed + width, 4 * units))
        self.recurrent_kernel = weight("recurrent_kernel", (units, 4 * units), "orthogonal")
        forget_ones = np.concatenate([np.zeros(units), np.ones(units), np.zeros(2 * units)]).astype("float32")  # gates i, f, g, o
        self.bias = weight("bias", (4 * units,), keras.initializers.Constant(forget_ones))

    def start(self, cells):
        """cells (B, N, A) -> (keys (B, N, K), h0 (B, U), c0 (B, U))."""
        mean = ops.mean(cells, axis=1)  # (B, A)
        h = ops.tanh(ops.matmul(mean, self.init_h) + self.init_h_bias)  # (B, U)
        c = ops.tanh(ops.matmul(mean, self.init_c) + self.init_c_bias)  # (B, U)
        keys = ops.matmul(cells, self.key_kernel) + self.key_bias  # (B, N, K): computed once per image
        return keys, h, c

    def attend(self, cells, keys, h):
        """(context (B, A), weights (B, N)) for the state h (B, U)."""
        query = ops.matmul(h, self.query_kernel)  # (B, K)
        scores = ops.matmul(ops.tanh(keys + query[:, None, :]), self.score_kernel)  # (B, N)
        alpha = ops.softmax(scores, axis=-1)  # (B, N)
        gate = ops.sigmoid(ops.matmul(h, self.gate_kernel) + self.gate_bias)  # (B, 1)
        context = gate * ops.sum(alpha[:, :, None] * cells, axis=1)  # (B, A)
        return context, alpha

    def cell(self, words, context, h, c):
        """One LSTM step on [word (B, E), context (B, A)] -> (h, c), each (B, U)."""
        z = ops.matmul(ops.concatenate([words, context], axis=-1), self.kernel) + ops.matmul(h, self.recurrent_kernel) + self.bias  # (B, 4U)
        i, f, g, o = ops.split(z, 4, axis=-1)  # each (B, U)
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)  # (B, U)
        h = ops.sigmoid(o) * ops.tanh(c)  # (B, U)
        return h, c

    def call(self, inputs, training=False):
        import tensorflow as tf

        words, cells, input_ids = inputs  # (B, T, E), (B, N, A), (B, T)
        keys, h, c = self.start(cells)
        steps = tf.shape(words)[1]  # scalar T
        by_time = tf.transpose(words, (1, 0, 2))  # (T, B, E)

        def record(dtype):
            return tf.TensorArray(dtype, size=steps, element_shape=None)

        def step(t, h, c, outputs, contexts, alphas):
            context, alpha = self.attend(cells, keys, h)  # (B, A), (B, N)
            h, c = self.cell(by_time[t], context, h, c)  # (B, U), (B, U)
            return t + 1, h, c, outputs.write(t, h), contexts.write(t, context), alphas.write(t, alpha)

        _, _, _, outputs, contexts, alphas = tf.while_loop(
            lambda t, *_: t < steps, step, (tf.constant(0), h, c, record(h.dtype), record(h.dtype), record(h.dtype)),
        )
        outputs, contexts, alphas = outputs.stack(), contexts.stack(), alphas.stack()  # (T, B, U), (T, B, A), (T, B, N)
        if training and self.penalty > 0:
            # steps that predict a real word: every input before endseq (padding follows it)
            real = tf.cast(tf.logical_and(tf.not_equal(input_ids, 0), tf.not_equal(input_ids, self.end_id)), alphas.dtype)  # (B, T)
            looked = tf.reduce_sum(alphas * tf.transpose(real)[:, :, None], axis=0)  # (B, N): attention each cell got over the caption
            self.add_loss(self.penalty * tf.reduce_mean(tf.square(1.0 - looked)))
        return tf.transpose(outputs, (1, 0, 2)), tf.transpose(contexts, (1, 0, 2))  # (B, T, U), (B, T, A)

    def compute_output_shape(self, input_shape):
        words_shape, cells_shape, _ = input_shape
        return (words_shape[0], words_shape[1], self.units), (words_shape[0], words_shape[1], int(cells_shape[-1]))


def build_attention_model(config: DecoderConfig, embedding_matrix: np.ndarray | None = None):
    """Keras model ((features (B, N*C), input_ids (B, T)) -> logits (B, T, V))."""
    sizes = config.architecture
    rows, cols, channels = config.feature_shape
    features = keras.Input((config.feature_dim,), name="features")  # (B, N*C): the grid, row by row
    input_ids = keras.Input((None,), dtype="int32", name="input_ids")  # (B, T), T <= max_length - 1

    grid = layers.Reshape((rows * cols, channels), name="grid")(features)  # (B, N, C)
    if sizes.normalize_features:
        grid = layers.Normalization(axis=-1, name="feature_norm")(grid)  # (B, N, C): (x - mean_c) / std_c
    cells = layers.Dense(sizes.attention_units, activation="relu", name="grid_dense")(grid)  # (B, N, A)
    cells = CellPositions(name="cell_positions")(cells)  # (B, N, A)

    words = embedded_words(config, input_ids, embedding_matrix)  # (B, T, E)
    outputs, contexts = AttentionLSTM(sizes.units, sizes.attention_units, sizes.attention_penalty, name="attention_lstm")([words, cells, input_ids])  # (B, T, U), (B, T, A)

    deep = layers.Concatenate(name="deep_output")([outputs, contexts, words])  # (B, T, U + A + E)
    deep = layers.Dropout(sizes.dropout, name="output_dropout")(deep)  # (B, T, U + A + E)
    hidden = layers.Dense(sizes.hidden_units, activation="relu", name="hidden")(deep)  # (B, T, H)
    logits = layers.Dense(config.vocab_size, name="logits", dtype="float32")(hidden)  # (B, T, V)
    return keras.Model([features, input_ids], logits, name="attention_decoder")


class AttentionStepDecoder:
    """The trained attention layers one word at a time, for batched search.

    ``initial_state(features (B, N*C))`` -> (cells (B, N, A), keys (B, N, K), h (B, U), c (B, U));
    ``step(word_ids (B,), state)`` -> (log_probs (B, V), state). Dropout is inactive.
    """

    def __init__(self, model):
        names = {layer.name for layer in model.layers}
        self.grid = model.get_layer("grid")
        self.feature_norm = model.get_layer("feature_norm") if "feature_norm" in names else None
        self.grid_dense = model.get_layer("grid_dense")
        self.positions = model.get_layer("cell_positions")
        self.embedding = model.get_layer("embedding")
        self.lstm = model.get_layer("attention_lstm")
        self.hidden = model.get_layer("hidden")
        self.logits = model.get_layer("logits")

    def initial_state(self, features):
        import tensorflow as tf

        grid = self.grid(tf.cast(features, tf.float32))  # (B, N, C)
        if self.feature_norm is not None:
            grid = self.feature_norm(grid)  # (B, N, C)
        cells = self.positions(self.grid_dense(grid))  # (B, N, A)
        keys, h, c = self.lstm.start(cells)  # (B, N, K), (B, U), (B, U)
        return (cells, keys, h, c)

    def step(self, word_ids, state):
        import tensorflow as tf

        cells, keys, h, c = state
        words = self.embedding(word_ids)  # (B, E)
        context, _ = self.lstm.attend(cells, keys, h)  # (B, A)
        h, c = self.lstm.cell(words, context, h, c)  # (B, U), (B, U)
        hidden = self.hidden(tf.concat([h, context, words], axis=-1))  # (B, H)
        log_probs = tf.nn.log_softmax(tf.cast(self.logits(hidden), tf.float32))  # (B, V)
        return log_probs, (cells, keys, h, c)

    def attention(self, features, word_ids):
        """Attention weights (B, T, N) the model gives the cells while reading ``word_ids`` (B, T)."""
        import tensorflow as tf

        cells, keys, h, c = self.initial_state(features)
        weights = []
        for t in range(int(word_ids.shape[1])):
            context, alpha = self.lstm.attend(cells, keys, h)  # (B, A), (B, N)
            h, c = self.lstm.cell(self.embedding(word_ids[:, t]), context, h, c)
            weights.append(alpha)
        return tf.stack(weights, axis=1)  # (B, T, N)
