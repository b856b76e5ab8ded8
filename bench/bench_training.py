"""Training speed and quality: the original per-word recipe against this project's teacher forcing.

Run (from the repository root, with the project's virtual environment)::

    SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON=$PWD/.venv/bin/python TF_CPP_MIN_LOG_LEVEL=2 \\
        .venv/bin/python bench/bench_training.py --images 2000 --epochs 3 --json-out bench-output/training.json

    # reuse the sample, captions and features of a finished `make demo` (no extraction):
    ... .venv/bin/python bench/bench_training.py --dataset demo-output --epochs 3

Both sides train the same data (the train split of the training view that
``train-decoder`` writes: the same captions, token ids and float16 image vectors), with
the same layer sizes, optimiser (Adam, same learning rate), seed, and the same number of
captions per optimiser step, for the same number of epochs.

* original: the Keras merge model as the popular Flickr8k tutorials build it (image
  vector -> Dropout -> Dense(units, relu); pre-padded prefix -> Embedding(mask_zero=True)
  -> Dropout -> LSTM(units), last output only; add -> Dense(hidden, relu) -> Dense(V,
  softmax); categorical cross-entropy on one-hot targets). Every caption of n words is
  expanded into n+1 (prefix -> next word) samples (endseq included) by a Python
  generator that pads each prefix and one-hot encodes each target, and Keras fits it with
  ``model.fit(generator, steps_per_epoch=...)``. A step holds all the samples of
  ``--batch-size`` shuffled captions. The prefix input is L-1 positions long (the longest
  prefix), one less than the tutorials' L, which if anything favours the original.
* project: ``jobs/train_decoder.run`` itself (Spark builds the Parquet training views,
  Petastorm streams them into tf.data through ``captioning.model.training.petastorm_input.open_dataset``, the
  model of ``captioning.model.decoder`` is trained with teacher forcing, batches grouped
  by caption length (``--bucket-width``, default 1 here) and cut after their longest caption). Seconds per epoch are read
  from the model directory's ``history.json``.
* project without bucketing (``--bucket-width 0``, random batches, each still cut after
  its longest caption; train-decoder's default): the same job once more, to show what
  bucketing itself gains.

Measured:

* seconds per epoch, as Keras callbacks see them (``on_epoch_begin`` to
  ``on_epoch_end``). The project's epochs *include* its per-epoch dev-loss evaluation and
  the original's do not (the tutorials' generator version validates nothing), so the
  ratio is conservative. The first epoch includes graph tracing on both sides; the table
  shows the mean of all epochs and, with 2+ epochs, the mean of epochs 2.. (the ratio
  uses the latter when there is one). The original's input generator alone (one epoch
  of batches, no training) is timed too, to show how much of its epoch is Python input.
* dev loss: mean per-word cross-entropy over every (prefix -> next word) of the dev
  split, endseq included, computed by ONE function for both trained models (after the
  last epoch, not the best one): it expands the dev captions exactly like the original
  generator and asks each model for the next-word distribution of each prefix (the
  original model: its softmax on the pre-padded prefix; the project model: its logits at
  the prefix's last position, padding after it, which a causal LSTM never reads). The
  project job's own teacher-forced dev loss of the last epoch is shown beside it as a
  check: the two numbers should agree to about 1e-4.
* BLEU-1..4: ``captioning.report.metrics.bleu_scores`` (nltk corpus BLEU, no smoothing) of
  greedy captions of the ``--bleu-split`` images (default test), again decoded by one
  shared greedy loop for both models (most probable next word, lowest id on ties, stop
  at endseq or after L-1 tokens), against the cleaned reference captions, as
  ``jobs/evaluate.py`` scores them.

The goal line checks: project >= 8x faster per epoch and its dev loss at most 1% above
the original's ("equal or better", with 1% for run-to-run noise; both numbers are printed),
for the bucketed run and, on a line of its own, for random batches (train-decoder's default).

Machine caveats: timings are wall-clock seconds on whatever the machine is doing at the
time; run on an otherwise idle machine (the load average at start and end is reported).
TensorFlow uses every core it sees (CPU here; both sides see the same devices). The
feature extraction of a fresh sample (ResNet50, random weights) is the slow part of a
first run on a small CPU machine; ``--dataset``/``--features`` reuse existing outputs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings

try:
    from . import _benchlib as lib
except ImportError:  # run as a script: bench/ is on sys.path
    import _benchlib as lib

PROJECT = "project"
ORIGINAL = "original"
UNBUCKETED = "project_unbucketed"  # the project's training with random batches, for the effect of bucketing
GOAL_SPEEDUP = 8.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench_training.py",
        description="Seconds per epoch, dev loss and BLEU: the original per-word one-hot generator training vs the project's Petastorm + teacher-forcing training, same data and sizes.",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--workdir", default="bench-output/training", help="folder for everything this benchmark writes (default bench-output/training)")
    data.add_argument("--images", type=int, default=2000, help="size of the generated sample dataset when no --dataset is given (default 2000)")
    data.add_argument("--dataset", default=None, help="reuse a folder holding prepared/ and features/ (e.g. demo-output of `make demo`) instead of generating and extracting")
    data.add_argument("--captions", default=None, help="prepare-captions output to use (default: <dataset>/prepared, or generated)")
    data.add_argument("--features", default=None, help="feature store to use (default: <dataset>/features, or extracted)")
    data.add_argument("--features-backbone", default="resnet50", help="CNN for a fresh extraction, random seeded weights (default resnet50)")
    data.add_argument("--min-count", type=int, default=10, help="vocabulary min count for a fresh prepare-captions (default 10)")
    training = parser.add_argument_group("training (the same for both sides)")
    training.add_argument("--epochs", type=int, default=3, help="epochs (default 3)")
    training.add_argument("--batch-size", type=int, default=64, help="captions per optimiser step (default 64); the original's step holds all their word samples")
    training.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 0.001)")
    training.add_argument("--embedding-dim", type=int, default=200, help="word embedding size (default 200)")
    training.add_argument("--units", type=int, default=256, help="LSTM units and image projection size (default 256)")
    training.add_argument("--hidden-units", type=int, default=512, help="Dense layer after the merge (default 512, this project's default)")
    training.add_argument("--seed", type=int, default=0, help="seed of the sample, the weights and the shuffling (default 0)")
    training.add_argument("--bucket-width", type=int, default=1, help="the project's caption-length buckets, in tokens, for its bucketed run (default 1; train-decoder's own default is 0, random batches)")
    training.add_argument("--no-unbucketed", action="store_true", help="skip the project run without bucketing")
    parser.add_argument("--bleu-split", default="test", choices=("train", "dev", "test"), help="split captioned for BLEU (default test)")
    parser.add_argument("--json-out", default=None, help="also write the results as JSON to this file")
    return parser


# ----------------------------------------------------------------------------- inputs


def ensure_inputs(args: argparse.Namespace, spark, workdir: str) -> dict:
    """{"captions": prepared folder, "features": feature store}, generating what is missing."""
    from captioning.pipeline.demo import ensure_sample
    from captioning.pipeline import extract_features
    from captioning.pipeline import prepare_captions

    captions = args.captions or (os.path.join(args.dataset, "prepared") if args.dataset else None)
    features = args.features or (os.path.join(args.dataset, "features") if args.dataset else None)
    if captions and features:
        return {"captions": os.path.abspath(captions), "features": os.path.abspath(features), "generated": False}
    sample = os.path.join(workdir, "sample")
    if captions is None or features is None:
        ensure_sample(sample, args.images, args.seed)
    if captions is None:
        captions = os.path.join(workdir, "prepared")
        if prepare_captions.main(["--dataset", sample, "--output", captions, "--min-count", str(args.min_count)], spark=spark) != 0:
            raise SystemExit("prepare-captions failed")
    if features is None:
        features = os.path.join(workdir, "features")
        argv = ["--input", sample, "--output", features, "--backbone", args.features_backbone, "--weights", "none", "--seed", str(args.seed)]
        if extract_features.main(argv, spark=spark) != 0:
            raise SystemExit("extract-features failed")
    return {"captions": os.path.abspath(captions), "features": os.path.abspath(features), "generated": True}


class Split:
    """One split of a training view in memory: vectors once per image, token ids per caption."""

    def __init__(self, vectors, image_of_caption, token_ids):
        self.vectors = vectors  # (images, D) float32
        self.image_of_caption = image_of_caption  # (N,) int: row of vectors for each caption
        self.token_ids = token_ids  # (N, L) int32: startseq, words, endseq, padding

    @property
    def captions(self) -> int:
        return len(self.token_ids)

    def sequences(self) -> list[list[int]]:
        """Each caption without its padding: [startseq, w1, .., wn, endseq]."""
        return [[int(t) for t in row if t != 0] for row in self.token_ids]


def read_view(uri: str, dtype: str, dim: int) -> Split:
    """A training view folder (``image_id``, ``features`` bytes, ``token_ids``) via pyarrow."""
    import numpy as np
    import pyarrow.dataset as pads

    from captioning.store.feature_store import decode_vectors
    from captioning.model.training.petastorm_input import parquet_files

    table = pads.dataset(parquet_files(uri), format="parquet").to_table(columns=["image_id", "caption_index", "features", "token_ids"])
    keys = list(zip(table["image_id"].to_pylist(), table["caption_index"].to_pylist()))
    table = table.take(sorted(range(table.num_rows), key=keys.__getitem__))  # a stable order, whatever Spark wrote
    ids = table["image_id"].to_pylist()
    blobs = table["features"].to_pylist()
    first_row: dict[str, int] = {}
    for row, image_id in enumerate(ids):
        first_row.setdefault(image_id, row)
    index = {image_id: n for n, image_id in enumerate(first_row)}
    vectors = decode_vectors([blobs[row] for row in first_row.values()], dtype, dim)
    tokens = table["token_ids"].combine_chunks()
    token_ids = np.asarray(tokens.flatten(), dtype=np.int32).reshape(table.num_rows, -1)
    return Split(vectors, np.asarray([index[i] for i in ids]), token_ids)


def read_split_for_bleu(captions_uri: str, features_uri: str, split: str, vocabulary):
    """(image ids, vectors (n, D), references {id: [tokens, ...]}) of one split, via pyarrow."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from captioning.store.feature_store import decode_vectors, part_uri, require_manifest
    from captioning.model.training.petastorm_input import parquet_files

    manifest = require_manifest(features_uri)
    captions = pads.dataset(parquet_files(os.path.join(captions_uri, "captions")), format="parquet")
    rows = captions.to_table(columns=["image_id", "caption_index", "raw"], filter=pc.field("split") == split).to_pylist()
    references: dict[str, list[list[str]]] = {}
    for row in sorted(rows, key=lambda r: (r["image_id"], r["caption_index"])):
        references.setdefault(row["image_id"], []).append(vocabulary.tokenize(row["raw"]))
    store = pads.dataset(parquet_files([part_uri(features_uri, p) for p in manifest.parts]), format="parquet")
    found = store.to_table(columns=["image_id", "features"], filter=(pc.field("status") == "ok") & pc.field("image_id").isin(list(references))).to_pylist()
    found.sort(key=lambda r: r["image_id"])
    ids = [r["image_id"] for r in found]
    vectors = decode_vectors([r["features"] for r in found], manifest.dtype, manifest.feature_dim)
    return ids, vectors, {i: references[i] for i in ids}


