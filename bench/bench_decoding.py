"""Greedy decoding speed: one ``model.predict`` per word per image against batched compiled search.

Run (from the repository root, with the project's virtual environment)::

    # a trained model directory and its feature store (e.g. those of `make demo`):
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/bench_decoding.py \\
        --model demo-output/model --features demo-output/features --images 1000 --original-images 50 \\
        --json-out bench-output/decoding.json

    # no model at hand: train a small one first (sample data, Spark, a few epochs), then measure
    SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON=$PWD/.venv/bin/python TF_CPP_MIN_LOG_LEVEL=2 \\
        .venv/bin/python bench/bench_decoding.py --train-images 300 --train-epochs 2

All paths decode the same feature vectors (the first ``--images`` images of the feature
store in image-id order; repeated when the store holds fewer, which the table says) with
the same trained weights (the model directory's ``model.weights.h5``):

* original: the tutorials' inference loop, one image at a time: start from
  ``startseq``, pad the prefix to the model's input length, ``model.predict`` it, take the
  most probable word, append it, repeat until ``endseq`` or the length limit. The model
  called is the project's training model (``captioning.model.model_dir.load_model``) fed the
  prefix followed by padding; the next-word distribution is read at the prefix's last
  position. That is exactly the original's computation: the LSTM re-reads the whole
  prefix every word (its output at position t depends only on tokens 0..t, so the padding
  after the prefix changes nothing), the image and word branches are merged and projected
  the same way, dropout is off in ``predict``, and the argmax of logits is the argmax of
  the softmax the original model ends with. Because it is slow, it is timed on the first
  ``--original-images`` images only (the table says how many). One warm-up ``predict``
  before the clock starts keeps Keras' one-off setup out of its time.
* batched greedy: ``captioning.model.captioner.Captioner`` with a greedy ``SearchConfig``
  (the model's own maximum: at most L-1 tokens, as above), ``--batch-size`` images per call;
  the whole search of a batch is one compiled ``tf.function``.
* batched beam: the same with beam search of ``--beam-width`` (default 3).

Captions/s of a batched path is the median of ``--repeats`` passes over all images, after
one untimed call that traces the function (its seconds are reported as "trace"). The
agreement line compares the original's captions with the batched greedy captions of the
same images word for word; both are greedy over the same weights, so they should be
identical except where two words' probabilities tie to within float rounding.

Machine caveats: wall-clock timings of whatever else the machine is doing; run it on an
idle machine (the load average is reported). TensorFlow uses every core it sees. The
ratio grows with the batch size and the number of cores or a GPU, since the original
path is bound by per-call overhead.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

try:
    from . import _benchlib as lib
except ImportError:  # run as a script: bench/ is on sys.path
    import _benchlib as lib


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench_decoding.py",
        description="Captions per second: greedy decoding with one model.predict per word per image vs batched compiled greedy and beam search (captioning.model.captioner.Captioner), same weights and vectors.",
    )
    parser.add_argument("--model", default=None, help="trained model directory (train-decoder output); default: train a small one under --workdir")
    parser.add_argument("--features", default=None, help="feature store with the vectors to caption (default: the store the model was trained on)")
    parser.add_argument("--images", type=int, default=1000, help="images captioned by the batched paths (default 1000)")
    parser.add_argument("--original-images", type=int, default=50, help="images captioned by the slow original loop, the first of the same list (default 50)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per batched call (default 256)")
    parser.add_argument("--beam-width", type=int, default=3, help="beam width of the beam-search row (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each batched path; the median is reported (default 3)")
    small = parser.add_argument_group("the small model trained when no --model is given")
    small.add_argument("--workdir", default="bench-output/decoding", help="folder for the sample, features and model (default bench-output/decoding)")
    small.add_argument("--train-images", type=int, default=300, help="size of the generated sample dataset (default 300)")
    small.add_argument("--train-epochs", type=int, default=2, help="training epochs (default 2)")
    small.add_argument("--dataset", default=None, help="reuse a folder holding prepared/ and features/ (e.g. demo-output) instead of generating one")
    small.add_argument("--features-backbone", default="resnet50", help="CNN for a fresh extraction, random seeded weights (default resnet50)")
    small.add_argument("--seed", type=int, default=0, help="seed of the sample and the training (default 0)")
    parser.add_argument("--json-out", default=None, help="also write the results as JSON to this file")
    return parser


def train_small_model(args: argparse.Namespace) -> str:
    """Model directory under --workdir, trained by jobs/train_decoder (reused when already complete)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_training import ensure_inputs

    from captioning.pipeline.runner import spark_for
    from captioning.pipeline.train_decoder import TrainJobConfig, run
    from captioning.model.training.fit import TrainConfig

    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    inputs = argparse.Namespace(
        captions=None, features=None, dataset=args.dataset, images=args.train_images, seed=args.seed, min_count=10, features_backbone=args.features_backbone,
    )
    output = os.path.join(workdir, "model")
    with spark_for("bench-decoding") as spark:
        paths = ensure_inputs(inputs, spark, workdir)
        config = TrainJobConfig(
            captions_uri=paths["captions"], features_uri=paths["features"], output_uri=output,
            train=TrainConfig(epochs=args.train_epochs, patience=args.train_epochs, seed=args.seed),
        )
        run(config, spark=spark)
    return output


