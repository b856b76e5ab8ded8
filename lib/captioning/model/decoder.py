"""The caption decoders' configuration, and the original project's "merge" model.

Two decoders share the training, search and model-directory code; ``Architecture.decoder``
names one:

* ``merge`` (the default, below): one pooled image vector added to the LSTM's output at
  every word. Cheap, and enough when captions name what is in the picture.
* ``attention`` (:mod:`captioning.model.attention`): soft attention over the CNN's spatial
  grid, a new look at the picture for every word (Show, Attend and Tell). Needs a spatial
  feature store; pays off when captions say which thing is where.

Merge training model::

    features (B, D) ─ Dropout ─ Dense(image_units, relu) ──────────────┐ (B, 1, U) broadcast
    input_ids (B, T) ─ Embedding(E, mask id != 0) ─ Dropout ─ packed LSTM(U, sequences) ─ add ─ (B, T, U)
        ─ pack the N real positions (N, U) ─ Dense(hidden, relu) ─ Dense(V) ─ unpack: logits (B, T, V)

One forward pass scores every prefix of a caption at once: the LSTM output at step t has
read words 0..t, which is exactly the original's "prefix -> next word" sample, without
expanding a caption of n words into n samples. Padding sits after the caption, and the LSTM
is causal, so padding never changes a real position; the loss ignores padded targets
through sample weights. No layer computes a padded position (:mod:`captioning.model.packing`):
the embedding's mask (id != 0) tells the LSTM where each caption ends (the packed loop on a
CPU, cuDNN's sequence lengths on a GPU; its output is zero past a caption's end), and the
Dense layers after it run on the real positions only; the logits of padded positions are
zeros. T may be shorter than max_length - 1: training batches drop the positions where every
caption is padding (``captioning.model.training.petastorm_input.trim_padding``), work that changes nothing.

Inference uses the same layers one word at a time through :class:`StepDecoder`
(``initial_state`` / ``step``), which the search in :mod:`captioning.model.search.compiled` drives.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from captioning.errors import InputError
from captioning.store import storage


DECODERS = ("merge", "attention")
END_ID = 3  # endseq's id, fixed by captioning.data.vocab (the attention regulariser counts steps up to it)


@dataclass(frozen=True)
class Architecture:
    """The decoder and its sizes: what ``train-decoder`` lets a user choose."""

    decoder: str = "merge"  # one of DECODERS: "merge" takes pooled vectors, "attention" a spatial grid
    embedding_dim: int = 200  # the original used 200-d GloVe vectors
    units: int = 256  # LSTM units; also the width of the image projection (they are added)
    hidden_units: int = 512  # the Dense(512, relu) after the merge
    dropout: float = 0.5  # on image vectors and embeddings, as the original
    train_embeddings: bool = True  # False freezes them (the original froze GloVe)
    normalize_features: bool = True  # standardise image vectors with training-set statistics
    attention_units: int = 256  # attention: width of the grid cells' projection and of the attention MLP
    attention_penalty: float = 1.0  # attention: weight of the doubly stochastic regulariser (every cell looked at once per caption)

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.attention_penalty < 0:
            raise ValueError(f"attention_penalty must be >= 0, got {self.attention_penalty}")


@dataclass(frozen=True)
class DecoderConfig:
    """Everything that rebuilds the trained network: the data's sizes and the architecture."""

    vocab_size: int
    max_length: int  # token ids per caption incl. startseq/endseq (the table's padded length)
    feature_dim: int  # values per image as stored (2048 for pooled ResNet50, 7*7*C for its grid)
    architecture: Architecture = field(default_factory=Architecture)
    feature_shape: tuple[int, ...] = ()  # (rows, columns, channels) of a spatial grid; () for a pooled vector

    def __post_init__(self) -> None:
        if self.feature_shape and math.prod(self.feature_shape) != self.feature_dim:
            raise ValueError(f"feature_shape {self.feature_shape} does not hold feature_dim={self.feature_dim} values")
        if self.architecture.decoder == "attention" and len(self.feature_shape) != 3:
            raise ValueError("the attention decoder needs spatial features (rows, columns, channels); extract them with extract-features --spatial")
        if self.architecture.decoder == "merge" and len(self.feature_shape) > 1:
            raise ValueError(f"the merge decoder takes pooled vectors, not a {'x'.join(map(str, self.feature_shape))} grid; extract features without --spatial, or train --decoder attention")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """What the model expects per image: (feature_dim,) pooled, (rows, columns, channels) spatial."""
        return tuple(self.feature_shape) or (self.feature_dim,)