# ----------------------------------------------------------------------------- the original recipe


def build_original_model(vocab_size: int, prefix_length: int, feature_dim: int, embedding_dim: int, units: int, hidden_units: int, dropout: float = 0.5):
    """The tutorials' merge model: mask_zero embedding, last LSTM output, softmax output."""
    import keras
    from keras import layers

    image_in = keras.Input((feature_dim,), name="image")
    image = layers.Dropout(dropout)(image_in)
    image = layers.Dense(units, activation="relu")(image)
    prefix_in = keras.Input((prefix_length,), dtype="int32", name="prefix")
    words = layers.Embedding(vocab_size, embedding_dim, mask_zero=True)(prefix_in)
    words = layers.Dropout(dropout)(words)
    words = layers.LSTM(units)(words)
    merged = layers.add([image, words])
    hidden = layers.Dense(hidden_units, activation="relu")(merged)
    probs = layers.Dense(vocab_size, activation="softmax")(hidden)
    return keras.Model([image_in, prefix_in], probs, name="original_merge")


def original_batches(split: Split, batch_captions: int, vocab_size: int, prefix_length: int, seed: int):
    """The tutorials' Python generator, forever: per-word samples, pre-padded prefixes, one-hot targets.

    Every yield covers ``batch_captions`` captions (shuffled once per pass): for a caption
    [startseq, w1, .., wn, endseq] the samples are ([startseq] -> w1), .., ([startseq .. wn] -> endseq).
    """
    import numpy as np
    from keras.utils import pad_sequences, to_categorical

    sequences = split.sequences()
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(sequences))
        for start in range(0, len(order), batch_captions):
            images, prefixes, targets = [], [], []
            for row in order[start : start + batch_captions]:
                seq = sequences[row]
                vector = split.vectors[split.image_of_caption[row]]
                for i in range(1, len(seq)):
                    prefixes.append(pad_sequences([seq[:i]], maxlen=prefix_length)[0])
                    targets.append(to_categorical([seq[i]], num_classes=vocab_size)[0])
                    images.append(vector)
            yield (np.array(images), np.array(prefixes, dtype=np.int32)), np.array(targets)


def epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.records: list[dict] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.time()

        def on_epoch_end(self, epoch, logs=None):
            self.records.append({"epoch": epoch + 1, "seconds": round(time.time() - self.started, 2), **{k: float(v) for k, v in (logs or {}).items()}})

    return EpochTimer()


def train_original(train: Split, vocab_size: int, max_length: int, args: argparse.Namespace) -> tuple[object, list[dict], float]:
    """(trained model, per-epoch records, seconds for one epoch of the generator alone)."""
    import keras

    prefix_length = max_length - 1
    steps = math.ceil(train.captions / args.batch_size)
    batches = original_batches(train, args.batch_size, vocab_size, prefix_length, args.seed)
    began = time.time()
    for _ in range(steps):
        next(batches)
    input_seconds = time.time() - began

    keras.utils.set_random_seed(args.seed)
    model = build_original_model(vocab_size, prefix_length, train.vectors.shape[1], args.embedding_dim, args.units, args.hidden_units)
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam(args.learning_rate))
    timer = epoch_timer()
    model.fit(original_batches(train, args.batch_size, vocab_size, prefix_length, args.seed), steps_per_epoch=steps, epochs=args.epochs, callbacks=[timer], verbose=2)
    return model, timer.records, input_seconds


# ----------------------------------------------------------------------------- the project's job


