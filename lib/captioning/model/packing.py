"""Teacher-forced captions computed at their real positions only, never at their padding.

A training batch holds captions of different lengths padded to the longest: on the
sample, 62% of a random batch's positions are words, the rest padding that the loss
weighs 0. The merge decoder's layers here compute only the real positions, with values
and gradients equal to computing everything (``tests/tf/test_packing.py``):

* :class:`LSTM` is ``keras.layers.LSTM`` (same weights, same cell for the step decoders)
  with its own loop for the case the merge decoder trains: right-padded captions, a mask
  from the embedding, no dropout inside the layer. Keras's generic loop (what a CPU gets;
  a GPU gets cuDNN) does, at every step and for every row, ``[x_t, h_t]`` times the whole
  kernel, and in the backward pass the weight gradients one step at a time, padding
  included. Here the rows are sorted by length, so at step t the rows still inside their
  caption are the first n_t, and only those are computed (as PyTorch's packed sequences
  do); the input projection of all real steps is one matrix product before the loop, and
  the weight gradients are three after the backward loop (``x^T dz``, ``h_{t-1}^T dz``,
  ``sum dz``), so the loops hold only the recurrent product and the gate arithmetic.
  Outputs after a row's last step are zeros and its final state is the one at its last
  step, as cuDNN and ``keras.layers.LSTM(zero_output_for_mask=True)`` give. Anything else
  (a GPU, dropout in the layer, other activations, ``go_backwards``, ``unroll``,
  ``stateful``) takes ``keras.layers.LSTM``'s own path.
* :class:`PackPositions` / :class:`UnpackPositions` take a (B, T, F) batch to its N real
  positions (N, F) and back (zeros at padding), so the Dense layers after the LSTM (the
  hidden layer and the vocabulary logits, the largest product of all with a real
  vocabulary) run on N rows instead of B*T.

A position is real when its input id is not padding (``<pad>`` is id 0, fixed by
:mod:`captioning.data.vocab`). This module imports Keras and
TensorFlow at the top (it defines Keras layers); the pure modules import it only inside
functions.
"""
from __future__ import annotations

import keras
import tensorflow as tf