def build_model(config: DecoderConfig, embedding_matrix: np.ndarray | None = None):
    """The training model of the decoder ``config.architecture.decoder`` names:
    (features (B, D), input_ids (B, T)) -> logits (B, T, V)."""
    if config.architecture.decoder == "attention":
        from captioning.model.attention import build_attention_model

        return build_attention_model(config, embedding_matrix)
    return build_training_model(config, embedding_matrix)


def step_decoder(model, config: DecoderConfig):
    """The trained layers as a two-method step decoder (``initial_state`` / ``step``) for search."""
    if config.architecture.decoder == "attention":
        from captioning.model.attention import AttentionStepDecoder

        return AttentionStepDecoder(model)
    return StepDecoder(model)


def build_training_model(config: DecoderConfig, embedding_matrix: np.ndarray | None = None):
    """The merge model ((features, input_ids) -> logits over the vocabulary at every position).

    :func:`build_model` picks the decoder the config names; this builds the merge one."""
    import keras
    from keras import layers

    from captioning.model import packing

    sizes = config.architecture
    features = keras.Input((config.feature_dim,), name="features")  # (B, D)
    # (B, T): any T up to max_length - 1, so training batches can drop their all-padding tail
    input_ids = keras.Input((None,), dtype="int32", name="input_ids")

    image = features
    if sizes.normalize_features:
        image = layers.Normalization(name="feature_norm")(image)  # (B, D): (x - mean) / std
    image = layers.Dropout(sizes.dropout, name="image_dropout")(image)  # (B, D)
    image = layers.Dense(sizes.units, activation="relu", name="image_dense")(image)  # (B, U)

    words = embedded_words(config, input_ids, embedding_matrix, mask_padding=True)  # (B, T, E), mask (B, T): id != 0
    sequence = packing.LSTM(sizes.units, return_sequences=True, name="lstm")(words)  # (B, T, U), zeros past each caption

    merged = layers.Add(name="merge")([sequence, layers.Reshape((1, sizes.units), name="image_time")(image)])  # (B, T, U)
    real = packing.PackPositions(name="real_positions")([merged, input_ids])  # (N, U): the N positions with a word
    hidden = layers.Dense(sizes.hidden_units, activation="relu", name="hidden")(real)  # (N, H)
    logits = layers.Dense(config.vocab_size, name="logits", dtype="float32")(hidden)  # (N, V)
    logits = packing.UnpackPositions(name="positions", dtype="float32")([logits, input_ids])  # (B, T, V), zeros at padding
    return keras.Model([features, input_ids], logits, name="merge_decoder")


def embedded_words(config: DecoderConfig, input_ids, embedding_matrix: np.ndarray | None = None, mask_padding: bool = False):
    """input_ids (B, T) -> Embedding(E) -> Dropout -> (B, T, E): the word branch both decoders
    share. The layers' names ("embedding", "word_dropout") are what GloVe initialisation and
    the step decoders look up. With ``mask_padding`` the words carry a Keras mask (id != 0)
    for the LSTM, which then computes no step past a caption's end."""
    import keras
    from keras import layers

    sizes = config.architecture
    embedding = layers.Embedding(
        config.vocab_size,
        sizes.embedding_dim,
        name="embedding",
        trainable=sizes.train_embeddings,
        mask_zero=mask_padding,
        embeddings_initializer=keras.initializers.Constant(embedding_matrix) if embedding_matrix is not None else "uniform",
    )
    return layers.Dropout(sizes.dropout, name="word_dropout")(embedding(input_ids))  # (B, T, E)


def set_feature_statistics(model, mean: np.ndarray, variance: np.ndarray, count: int) -> None:
    """Store the training features' per-dimension mean and variance in the model.

    CNN vectors are not centred and their dimensions differ in scale by orders of magnitude
    (random-initialised backbones especially); standardising them lets the image branch
    learn as fast as the word branch. The statistics are weights of the model, so they
    travel with the weights file and inference applies exactly the same transform.
    A model that normalises per channel of a grid (the attention decoder) gets the
    per-dimension moments of the flattened grid pooled over its cells.
    """
    layer = model.get_layer("feature_norm")
    mean, variance = np.asarray(mean, np.float64), np.asarray(variance, np.float64)
    channels = int(np.prod(layer.get_weights()[0].shape))  # the layer's own mean: (D,) or (C,)
    if channels != mean.size:
        mean, variance = channel_statistics(mean, variance, channels)
    layer.set_weights([mean.astype(np.float32), np.maximum(variance, 1e-6).astype(np.float32), np.asarray(count)])
    layer.finalize_state()