def train_project(paths: dict, args: argparse.Namespace, spark, workdir: str, bucket_width: int, name: str = "project-model") -> dict:
    """Run jobs/train_decoder.run into a fresh model directory; its history, views and last-epoch model."""
    from captioning.model.decoder import Architecture
    from captioning.model.model_dir import ModelDir
    from captioning.model.training import checkpoints
    from captioning.model.training.fit import TrainConfig
    from captioning.pipeline.train_decoder import TrainJobConfig, run

    output = os.path.join(workdir, name)
    config = TrainJobConfig(
        captions_uri=paths["captions"],
        features_uri=paths["features"],
        output_uri=output,
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, patience=args.epochs, seed=args.seed, bucket_width=bucket_width),
        architecture=Architecture(embedding_dim=args.embedding_dim, units=args.units, hidden_units=args.hidden_units),
        overwrite=True,  # a fresh run every time: the history must hold this run's epochs
    )
    began = time.time()
    summary = run(config, spark=spark)
    wall = time.time() - began
    with open(ModelDir(output).history) as handle:
        history = json.load(handle)
    with open(ModelDir(output).views) as handle:
        views = json.load(handle)
    state = checkpoints.read_state(output)
    model = checkpoints.restore(output, state)  # the model after the last epoch (not the best one)
    return {"summary": summary, "history": history, "views": views, "model": model, "job_seconds": wall, "output": output}


