"""``make demo``: the whole pipeline on the built-in sample dataset, on local Spark.

generate sample data -> prepare captions -> extract features -> train -> evaluate ->
caption a folder of unseen images -> HTML gallery. Every stage skips work already done,
so a second run reuses the first one's outputs and finishes quickly. The CNN uses
seeded random weights (no ImageNet download here); the sample captions describe colours,
shapes, sizes, counts and positions, which such features still carry.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time

from captioning.errors import InputError
from captioning.pipeline.runner import parse_config, run_main, spark_for
from captioning.store import storage

LOG = logging.getLogger("demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo", description="Run the whole pipeline on the built-in sample dataset with local Spark.")
    parser.add_argument("--workdir", default="demo-output", help="folder for every output (default demo-output)")
    parser.add_argument("--images", type=int, default=3000, help="sample dataset size (default 3000)")
    parser.add_argument("--unseen", type=int, default=120, help="unseen images to caption in bulk (default 120)")
    parser.add_argument("--backbone", default="resnet50", help="CNN backbone (default resnet50, as the original project)")
    parser.add_argument(
        "--pooling",
        default="max",
        choices=("avg", "max"),
        help="feature pooling (default max: with random weights the strongest response keeps more of the scene than the average)",
    )
    parser.add_argument("--epochs", type=int, default=12, help="most training epochs (default 12; early stopping on dev loss)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample data and the models (default 0)")
    return parser


def ensure_sample(uri: str, images: int, seed: int, images_only: bool = False, difficulty: str = "groups") -> None:
    from captioning.data.sample.config import SampleConfig
    from captioning.data.sample.generate import generate_sample_dataset

    marker = storage.join(uri, ".sample.json")
    wanted = {"images": images, "seed": seed, **({"difficulty": difficulty} if difficulty != "groups" else {})}
    if storage.exists(marker) and json.loads(storage.read_text(marker)) == wanted:
        LOG.info("sample dataset at %s is up to date", uri)
        return
    generate_sample_dataset(uri, SampleConfig(num_images=images, seed=seed, difficulty=difficulty))
    storage.write_text(marker, json.dumps(wanted))


RECIPE_FILE = "demo.json"


def recipe_of(args: argparse.Namespace) -> dict:
    """What the demo's outputs depend on; a workdir holds the outputs of one recipe."""
    return {"images": args.images, "unseen": args.unseen, "backbone": args.backbone, "pooling": args.pooling, "epochs": args.epochs, "seed": args.seed}


def claim_workdir(work: str, recipe: dict) -> None:
    """Refuse a workdir filled by another recipe (or by an older demo) instead of failing midway.

    Reruns with the same recipe reuse everything; a changed one would meet a feature store
    of another CNN configuration, a model trained for other epochs, and so on.
    """
    marker = os.path.join(work, RECIPE_FILE)
    if os.path.exists(marker):
        with open(marker) as handle:
            found = json.load(handle)
        if found == recipe:
            return
        changed = ", ".join(f"{k} {found.get(k)!r} -> {v!r}" for k, v in recipe.items() if found.get(k) != v)
        raise InputError(f"{work} holds a demo made with other settings ({changed}); remove it (rm -rf {work}) or choose another --workdir")
    if os.path.isdir(work) and os.listdir(work):
        raise InputError(f"{work} holds files of another demo or program; remove it (rm -rf {work}) or choose another --workdir")
    os.makedirs(work, exist_ok=True)
    with open(marker, "w") as handle:
        json.dump(recipe, handle, indent=1)


def print_metrics_table(summary_uri: str) -> None:
    """Repeat the evaluation's metrics table at the end, where the demo's output stops."""
    lines = storage.read_text(summary_uri).splitlines()
    table = [line for line in lines if line.startswith("|")]
    print("Test split, the trained decoder against the blind baseline (details: " + summary_uri + "):")
    print("\n".join(table))


def run(args: argparse.Namespace, spark=None) -> int:
    from captioning.pipeline import caption_images, evaluate, extract_features, prepare_captions, train_decoder

    work = os.path.abspath(args.workdir)
    claim_workdir(work, recipe_of(args))
    paths = {name: os.path.join(work, name) for name in ("sample", "unseen", "prepared", "features", "model", "evaluation", "captions")}
    timings = {}
    started = time.time()

    def stage(name, fn):
        begin = time.time()
        LOG.info("=== %s", name)
        result = fn()
        timings[name] = round(time.time() - begin, 1)
        if result not in (0, None):
            raise SystemExit(f"demo stopped: {name} failed (exit {result})")

    stage("generate sample data", lambda: ensure_sample(paths["sample"], args.images, args.seed))
    stage("generate unseen images", lambda: ensure_sample(paths["unseen"], args.unseen, args.seed + 1000))
    with spark_for("captioning-demo", spark) as spark:
        stage("prepare captions", lambda: prepare_captions.main(["--dataset", paths["sample"], "--output", paths["prepared"]], spark=spark))
        stage("extract features", lambda: extract_features.main(["--input", paths["sample"], "--output", paths["features"], "--backbone", args.backbone, "--weights", "none", "--pooling", args.pooling, "--seed", str(args.seed)], spark=spark))
        stage("train decoder", lambda: train_decoder.main(["--captions", paths["prepared"], "--features", paths["features"], "--output", paths["model"], "--epochs", str(args.epochs), "--seed", str(args.seed)], spark=spark))
        stage("evaluate", lambda: evaluate.main(["--model", paths["model"], "--features", paths["features"], "--captions", paths["prepared"], "--output", paths["evaluation"]], spark=spark))
        unseen_images = os.path.join(paths["unseen"], "Flicker8k_Dataset")
        stage("caption unseen images", lambda: caption_images.main(["--input", unseen_images, "--model", paths["model"], "--output", paths["captions"]], spark=spark))
    print()
    print_metrics_table(os.path.join(paths["evaluation"], evaluate.SUMMARY))
    print()
    print(f"Pipeline finished in {time.time() - started:.0f}s ({', '.join(f'{k}: {v}s' for k, v in timings.items())})")
    print(f"  sample dataset      {paths['sample']}")
    print(f"  captions table      {paths['prepared']}/captions  (vocabulary: vocab.json, report: summary.json)")
    print(f"  feature store       {paths['features']}")
    print(f"  model directory     {paths['model']}  (loss curve: loss.png)")
    print(f"  evaluation          {paths['evaluation']}/summary.md")
    print(f"  bulk captions       {paths['captions']}/captions  (JSON Lines: exports/, runs/)")
    print(f"  gallery             {paths['captions']}/gallery.html")
    return 0


def main(argv: list[str] | None = None, spark=None) -> int:
    return run_main(lambda: run(parse_config(build_parser(), lambda args: args, argv), spark=spark))


if __name__ == "__main__":
    raise SystemExit(main())