def channel_statistics(mean: np.ndarray, variance: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, variance) (C,) of a grid from the per-value moments of its flattened
    cells (N*C,): every cell weighs the same, so the mean is the mean of the cells' means and
    the variance the mean second moment less the squared mean."""
    cell_means = np.asarray(mean, np.float64).reshape(-1, channels)  # (N, C)
    second = np.asarray(variance, np.float64).reshape(-1, channels) + np.square(cell_means)  # (N, C)
    pooled = cell_means.mean(axis=0)  # (C,)
    return pooled, np.maximum(second.mean(axis=0) - np.square(pooled), 0.0)


def feature_statistics(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean (D,), variance (D,), count) of image vectors (N, D), in float64 for accuracy."""
    vectors = np.asarray(vectors, np.float64)
    return vectors.mean(axis=0), vectors.var(axis=0), len(vectors)


def compile_model(model, learning_rate: float) -> None:
    """Adam and per-word cross-entropy; a decoder's own regulariser (the attention one) is
    added to the training loss by its layer, so ``val_loss`` stays the plain cross-entropy."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        # per-word cross-entropy: padded positions have weight 0 and do not dilute the mean
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


class StepDecoder:
    """The trained merge layers run one word at a time, for batched search.

    ``initial_state(features)`` -> (image (B, U), h (B, U), c (B, U)), features normalised
    exactly as in training;
    ``step(word_ids (B,), state)`` -> (log_probs (B, V), state).
    Dropout is inactive (inference), so results are deterministic.
    """

    def __init__(self, model):
        names = {layer.name for layer in model.layers}
        self.feature_norm = model.get_layer("feature_norm") if "feature_norm" in names else None
        self.image_dense = model.get_layer("image_dense")
        self.embedding = model.get_layer("embedding")
        self.cell = model.get_layer("lstm").cell
        self.hidden = model.get_layer("hidden")
        self.logits = model.get_layer("logits")
        self.units = model.get_layer("lstm").units

    def initial_state(self, features):
        import tensorflow as tf

        features = tf.cast(features, tf.float32)  # (B, D)
        if self.feature_norm is not None:
            features = self.feature_norm(features)  # (B, D)
        image = self.image_dense(features)  # (B, U)
        zeros = tf.zeros_like(image)  # (B, U)
        return (image, zeros, zeros)

    def step(self, word_ids, state):
        import tensorflow as tf

        image, h, c = state
        words = self.embedding.call(word_ids)  # (B, E): the layer's own lookup, without the padding mask __call__ attaches
        output, (h, c) = self.cell(words, [h, c], training=False)  # (B, U), (B, U), (B, U)
        hidden = self.hidden(output + image)  # (B, H)
        log_probs = tf.nn.log_softmax(tf.cast(self.logits(hidden), tf.float32))  # (B, V)
        return log_probs, (image, h, c)


def load_glove(uri: str, words: tuple[str, ...], dim: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """Embedding matrix (V, dim) from a GloVe text file (``word v1 .. vdim`` per line).

    Words the file lacks get small random vectors (seeded); padding gets zeros. Returns the
    matrix and how many vocabulary words were found.
    """
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, 0.1, size=(len(words), dim)).astype(np.float32)
    matrix[0] = 0.0
    index = {w: i for i, w in enumerate(words)}
    found = 0
    for number, line in storage.iter_lines(uri):
        parts = line.rstrip().split(" ")
        if len(parts) < 2 or parts[0] not in index:
            continue
        if len(parts) != dim + 1:
            raise InputError(f"{uri}:{number}: {len(parts) - 1} values for {parts[0]!r}, expected {dim} (--embedding-dim must match the GloVe file)")
        matrix[index[parts[0]]] = np.asarray(parts[1:], dtype=np.float32)
        found += 1
    if found == 0:
        raise InputError(f"{uri}: no vocabulary word found; expected a GloVe text file ('word v1 ... v{dim}' per line)")
    return matrix, found