# ----------------------------------------------------------------------------- shared evaluation


def original_next_word(model, prefix_length: int):
    """Log-probabilities of the next word from the original model (pre-padded prefixes)."""
    import numpy as np

    def predict(vectors, prefixes: list[list[int]]):
        padded = np.zeros((len(prefixes), prefix_length), np.int32)
        for row, prefix in enumerate(prefixes):
            padded[row, prefix_length - len(prefix) :] = prefix
        probs = np.asarray(model([vectors, padded], training=False), dtype=np.float64)
        return np.log(np.clip(probs, 1e-7, 1.0))  # Keras' categorical cross-entropy clips the same way

    return predict


def project_next_word(model, prefix_length: int):
    """Log-probabilities of the next word from the teacher-forcing model: the logits at the
    prefix's last position (padding after it is never read by the causal LSTM)."""
    import numpy as np

    def predict(vectors, prefixes: list[list[int]]):
        padded = np.zeros((len(prefixes), prefix_length), np.int32)
        for row, prefix in enumerate(prefixes):
            padded[row, : len(prefix)] = prefix
        logits = np.asarray(model([vectors, padded], training=False), dtype=np.float64)  # (n, T, V)
        last = logits[np.arange(len(prefixes)), [len(p) - 1 for p in prefixes]]  # (n, V)
        shifted = last - last.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    return predict


def per_word_cross_entropy(next_word, split: Split, chunk: int = 512) -> tuple[float, int]:
    """Mean -log p(word | image, prefix) over every (prefix -> next word) of the split; (mean, words)."""
    import numpy as np

    samples = [(row, seq[:i], seq[i]) for row, seq in enumerate(split.sequences()) for i in range(1, len(seq))]
    total = 0.0
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        vectors = split.vectors[[split.image_of_caption[row] for row, _, _ in part]]
        log_probs = next_word(vectors, [prefix for _, prefix, _ in part])
        total -= float(log_probs[np.arange(len(part)), [target for _, _, target in part]].sum())
    return total / len(samples), len(samples)


def greedy_decode(next_word, vectors, start_id: int, end_id: int, max_tokens: int, chunk: int = 256) -> list[list[int]]:
    """Greedy captions (word ids, endseq excluded) for every row of ``vectors``, batched."""
    import numpy as np

    out: list[list[int]] = []
    for begin in range(0, len(vectors), chunk):
        batch = vectors[begin : begin + chunk]
        sequences = [[start_id] for _ in range(len(batch))]
        live = list(range(len(batch)))
        for _ in range(max_tokens):
            if not live:
                break
            log_probs = next_word(batch[live], [sequences[i] for i in live])
            best = np.argmax(log_probs, axis=1)  # first maximum: lowest id on ties
            still = []
            for i, word in zip(live, best):
                sequences[i].append(int(word))
                if word != end_id:
                    still.append(i)
            live = still
        out.extend([t for t in seq[1:] if t != end_id] for seq in sequences)
    return out