@tf.custom_gradient
def packed_lstm(x, steps, h0, c0, kernel, recurrent_kernel, bias):
    """LSTM over right-padded rows, computing each row's first ``steps`` steps only.

    ``x`` (B, T, E), ``steps`` (B,) int32 in [0, T], ``h0``/``c0`` (B, U), ``kernel``
    (E, 4U), ``recurrent_kernel`` (U, 4U), ``bias`` (4U,), gates in Keras's order
    (input, forget, candidate, output). Returns (outputs (B, T, U), zeros after each row's
    last step; h (B, U) and c (B, U) at each row's last step).

    Inside, the batch is sorted longest row first and kept time-major and packed: the N
    real (step, row) pairs in step order, step t holding its n_t active rows (a prefix of
    the rows of step t-1), so a step's values are one contiguous slice of N rows.
    """
    batch, time = tf.shape(x)[0], tf.shape(x)[1]
    units = tf.shape(recurrent_kernel)[0]
    order = tf.argsort(steps, direction="DESCENDING", stable=True)  # (B,): longest rows first
    restore = tf.math.invert_permutation(order)  # (B,)
    sorted_steps = tf.gather(steps, order)  # (B,)
    real = tf.range(time)[:, None] < sorted_steps[None, :]  # (T, B): step t of row r is real
    active = tf.reduce_sum(tf.cast(real, tf.int32), axis=1)  # (T,): n_t
    offsets = tf.cumsum(active, exclusive=True)  # (T,): where step t starts among the N
    places = tf.cast(tf.where(real), tf.int32)  # (N, 2): (t, r) of each packed row, in step order

    def pack(values):  # (B, T, F) in the caller's row order -> (N, F)
        return tf.boolean_mask(tf.transpose(tf.gather(values, order), [1, 0, 2]), real)

    def unpack(packed):  # (N, F) -> (B, T, F) in the caller's row order, zeros at padding
        padded = tf.scatter_nd(places, packed, tf.stack([time, batch, tf.shape(packed)[1]]))  # (T, B, F), sorted rows
        return tf.gather(tf.transpose(padded, [1, 0, 2]), restore)

    inputs = pack(x)  # (N, E)
    h_start, c_start = tf.gather(h0, order), tf.gather(c0, order)  # (B, U)
    projected = tf.matmul(inputs, kernel) + bias  # (N, 4U): every input projection in one product

    def forward(t, h, c, saved):
        n = active[t]
        z = tf.slice(projected, [offsets[t], 0], [n, -1]) + tf.matmul(h[:n], recurrent_kernel)  # (n, 4U)
        i, f, g, o = tf.split(z, 4, axis=-1)  # (n, U) each
        i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
        c_active = f * c[:n] + i * g  # (n, U)
        h_active = o * tf.tanh(c_active)  # (n, U)
        return t + 1, _keep_rest(h_active, h), _keep_rest(c_active, c), saved.write(t, tf.concat([i, f, g, o, c_active], axis=-1))

    saved = tf.TensorArray(x.dtype, size=time, infer_shape=False)  # step t: (n_t, 5U)
    _, h_last, c_last, saved = tf.while_loop(lambda t, *_: t < time, forward, (0, h_start, c_start, saved))
    gates_and_cells = saved.concat()  # (N, 5U)
    gates, cells = gates_and_cells[:, : 4 * units], gates_and_cells[:, 4 * units :]  # (N, 4U), (N, U)
    cell_tanh = tf.tanh(cells)  # (N, U)
    hidden = gates[:, 3 * units :] * cell_tanh  # (N, U): o * tanh(c)
    outputs = unpack(hidden)  # (B, T, U), zeros past each row's end

    def gradient(d_outputs, d_h_last, d_c_last):
        d_hidden = pack(d_outputs)  # (N, U)
        # the state each packed row started from: (t-1, r) among the N, or the initial state when t = 0
        step, row = places[:, 0], places[:, 1]  # (N,), (N,)
        before = tf.where(step > 0, batch + tf.gather(offsets, tf.maximum(step - 1, 0)) + row, row)  # (N,)
        cells_before = tf.gather(tf.concat([c_start, cells], axis=0), before)  # (N, U): c_{t-1}
        hidden_before = tf.gather(tf.concat([h_start, hidden], axis=0), before)  # (N, U): h_{t-1}
        recurrent_t = tf.transpose(recurrent_kernel)  # (4U, U)

        def backward(k, dh, dc, saved_dz):
            t = time - 1 - k
            n = active[t]

            def rows(values):  # step t's n rows of a packed (N, ...) tensor
                return tf.slice(values, [offsets[t], 0], [n, -1])

            i, f, g, o = tf.split(rows(gates), 4, axis=-1)  # (n, U) each
            tanh_c = rows(cell_tanh)  # (n, U)
            dh_t = rows(d_hidden) + dh[:n]  # (n, U)
            dc_t = dc[:n] + dh_t * o * (1.0 - tanh_c * tanh_c)  # (n, U)
            dz = tf.concat([  # (n, 4U): through the gates' activations
                dc_t * g * i * (1.0 - i),
                dc_t * rows(cells_before) * f * (1.0 - f),
                dc_t * i * (1.0 - g * g),
                dh_t * tanh_c * o * (1.0 - o),
            ], axis=-1)
            return k + 1, _keep_rest(tf.matmul(dz, recurrent_t), dh), _keep_rest(dc_t * f, dc), saved_dz.write(t, dz)

        dh_end = tf.gather(_zeros_if_none(d_h_last, h0), order)  # (B, U)
        dc_end = tf.gather(_zeros_if_none(d_c_last, c0), order)  # (B, U)
        _, dh_start, dc_start, saved_dz = tf.while_loop(
            lambda k, *_: k < time, backward, (0, dh_end, dc_end, tf.TensorArray(x.dtype, size=time, infer_shape=False)),
        )
        dz_all = saved_dz.concat()  # (N, 4U), in step order like every packed tensor
        d_x = unpack(tf.matmul(dz_all, kernel, transpose_b=True))  # (B, T, E), zeros at padding
        d_kernel = tf.matmul(inputs, dz_all, transpose_a=True)  # (E, 4U)
        d_recurrent = tf.matmul(hidden_before, dz_all, transpose_a=True)  # (U, 4U)
        d_bias = tf.reduce_sum(dz_all, axis=0)  # (4U,)
        return d_x, None, tf.gather(dh_start, restore), tf.gather(dc_start, restore), d_kernel, d_recurrent, d_bias

    return (outputs, tf.gather(h_last, restore), tf.gather(c_last, restore)), gradient


