"""Data-parallel training: one TensorFlow worker per Spark barrier task, kept in step.

``train_worker`` is the entry function :func:`captioning.cluster.barrier.run_barrier`
starts in every task: ``MultiWorkerMirroredStrategy`` across the workers, each reading
its own Petastorm shard of the training view and computing gradients on
``batch_size / workers`` captions; the gradients are averaged over the workers and every
worker applies the same update, so a step still covers the global batch. Each epoch has
the single-process path's number of steps on every worker (the shard streams repeat, so
no worker runs dry while the others wait in a collective). Every worker scores the whole
dev split on its identical copy of the weights, so all reach the same early-stopping
decision. Only the chief (rank 0) writes checkpoints, state, history and plot; at start
every worker restores the chief's last checkpoint, so a rerun resumes as the
single-process path does (also with another number of workers).
"""
from __future__ import annotations

import hashlib

from captioning.model.training import checkpoints
from captioning.model.training.fit import TrainingPlan, dev_dataset, start_or_resume, training_stream
from captioning.serialization import from_dict


def train_worker(payload: dict, role) -> dict:
    """One data-parallel worker; ``payload`` is a :class:`TrainingPlan` as a dict.

    MultiWorkerMirroredStrategy is created first (it must precede any other TensorFlow
    work in the process); the model is built or restored inside its scope. State is read
    here, by every worker, from the chief's checkpoints: the chief cannot finish an epoch
    (and so cannot write a newer state) before every worker has joined the first
    collective, which happens after that read.

    Batches keep their full padded length here: trimming would give each worker batches
    of other shapes, and a retrace on one worker but not the others breaks the order of
    collectives they must agree on.
    """
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    import numpy as np

    plan = from_dict(TrainingPlan, payload, "training plan")
    with strategy.scope():
        state, model, restored_from = start_or_resume(plan)
    callback = checkpoints.make_epoch_callback(plan.model_uri, state, plan.train.epochs, plan.train.patience, is_chief=role.is_chief)
    dev = dev_dataset(plan, trim_padding=False)
    with training_stream(plan, state, shard=(role.rank, role.count), trim_padding=False) as train:
        fit_data_parallel(model, strategy, train, dev, plan.train.epochs, state["epoch"], plan.steps_per_epoch, callback)
    prefix = plan.model_uri.rstrip("/") + "/"
    wrote = sorted({uri[len(prefix):] if uri.startswith(prefix) else uri for uri in callback.written})
    # equal on every worker when the all-reduce kept the replicas in sync
    weights_sha256 = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.trainable_weights)).hexdigest()
    return {
        "chief": role.is_chief, "restored_from": restored_from, "wrote": wrote,
        "weights_sha256": weights_sha256, "optimizer_steps": int(model.optimizer.iterations.numpy()), "state": state if role.is_chief else None,
    }


def fit_data_parallel(model, strategy, train_batches, dev_batches, epochs: int, initial_epoch: int, steps_per_epoch: int, callback) -> None:
    """``model.fit`` of the single-worker path, for one MultiWorkerMirroredStrategy worker.

    ``train_batches``: this worker's batches (its own shard, batch size = global batch /
    workers), repeating; ``dev_batches``: the whole dev split in global-size batches. The
    model must have been built or restored (and compiled) inside ``strategy.scope()``.

    Why not ``model.fit``: Keras 3's TensorFlow trainer fails under this strategy (with
    Keras 3.15: ``strategy.reduce`` of a whole nested batch before the first step, then
    ``reduce(..., axis=0)`` of the scalar step metrics; keras-team/keras#20585). The loop
    keeps fit's definitions, so losses and histories compare with single-worker runs:

    * step loss = sum(weight * cross-entropy) / sum(weight) over the worker's batch, i.e.
      the compiled loss (``mean_with_sample_weight``), plus the layers' own losses while
      training (the attention decoder's regulariser), as fit adds them; it is divided by the number of
      workers and the optimizer all-reduces (sums) the gradients: their mean is applied,
      identically on every worker;
    * logged ``loss`` = step losses averaged with the batch rows as weights, ``accuracy``
      = weighted share of correct next words, both summed over all workers;
    * ``val_loss`` / ``val_accuracy``: the same over the dev split, computed by every worker
      alone on its (identical) copy of the weights, so all workers see the same numbers and
      take the same early-stopping decision without exchanging anything.

    The epoch callback (``make_epoch_callback``) is driven as fit would drive it.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    workers = strategy.num_replicas_in_sync

    def batch_sums(inputs, targets, weights, training: bool):
        logits = model(inputs, training=training)  # (B, T, V)
        weight_total = tf.reduce_sum(weights)
        loss = tf.math.divide_no_nan(tf.reduce_sum(entropy(targets, logits) * weights), weight_total)
        if training and model.losses:  # the decoder's own regulariser (attention), as fit adds it
            loss = loss + tf.add_n(model.losses)
        hits = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=targets.dtype), targets), tf.float32)
        rows = tf.cast(tf.shape(targets)[0], tf.float32)
        return loss, tf.stack([loss * rows, rows, tf.reduce_sum(hits * weights), weight_total])

    def replica_step(batch):
        inputs, targets, weights = batch
        with tf.GradientTape() as tape:
            loss, sums = batch_sums(inputs, targets, weights, training=True)
            scaled = loss / workers
        gradients = tape.gradient(scaled, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return sums

    @tf.function
    def train_step(iterator):
        sums = strategy.run(replica_step, args=(next(iterator),))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

    @tf.function
    def dev_step(inputs, targets, weights):
        return batch_sums(inputs, targets, weights, training=False)[1]

    def rates(sums) -> tuple[float, float]:
        loss_rows, rows, hits, weight_total = (float(v) for v in sums)
        return loss_rows / max(rows, 1.0), hits / max(weight_total, 1e-12)

    iterator = iter(strategy.distribute_datasets_from_function(lambda _context: train_batches))
    callback.set_model(model)
    model.stop_training = False
    for epoch in range(initial_epoch, epochs):
        callback.on_epoch_begin(epoch)
        totals = np.zeros(4)
        for _ in range(steps_per_epoch):
            totals += train_step(iterator).numpy()
        dev_totals = np.zeros(4)
        for inputs, targets, weights in dev_batches:
            dev_totals += dev_step(inputs, targets, weights).numpy()
        (loss, accuracy), (val_loss, val_accuracy) = rates(totals), rates(dev_totals)
        callback.on_epoch_end(epoch, {"accuracy": accuracy, "loss": loss, "val_accuracy": val_accuracy, "val_loss": val_loss})
        if model.stop_training:
            break