def read_vectors(features_uri: str, count: int):
    """(image ids, vectors (count, D) float32, distinct images): the first ``count`` usable images
    of the store by image id, cycled when it holds fewer."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from captioning.store.feature_store import decode_vectors, part_uri, require_manifest
    from captioning.model.training.petastorm_input import parquet_files

    manifest = require_manifest(features_uri)
    store = pads.dataset(parquet_files([part_uri(features_uri, p) for p in manifest.parts]), format="parquet")
    rows = store.to_table(columns=["image_id", "features"], filter=pc.field("status") == "ok").to_pylist()
    if not rows:
        raise SystemExit(f"{features_uri}: no usable feature vectors")
    rows.sort(key=lambda r: r["image_id"])
    rows = rows[:count]
    vectors = decode_vectors([r["features"] for r in rows], manifest.dtype, manifest.feature_dim)
    ids = [r["image_id"] for r in rows]
    distinct = len(rows)
    if distinct < count:
        repeat = np.arange(count) % distinct
        vectors, ids = vectors[repeat], [ids[i] for i in repeat]
    return ids, vectors, distinct, manifest


def original_greedy(model, vector, prefix_length: int, max_tokens: int, start_id: int, end_id: int) -> tuple[list[int], int]:
    """One image, the original way: a ``model.predict`` per word on the re-padded prefix.

    Returns (word ids without startseq/endseq, number of predict calls)."""
    import numpy as np

    sequence = [start_id]
    image = vector[None, :]  # (1, D)
    calls = 0
    for _ in range(max_tokens):
        padded = np.zeros((1, prefix_length), np.int32)  # the prefix, then padding
        padded[0, : len(sequence)] = sequence
        logits = model.predict([image, padded], verbose=0)  # (1, T, V)
        calls += 1
        word = int(np.argmax(logits[0, len(sequence) - 1]))  # next word after the prefix
        if word == end_id:
            break
        sequence.append(word)
    return sequence[1:], calls


def time_batched(captioner, vectors, batch_size: int, repeats: int) -> dict:
    """Trace once, then ``repeats`` timed passes; captions of the last pass and the timings."""
    began = time.time()
    captioner.caption(vectors[: min(len(vectors), batch_size)])
    trace = time.time() - began
    passes = []
    captions = []
    for _ in range(repeats):
        began = time.time()
        captions = []
        for start in range(0, len(vectors), batch_size):
            captions.extend(captioner.caption(vectors[start : start + batch_size]))
        passes.append(time.time() - began)
    seconds = statistics.median(passes)
    return {"images": len(vectors), "seconds": seconds, "passes": passes, "trace_seconds": trace, "captions_per_second": len(vectors) / seconds, "captions": captions}


def run(args: argparse.Namespace) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    if min(args.images, args.original_images, args.batch_size, args.beam_width, args.repeats) < 1:
        raise SystemExit("--images, --original-images, --batch-size, --beam-width and --repeats must be positive")
    load_start = round(os.getloadavg()[0], 2)
    model_uri = args.model or train_small_model(args)

    from captioning.model.captioner import Captioner
    from captioning.model.search.config import SearchConfig
    from captioning.model.model_dir import load_model, read_info

    info = read_info(model_uri)
    features_uri = args.features or info.training.get("features")
    if not features_uri:
        raise SystemExit(f"{model_uri}: config.json names no feature store; pass --features")
    ids, vectors, distinct, manifest = read_vectors(features_uri, max(args.images, args.original_images))
    info.check_features(features_uri, manifest.encoder)
    vocabulary = info.vocabulary
    greedy_config = SearchConfig(method="greedy").for_model(info.decoder.max_length - 1)
    max_tokens = greedy_config.max_length
    prefix_length = info.decoder.max_length - 1

    # the original loop, on a subset
    model = load_model(info)
    model.predict([vectors[:1], np.zeros((1, prefix_length), np.int32)], verbose=0)  # warm-up, untimed
    subset = min(args.original_images, len(vectors))
    original_words, calls = [], 0
    began = time.time()
    for row in range(subset):
        words, used = original_greedy(model, vectors[row], prefix_length, max_tokens, vocabulary.start_id, vocabulary.end_id)
        original_words.append(tuple(vocabulary.decode(words)))
        calls += used
    original_seconds = time.time() - began

    began = time.time()
    greedy_captioner = Captioner(info, greedy_config)
    build_seconds = time.time() - began
    greedy = time_batched(greedy_captioner, vectors[: args.images], args.batch_size, args.repeats)
    beam_captioner = Captioner(info, SearchConfig(method="beam", beam_width=args.beam_width))
    beam = time_batched(beam_captioner, vectors[: args.images], args.batch_size, args.repeats)

    # the subset's batched captions: the first images of the batched run, or one more batched call
    batched_subset = [c.words for c in greedy["captions"][:subset]]
    if len(batched_subset) < subset:
        batched_subset = [c.words for c in greedy_captioner.caption(vectors[:subset])]
    same = [a == b for a, b in zip(original_words, batched_subset)]
    differences = [
        {"image_id": ids[i], "original": " ".join(original_words[i]), "batched": " ".join(batched_subset[i])} for i, ok in enumerate(same) if not ok
    ][:10]
    original_rate = subset / original_seconds
    result = {
        "benchmark": "decoding",
        "model": os.path.abspath(model_uri) if "://" not in model_uri else model_uri,
        "features": features_uri,
        "original": {"images": subset, "seconds": original_seconds, "predict_calls": calls, "captions_per_second": original_rate},
        "batched_greedy": {k: v for k, v in greedy.items() if k != "captions"} | {"batch_size": args.batch_size, "speedup": greedy["captions_per_second"] / original_rate},
        "batched_beam": {k: v for k, v in beam.items() if k != "captions"} | {"batch_size": args.batch_size, "beam_width": args.beam_width, "speedup": beam["captions_per_second"] / original_rate},
        "captioner_build_seconds": build_seconds,
        "agreement": {"images": subset, "identical": sum(same), "percent": 100.0 * sum(same) / subset, "differences": differences},
        "distinct_images": distinct,
        "distinct_greedy_captions": len({c.text for c in greedy["captions"]}),
        "mean_words": statistics.mean(len(c.words) for c in greedy["captions"]),
        "decoder": info.decoder.to_dict(),
        "max_tokens": max_tokens,
        "goal": {"speedup": greedy["captions_per_second"] / original_rate, "met": greedy["captions_per_second"] / original_rate >= 50.0},
        "machine": {"cpus": os.cpu_count(), "load_start": load_start, "load_end": round(os.getloadavg()[0], 2), "python": sys.version.split()[0]},
    }
    return result


def render_table(result: dict) -> str:
    o, g, b = result["original"], result["batched_greedy"], result["batched_beam"]
    rows = [
        ("original greedy: model.predict per word per image", o["images"], o["seconds"], o["captions_per_second"], 1.0, "-"),
        (f"batched greedy: Captioner, batch {g['batch_size']}", g["images"], g["seconds"], g["captions_per_second"], g["speedup"], f"{g['trace_seconds']:.1f}"),
        (f"batched beam {b['beam_width']}: Captioner, batch {b['batch_size']}", b["images"], b["seconds"], b["captions_per_second"], b["speedup"], f"{b['trace_seconds']:.1f}"),
    ]
    header = ("", "images", "seconds", "captions/s", "vs original", "trace s")
    cells = [header] + [(r[0], str(r[1]), f"{r[2]:.2f}", f"{r[3]:.1f}", f"{r[4]:.1f}x", r[5]) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    a = result["agreement"]
    d = result["decoder"]
    lines += [
        "",
        f"the original row is timed on the first {o['images']} images only ({o['predict_calls']} predict calls); the batched rows on {g['images']} images "
        f"({result['distinct_images']} distinct{', repeated' if result['distinct_images'] < g['images'] else ''}), median of {len(g['passes'])} passes",
        f"greedy agreement, original vs batched, same {a['images']} images: {a['identical']}/{a['images']} identical captions ({a['percent']:.1f}%)",
        f"model: vocab {d['vocab_size']}, L={d['max_length']}, units {d['units']}, hidden {d['hidden_units']}, D={d['feature_dim']}; "
        f"at most {result['max_tokens']} tokens; {result['mean_words']:.1f} words per greedy caption, {result['distinct_greedy_captions']} distinct captions",
        f"load average {result['machine']['load_start']} at start, {result['machine']['load_end']} at end, {result['machine']['cpus']} CPUs",
        f"goal: batched greedy >= 50x the original: {result['goal']['speedup']:.1f}x {'met' if result['goal']['met'] else 'NOT met'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(args)
    return lib.print_report(render_table(result), result, args.json_out)


if __name__ == "__main__":
    raise SystemExit(main())