def bleu(next_word, ids, vectors, references, vocabulary, max_tokens: int) -> dict:
    from captioning.report.metrics import bleu_scores

    captions = greedy_decode(next_word, vectors, vocabulary.start_id, vocabulary.end_id, max_tokens)
    hypotheses = {i: vocabulary.decode(c) for i, c in zip(ids, captions)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns for every n-gram order without a match (BLEU-n is then 0)
        return bleu_scores(references, hypotheses)


# ----------------------------------------------------------------------------- report


def mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def epoch_stats(records: list[dict]) -> dict:
    seconds = [r["seconds"] for r in records]
    return {"per_epoch": seconds, "mean": mean(seconds), "mean_after_first": mean(seconds[1:]) if len(seconds) > 1 else None}


def ratio(slow, fast) -> float | None:
    return slow / fast if slow is not None and fast else None


def render_table(result: dict) -> str:
    o, p = result[ORIGINAL], result[PROJECT]
    u = result.get(UNBUCKETED) or {}
    rows = []

    def row(name, a, b, c=None, fmt="{:.2f}", with_ratio=False):
        def f(v):
            return "-" if v is None else fmt.format(v)

        rows.append((name, f(a), f(c), f(b), (f"{ratio(a, b):.1f}x" if with_ratio and ratio(a, b) else "")))

    def get(side, *keys):
        for key in keys:
            side = side.get(key) if isinstance(side, dict) else None
        return side

    row("seconds/epoch, mean of all", o["epoch"]["mean"], p["epoch"]["mean"], get(u, "epoch", "mean"), with_ratio=True)
    if o["epoch"]["mean_after_first"] is not None:
        row("seconds/epoch, epochs 2..", o["epoch"]["mean_after_first"], p["epoch"]["mean_after_first"], get(u, "epoch", "mean_after_first"), with_ratio=True)
    row("input only s/epoch (generator)", o["input_seconds_per_epoch"], None)
    row("optimiser steps/epoch", o["steps_per_epoch"], p["steps_per_epoch"], get(u, "steps_per_epoch"), "{:d}")
    row("training examples/epoch", o["examples_per_epoch"], p["examples_per_epoch"], get(u, "examples_per_epoch"), "{:,d}")
    row("dev loss (per-word CE, shared fn)", o["dev_loss"], p["dev_loss"], get(u, "dev_loss"), "{:.4f}")
    row("dev loss (job's teacher forcing)", None, p["job_dev_loss"], get(u, "job_dev_loss"), "{:.4f}")
    for name in o["bleu"]:
        row(f"{name} ({result['bleu_split']}, greedy)", o["bleu"][name], p["bleu"][name], get(u, "bleu", name), "{:.4f}")
    header = ("", "original", "project, no buckets", "project", "ratio")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
    lines = [" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in [header] + rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    g = result["goal"]
    lines += [
        "",
        f"data: {result['data']['train_captions']:,} train captions of {result['data']['train_images']:,} images, {result['data']['dev_words']:,} dev words, "
        f"{result['data']['bleu_images']} {result['bleu_split']} images; vocab {result['data']['vocab_size']}, L={result['data']['max_length']}, D={result['data']['feature_dim']}",
        f"sizes: embedding {result['config']['embedding_dim']}, units {result['config']['units']}, hidden {result['config']['hidden_units']}, batch {result['config']['batch_size']} captions, "
        f"{result['config']['epochs']} epochs, Adam {result['config']['learning_rate']}",
        f"project epochs include its dev evaluation; original epochs do not. load average {result['machine']['load_start']} at start, {result['machine']['load_end']} at end, {result['machine']['cpus']} CPUs",
        f"goal: >= {GOAL_SPEEDUP:g}x per epoch: {g['speedup']:.1f}x {'met' if g['speed_met'] else 'NOT met'}; "
        f"dev loss <= original + 1%: {p['dev_loss']:.4f} vs {o['dev_loss']:.4f} {'met' if g['loss_met'] else 'NOT met'}",
    ]
    g = result.get("goal_unbucketed")
    if g:
        lines.append(
            f"random batches (no buckets): {g['speedup']:.1f}x {'met' if g['speed_met'] else 'NOT met'}; "
            f"dev loss {u['dev_loss']:.4f} vs {o['dev_loss']:.4f} {'met' if g['loss_met'] else 'NOT met'}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from captioning.store.feature_store import require_manifest
    from captioning.pipeline.runner import spark_for
    from captioning.data.vocab import Vocabulary

    if args.epochs < 1 or args.batch_size < 1 or args.images < 1:
        raise SystemExit("--epochs, --batch-size and --images must be positive")
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    load_start = round(os.getloadavg()[0], 2)
    with spark_for("bench-training") as spark:
        paths = ensure_inputs(args, spark, workdir)
        project = train_project(paths, args, spark, workdir, args.bucket_width)
        unbucketed = None if args.no_unbucketed else train_project(paths, args, spark, workdir, 0, "project-model-unbucketed")

    manifest = require_manifest(paths["features"])
    with open(os.path.join(paths["captions"], "vocab.json")) as handle:
        vocabulary = Vocabulary.from_json(handle.read())
    with open(os.path.join(paths["captions"], "summary.json")) as handle:
        max_length = int(json.load(handle)["max_length"])
    train = read_view(project["views"]["train"]["uri"], manifest.dtype, manifest.feature_dim)
    dev = read_view(project["views"]["dev"]["uri"], manifest.dtype, manifest.feature_dim)

    original_model, original_records, input_seconds = train_original(train, vocabulary.size, max_length, args)

    prefix_length = max_length - 1
    next_word = {ORIGINAL: original_next_word(original_model, prefix_length), PROJECT: project_next_word(project["model"], prefix_length)}
    if unbucketed is not None:
        next_word[UNBUCKETED] = project_next_word(unbucketed["model"], prefix_length)
    ids, vectors, references = read_split_for_bleu(paths["captions"], paths["features"], args.bleu_split, vocabulary)
    results = {}
    for side in next_word:
        dev_loss, dev_words = per_word_cross_entropy(next_word[side], dev)
        scores = bleu(next_word[side], ids, vectors, references, vocabulary, max_length - 1) if ids else {}
        results[side] = {"dev_loss": dev_loss, "bleu": scores}
    steps = math.ceil(train.captions / args.batch_size)
    words = sum(len(s) - 1 for s in train.sequences())
    results[ORIGINAL].update(epoch=epoch_stats(original_records), history=original_records, input_seconds_per_epoch=input_seconds, steps_per_epoch=steps, examples_per_epoch=words)
    for side, run in ((PROJECT, project), (UNBUCKETED, unbucketed)):
        if run is not None:
            results[side].update(
                epoch=epoch_stats(run["history"]), history=run["history"], steps_per_epoch=steps, examples_per_epoch=train.captions,
                job_dev_loss=run["history"][-1].get("val_loss"), model_dir=run["output"], job_seconds=run["job_seconds"],
            )
    def goal(side: str) -> dict:
        """The goal line for one project run against the original."""
        o_epoch = results[ORIGINAL]["epoch"]["mean_after_first"] or results[ORIGINAL]["epoch"]["mean"]
        p_epoch = results[side]["epoch"]["mean_after_first"] or results[side]["epoch"]["mean"]
        speedup = ratio(o_epoch, p_epoch)
        return {
            "speedup": speedup,
            "speed_met": bool(speedup and speedup >= GOAL_SPEEDUP),
            "loss_met": results[side]["dev_loss"] <= results[ORIGINAL]["dev_loss"] * 1.01,
            "dev_loss_difference": results[side]["dev_loss"] - results[ORIGINAL]["dev_loss"],
        }

    result = {
        "benchmark": "training",
        ORIGINAL: results[ORIGINAL],
        PROJECT: results[PROJECT],
        UNBUCKETED: results.get(UNBUCKETED),
        "bleu_split": args.bleu_split,
        "goal": goal(PROJECT),
        "goal_unbucketed": goal(UNBUCKETED) if unbucketed is not None else None,
        "data": {
            "captions": paths["captions"], "features": paths["features"], "train_captions": train.captions, "train_images": len(train.vectors),
            "train_words": words, "dev_captions": dev.captions, "dev_words": dev_words, "bleu_images": len(ids),
            "vocab_size": vocabulary.size, "max_length": max_length, "feature_dim": manifest.feature_dim, "encoder": manifest.encoder,
        },
        "config": {k: getattr(args, k) for k in ("epochs", "batch_size", "learning_rate", "embedding_dim", "units", "hidden_units", "seed", "bucket_width")},
        "machine": {"cpus": os.cpu_count(), "load_start": load_start, "load_end": round(os.getloadavg()[0], 2), "python": sys.version.split()[0]},
    }
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(args)
    return lib.print_report(render_table(result), result, args.json_out)


if __name__ == "__main__":
    raise SystemExit(main())
