"""Merge against attention on the harder "relations" sample: quality, cost and repeated n-grams, in one run.

Run (from the repository root, with the project's virtual environment)::

    .venv/bin/python bench/bench_decoders.py --images 3000 --epochs 12 --demo demo-output \\
        --json-out bench-output/decoders.json

Everything is made by the pipeline's own jobs in one local Spark session, under
``--workdir`` (stages skip what is already there, so a rerun only measures again):

1. ``generate-sample --difficulty relations`` (captions name two groups and how one lies
   relative to the other), ``prepare-captions``;
2. ``extract-features`` twice on the same images with the same CNN (``--backbone``, seeded
   random weights): pooled by max (the merge decoder's input, as ``make demo``) and the
   spatial grid projected to ``--channels`` (the attention decoder's input); their speed
   as each job recorded it, their size as Parquet on disk;
3. ``train-decoder`` for each decoder with the same sizes, epochs (early stopping on dev
   loss), batch and seed; seconds per epoch from each model's history.json;
4. ``evaluate`` each on the test split: beam search (width 3), COCO toolkit, blind
   baseline, with repeated-trigram blocking on (the default) and off;
5. the human ceiling: each reference caption scored against the image's other four
   (``captioning.report.metrics.human_agreement``, nltk BLEU as evaluate reports it);
6. captions per second of each model (``Captioner``, beam 3, batches of 256, median of 3
   passes over the test images after a tracing call);
7. repeated trigrams on pictures unlike the training data: a "crowded" sample (3-6
   scattered single shapes), extracted both ways and captioned by each model with blocking
   off and on; with ``--demo``, also ``make demo``'s model on them (its CNN is the pooled
   one here when both use the defaults) and on its own test split.

Goal lines: attention BLEU-4 (nltk) >= merge + 0.05 and >= 2x attention's blind baseline;
BLEU-4 with blocking >= without, for each model.
Machine caveats: wall-clock timings of a possibly shared machine (the load average is
printed); every ratio compares numbers taken in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

try:
    from . import _benchlib as lib
    from . import _decoderlib as dlib
except ImportError:  # run as a script: bench/ is on sys.path
    import _benchlib as lib
    import _decoderlib as dlib

DECODERS = ("merge", "attention")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_decoders.py", description="Merge vs attention decoder on the relations sample: BLEU/CIDEr against blind and human, cost, repeated trigrams.")
    parser.add_argument("--workdir", default="bench-output/decoders", help="folder for everything this benchmark writes; reused by reruns (default %(default)s)")
    parser.add_argument("--images", type=int, default=3000, help="relations sample size (default %(default)s)")
    parser.add_argument("--crowded", type=int, default=300, help="crowded images, unlike the training pictures (default %(default)s)")
    parser.add_argument("--backbone", default="resnet50", help="CNN, seeded random weights (default %(default)s)")
    parser.add_argument("--channels", type=int, default=256, help="channels of the projected spatial grid (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=12, help="most epochs of each decoder, early stopping on dev loss (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples, CNN and training (default %(default)s)")
    parser.add_argument("--demo", default=None, help="a `make demo` folder: also measure its model's repeated trigrams and test BLEU-4 with blocking off/on")
    parser.add_argument("--json-out", default=None, help="also write the results as JSON to this file")
    return parser


def run_stage(name: str, main, argv: list[str], spark) -> None:
    lib.note(f"=== {name}: {' '.join(argv)}")
    if main(argv, spark=spark) != 0:
        raise SystemExit(f"error: {name} failed")


def prepare_inputs(args, paths: dict, spark) -> None:
    from captioning.pipeline import extract_features, prepare_captions
    from captioning.pipeline.demo import ensure_sample

    ensure_sample(paths["sample"], args.images, args.seed, difficulty="relations")
    ensure_sample(paths["crowded"], args.crowded, args.seed + 2000, difficulty="crowded")
    run_stage("prepare-captions", prepare_captions.main, ["--dataset", paths["sample"], "--output", paths["prepared"]], spark)
    cnn = ["--backbone", args.backbone, "--weights", "none", "--seed", str(args.seed)]
    for images, suffix in ((paths["sample"], ""), (paths["crowded"], "-crowded")):
        run_stage("extract-features", extract_features.main, ["--input", images, "--output", paths["pooled" + suffix], *cnn, "--pooling", "max"], spark)
        run_stage("extract-features", extract_features.main, ["--input", images, "--output", paths["spatial" + suffix], *cnn, "--spatial", "--channels", str(args.channels)], spark)


def evaluations(model: str, features: str, captions: str, out: str, spark) -> dict:
    """Metrics of evaluate with blocking on (the default) and off."""
    from captioning.pipeline import evaluate

    result = {}
    for name, extra in (("blocking", []), ("no_blocking", ["--no-repeat-ngram", "0"])):
        target = f"{out}-{name}"
        run_stage("evaluate", evaluate.main, ["--model", model, "--features", features, "--captions", captions, "--output", target, *extra], spark)
        with open(os.path.join(target, evaluate.METRICS)) as handle:
            result[name] = json.load(handle)
    return result


def training_cost(model: str) -> dict:
    from captioning.model.model_dir import ModelDir, read_info

    with open(ModelDir(model).history) as handle:
        history = json.load(handle)
    seconds = [h["seconds"] for h in history]
    later = seconds[1:] or seconds
    info = read_info(model)
    return {"seconds_per_epoch": sum(later) / len(later), "epochs": len(history), "best_epoch": info.training["best_epoch"], "best_dev_loss": info.training["best_dev_loss"], "train_rows": info.training["train_rows"]}


def extraction_cost(store: str) -> dict:
    from captioning.store.feature_store import require_manifest

    manifest = require_manifest(store)
    computing = [h for h in manifest.history if h.get("computed")][-1]
    return {
        "feature_shape": list(manifest.feature_shape), "vector_bytes": manifest.vector_bytes, "parquet_bytes_per_image": dlib.parquet_bytes(store) / max(manifest.rows, 1),
        "images_per_second": computing.get("images_per_second"), "images": manifest.rows,
    }


def scores(metrics: dict, side: str) -> dict:
    from captioning.report.metrics import metric_columns

    return metric_columns(metrics[side])


def measure(args, paths: dict, spark) -> dict:
    from captioning.model.search.config import SearchConfig
    from captioning.model.model_dir import read_info
    from captioning.pipeline import train_decoder

    prepare_inputs(args, paths, spark)
    stores = {"merge": paths["pooled"], "attention": paths["spatial"]}
    crowded = {"merge": paths["pooled-crowded"], "attention": paths["spatial-crowded"]}
    results = {}
    for decoder in DECODERS:
        model = paths[f"model-{decoder}"]
        run_stage("train-decoder", train_decoder.main, ["--captions", paths["prepared"], "--features", stores[decoder], "--output", model, "--decoder", decoder, "--epochs", str(args.epochs), "--seed", str(args.seed)], spark)
        results[decoder] = {"evaluation": evaluations(model, stores[decoder], paths["prepared"], paths[f"eval-{decoder}"], spark), "training": training_cost(model), "features": extraction_cost(stores[decoder])}
    if args.demo:
        demo = {k: os.path.join(args.demo, k) for k in ("model", "features", "prepared")}
        results["demo"] = {"evaluation": evaluations(demo["model"], demo["features"], demo["prepared"], paths["eval-demo"], spark)}

    vocabulary = read_info(paths["model-merge"]).vocabulary
    references = dlib.split_references(paths["prepared"], "test", vocabulary)
    human = dlib.human_ceiling(references)
    blocked, free = SearchConfig(), SearchConfig(no_repeat_ngram=0)
    for decoder in DECODERS:
        model = paths[f"model-{decoder}"]
        _, vectors = dlib.store_vectors(stores[decoder], references)
        results[decoder]["speed"] = dlib.captions_per_second(dlib.captioner_for(model, blocked), vectors)
        results[decoder]["repeats"] = dlib.repeats(model, dlib.store_vectors(crowded[decoder])[1], blocked, free)
    if args.demo:
        info = read_info(demo["model"])
        from captioning.store.feature_store import FeatureStoreMismatch, require_manifest

        try:
            info.check_features(crowded["merge"], require_manifest(crowded["merge"]).encoder)
            results["demo"]["repeats"] = dlib.repeats(demo["model"], dlib.store_vectors(crowded["merge"])[1], blocked, free)
        except FeatureStoreMismatch as error:
            lib.note(f"demo model not measured on the crowded images: {error}")
    results["human"] = human
    results["test_images"] = len(references)
    return results


def render(result: dict) -> str:
    merge, attention = result["merge"], result["attention"]
    lines = [f"relations sample: {result['args']['images']} images, test split {result['test_images']} images; CNN {result['args']['backbone']} (seeded random weights)", ""]
    columns = list(scores(merge["evaluation"]["blocking"], "model"))
    rows = [
        ("human (one annotator vs the other four)", {f"{k} (nltk)": v for k, v in result["human"].items()}),
        ("merge: blind", scores(merge["evaluation"]["blocking"], "blind")),
        ("merge", scores(merge["evaluation"]["blocking"], "model")),
        ("attention: blind", scores(attention["evaluation"]["blocking"], "blind")),
        ("attention", scores(attention["evaluation"]["blocking"], "model")),
    ]
    lines.append("| test split (beam 3, trigram blocking) | " + " | ".join(columns) + " |")
    lines.append("|---|" + "---:|" * len(columns))
    for name, row in rows:
        lines.append(f"| {name} | " + " | ".join(lib.fmt(row.get(c), 3) for c in columns) + " |")
    lines += ["", "| cost | merge | attention |", "|---|---:|---:|"]
    for label, key, path in (
        ("features per image as stored (bytes)", "vector_bytes", "features"), ("Parquet on disk per image (bytes)", "parquet_bytes_per_image", "features"),
        ("extract-features images/s", "images_per_second", "features"), ("training s/epoch (epochs 2..)", "seconds_per_epoch", "training"),
        ("epochs run / best epoch", None, "training"), ("best dev loss", "best_dev_loss", "training"), ("captions/s (beam 3)", "captions_per_second", "speed"),
    ):
        if key is None:
            values = [f"{side[path]['epochs']} / {side[path]['best_epoch']}" for side in (merge, attention)]
        else:
            values = [lib.fmt(side[path][key], 3 if key == "best_dev_loss" else 1) for side in (merge, attention)]
        lines.append(f"| {label} | {values[0]} | {values[1]} |")
    lines += ["", "| repeated trigrams | crowded images, blocking off | blocking on | test BLEU-4 (nltk), blocking off | blocking on |", "|---|---:|---:|---:|---:|"]
    for name in ("merge", "attention", "demo"):
        side = result.get(name)
        if not side:
            continue
        rep = side.get("repeats", {})
        bleu = [side["evaluation"][k]["model"]["bleu_nltk"]["BLEU-4"] for k in ("no_blocking", "blocking")]
        shares = [lib.fmt(rep[k]["share"] * 100, 1) + "%" if rep else "-" for k in ("off", "on")]
        lines.append(f"| {name if name != 'demo' else 'make demo model (default sample)'} | {shares[0]} | {shares[1]} | {bleu[0]:.3f} | {bleu[1]:.3f} |")
    goal = result["goal"]
    lines += [
        "",
        lib.goal_line("attention BLEU-4 (nltk) - merge", goal["margin"], ">= 0.05", goal["margin"] >= 0.05),
        lib.goal_line("attention BLEU-4 (nltk) / its blind baseline", goal["over_blind"], ">= 2", goal["over_blind"] >= 2),
        lib.goal_line("lowest BLEU-4 change from blocking", goal["blocking_change"], ">= 0", goal["blocking_change"] >= 0),
        f"machine: {result['machine']['cpus']} CPUs, load average {result['machine']['load_start']} at start, {result['machine']['load_end']} at end",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    lib.setup_environment()
    from captioning.pipeline.runner import configure_console, spark_for

    configure_console()
    work = os.path.abspath(args.workdir)
    names = ["sample", "crowded", "prepared", "pooled", "spatial", "pooled-crowded", "spatial-crowded", "model-merge", "model-attention", "eval-merge", "eval-attention", "eval-demo"]
    paths = {name: os.path.join(work, name) for name in names}
    load_start = os.getloadavg()[0]
    with spark_for("bench-decoders") as spark:
        result = measure(args, paths, spark)
    bleu = {d: result[d]["evaluation"]["blocking"]["model"]["bleu_nltk"]["BLEU-4"] for d in DECODERS}
    blind = result["attention"]["evaluation"]["blocking"]["blind"]["bleu_nltk"]["BLEU-4"]
    changes = [result[d]["evaluation"]["blocking"]["model"]["bleu_nltk"]["BLEU-4"] - result[d]["evaluation"]["no_blocking"]["model"]["bleu_nltk"]["BLEU-4"] for d in (*DECODERS, "demo") if d in result]
    result.update(
        args=vars(args),
        goal={"margin": bleu["attention"] - bleu["merge"], "over_blind": bleu["attention"] / max(blind, 1e-9), "blocking_change": min(changes)},
        machine={"cpus": lib.cpu_count(), "load_start": round(load_start, 2), "load_end": round(os.getloadavg()[0], 2), "python": sys.version.split()[0]},
    )
    return lib.print_report(render(result), result, args.json_out)


if __name__ == "__main__":
    raise SystemExit(main())