def _keep_rest(active_rows, previous):
    """(n, U) new values of the first n rows, (B, U) previous values -> (B, U)."""
    merged = tf.concat([active_rows, previous[tf.shape(active_rows)[0] :]], axis=0)
    merged.set_shape(previous.shape)  # a loop variable keeps its static shape
    return merged


def _zeros_if_none(gradient, like):
    return tf.zeros_like(like) if gradient is None else gradient


@keras.saving.register_keras_serializable(package="captioning")
class LSTM(keras.layers.LSTM):
    """``keras.layers.LSTM`` whose CPU loop computes each row only as long as its mask says.

    Built with ``zero_output_for_mask=True`` (cuDNN's behaviour, set here), a mask must be
    right-padded (True up to a row's last step, then False); a mask with gaps is refused.
    The class keeps Keras's name on purpose: a weights file files a layer's variables under
    its class name (``layers/lstm/cell/vars``), so the weights of models trained with
    ``keras.layers.LSTM`` load into this one unchanged, and the other way round.
    """

    def __init__(self, units, **kwargs):
        kwargs["zero_output_for_mask"] = True
        super().__init__(units, **kwargs)

    def compute_mask(self, inputs, mask=None):
        return None  # used up: outputs past a row's end are zeros, and the loss weighs padding 0

    def _packs(self) -> bool:
        cell = self.cell
        return (
            not tf.config.list_logical_devices("GPU")  # a GPU runs Keras's cuDNN path
            and not (self.dropout or self.recurrent_dropout or self.go_backwards or self.unroll or self.stateful)
            and cell.use_bias
            and cell.activation is keras.activations.tanh
            and cell.recurrent_activation is keras.activations.sigmoid
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self._packs():
            return super().inner_loop(sequences, initial_state, mask, training=training)
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        time = tf.shape(sequences)[1]
        if mask is None:
            steps = tf.fill([tf.shape(sequences)[0]], time)  # (B,)
        else:
            steps = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)  # (B,)
            tf.debugging.assert_equal(
                tf.cast(mask, tf.bool), tf.sequence_mask(steps, time),
                message=f"{self.name}: the mask must be right-padded (True up to a row's last step, then False)",
            )
        outputs, h, c = packed_lstm(
            sequences, steps, initial_state[0], initial_state[1],
            tf.convert_to_tensor(self.cell.kernel), tf.convert_to_tensor(self.cell.recurrent_kernel), tf.convert_to_tensor(self.cell.bias),
        )
        return h, outputs, [h, c]


@keras.saving.register_keras_serializable(package="captioning")
class PackPositions(keras.layers.Layer):
    """``[values (B, T, F), input_ids (B, T)]`` -> (N, F): the rows of the real positions
    (id != 0), in row-major order."""

    def call(self, inputs):
        values, input_ids = inputs
        return tf.boolean_mask(values, tf.not_equal(input_ids, 0))  # (N, F)

    def compute_output_shape(self, input_shape):
        return (None, input_shape[0][-1])


@keras.saving.register_keras_serializable(package="captioning")
class UnpackPositions(keras.layers.Layer):
    """``[packed (N, F), input_ids (B, T)]`` -> (B, T, F): each row back at its position, zeros
    at padding (where the loss weighs 0). The inverse of :class:`PackPositions`."""

    def call(self, inputs):
        packed, input_ids = inputs
        places = tf.cast(tf.where(tf.not_equal(input_ids, 0)), tf.int32)  # (N, 2)
        shape = tf.concat([tf.shape(input_ids), tf.shape(packed)[1:]], axis=0)  # [B, T, F]
        return tf.scatter_nd(places, packed, shape)  # (B, T, F)

    def compute_output_shape(self, input_shape):
        return (*input_shape[1], input_shape[0][-1])
