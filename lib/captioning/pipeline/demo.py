"""``make demo``: the whole pipeline on the built-in sample dataset, on local Spark.

generate sample data -> prepare captions -> extract features -> train -> evaluate ->
caption a folder of unseen images -> HTML gallery. Every stage skips work already done,
so a second run reuses the first one's outputs and finishes quickly. The CNN uses
seeded random weights (no ImageNet download here); the sample captions describe colours,
shapes, sizes, counts and positions, which such features still carry.

``--storage s3`` (``make demo STORAGE=s3``) runs the same pipeline bucket to bucket, as
the EMR steps would: a local S3 server, the sample uploaded to a bucket, and each stage
given exactly the arguments the training and bulk-captioning state machines compute for
such an execution (simulated with :mod:`captioning.aws.plan`: nothing is deployed). The
server keeps nothing once stopped, so the results bucket is copied into the work folder.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time

from captioning.data.sample.generate import IMAGE_FOLDER
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
    parser.add_argument("--storage", choices=("local", "s3"), default="local", help="local folders, or buckets of a local S3 server with the EMR steps' arguments (default local)")
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
    return {"images": args.images, "unseen": args.unseen, "backbone": args.backbone, "pooling": args.pooling, "epochs": args.epochs, "seed": args.seed, "storage": args.storage}


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


def local_stages(args: argparse.Namespace, paths: dict) -> list[tuple[str, str, list[str]]]:
    """(stage name, module, arguments) of the pipeline on local folders."""
    return [
        ("prepare captions", "prepare_captions", ["--dataset", paths["sample"], "--output", paths["prepared"]]),
        ("extract features", "extract_features", ["--input", paths["sample"], "--output", paths["features"], "--backbone", args.backbone, "--weights", "none", "--pooling", args.pooling, "--seed", str(args.seed)]),
        ("train decoder", "train_decoder", ["--captions", paths["prepared"], "--features", paths["features"], "--output", paths["model"], "--epochs", str(args.epochs), "--seed", str(args.seed)]),
        ("evaluate", "evaluate", ["--model", paths["model"], "--features", paths["features"], "--captions", paths["prepared"], "--output", paths["evaluation"]]),
        ("caption unseen images", "caption_images", ["--input", os.path.join(paths["unseen"], IMAGE_FOLDER), "--model", paths["model"], "--output", paths["captions"]]),
    ]


# Names a plan needs for the cluster request; the demo runs only the steps' job arguments.
DEMO_DEPLOYMENT = ("s3://captioning-artifacts/artifacts", "s3://captioning-logs/emr/", "demo-emr-service-role", "demo-emr-instance-profile", "subnet-demo", "demo-security-configuration")
DATA_BUCKET, RESULTS_BUCKET = "captioning-data", "captioning-results"


def emr_stages(args: argparse.Namespace) -> tuple[list[tuple[str, str, list[str]]], dict]:
    """The stages with the arguments the state machines give their EMR steps, and the URIs."""
    from captioning.aws.deployment import Deployment
    from captioning.aws.plan import argv_per_step

    uris = {
        "dataset": f"s3://{DATA_BUCKET}/flickr8k", "photos": f"s3://{DATA_BUCKET}/photos/unseen/",
        "run": f"s3://{RESULTS_BUCKET}/runs/demo", "captions": f"s3://{RESULTS_BUCKET}/captions",
    }
    training = {
        "artifacts_version": "demo", "dataset": uris["dataset"], "output": uris["run"], "backbone": args.backbone, "backbone_weights": "none",
        "epochs": args.epochs, "extract_features_args": ["--pooling", args.pooling, "--seed", str(args.seed)], "train_decoder_args": ["--seed", str(args.seed)],
    }
    bulk = {"artifacts_version": "demo", "inputs": [uris["photos"]], "model": f"{uris['run']}/model", "output_bucket": RESULTS_BUCKET, "output_prefix": "captions"}
    deployment = Deployment(*DEMO_DEPLOYMENT)
    stages = []
    for machine, execution in (("training", training), ("bulk_captioning", bulk)):
        for state, argv in argv_per_step(machine, execution, deployment, execution_name="demo").items():
            script = next(i for i, arg in enumerate(argv) if arg.endswith(".py"))
            stages.append((state, os.path.basename(argv[script])[: -len(".py")], argv[script + 1 :]))
    return stages, uris


def run_stages(stages, spark, timings: dict) -> None:
    import importlib

    with spark_for("captioning-demo", spark) as session:
        for name, module, argv in stages:
            begin = time.time()
            LOG.info("=== %s", name)
            result = importlib.import_module(f"captioning.pipeline.{module}").main(argv, spark=session)
            timings[name] = round(time.time() - begin, 1)
            if result not in (0, None):
                raise SystemExit(f"demo stopped: {name} failed (exit {result})")


def run(args: argparse.Namespace, spark=None) -> int:
    from captioning.pipeline import evaluate

    work = os.path.abspath(args.workdir)
    claim_workdir(work, recipe_of(args))
    paths = {name: os.path.join(work, name) for name in ("sample", "unseen", "prepared", "features", "model", "evaluation", "captions")}
    timings: dict[str, float] = {}
    started = time.time()
    for name, folder, count, seed in (("sample data", paths["sample"], args.images, args.seed), ("unseen images", paths["unseen"], args.unseen, args.seed + 1000)):
        begin = time.time()
        ensure_sample(folder, count, seed)
        timings[f"generate {name}"] = round(time.time() - begin, 1)
    if args.storage == "local":
        run_stages(local_stages(args, paths), spark, timings)
        results = paths
    else:
        results = run_on_local_s3(args, paths, work, timings)
    print()
    print_metrics_table(os.path.join(results["evaluation"], evaluate.SUMMARY))
    print()
    print(f"Pipeline finished in {time.time() - started:.0f}s ({', '.join(f'{k}: {v}s' for k, v in timings.items())})")
    print(f"  sample dataset      {paths['sample']}")
    print(f"  captions table      {results['prepared']}/captions  (vocabulary: vocab.json, report: summary.json)")
    print(f"  feature store       {results['features']}")
    print(f"  model directory     {results['model']}  (loss curve: loss.png)")
    print(f"  evaluation          {results['evaluation']}/summary.md")
    print(f"  bulk captions       {results['captions']}/captions  (JSON Lines: exports/, runs/)")
    print(f"  gallery             {results['captions']}/gallery.html")
    return 0


def run_on_local_s3(args: argparse.Namespace, paths: dict, work: str, timings: dict) -> dict:
    """The stages bucket to bucket on a local S3 server; the local copies of their outputs.

    The Spark session is made here, after the server started: Spark's S3 connector takes
    its endpoint from the environment when the session is built.
    """
    from captioning.store.local_s3 import LocalS3, download_prefix, upload_folder

    stages, uris = emr_stages(args)
    copy = os.path.join(work, RESULTS_BUCKET)
    with LocalS3(buckets=(DATA_BUCKET, RESULTS_BUCKET)) as server:
        LOG.info("local S3 server at %s; uploading the sample dataset to %s", server.endpoint, uris["dataset"])
        upload_folder(paths["sample"], uris["dataset"])
        upload_folder(os.path.join(paths["unseen"], IMAGE_FOLDER), uris["photos"])
        run_stages(stages, None, timings)
        download_prefix(f"s3://{RESULTS_BUCKET}", copy)
    print()
    print(f"Every stage ran bucket to bucket with the EMR steps' arguments; the results bucket {RESULTS_BUCKET} (gone with the")
    print(f"local S3 server) is copied to {copy}:")
    for name, module, argv in stages:
        print(f"  {name:<22} {module}.py {' '.join(argv)}")
    local = os.path.join(copy, "runs", "demo")
    return {"prepared": os.path.join(local, "prepared"), "features": os.path.join(local, "features", args.backbone), "model": os.path.join(local, "model"),
            "evaluation": os.path.join(local, "evaluation"), "captions": os.path.join(copy, "captions")}


def main(argv: list[str] | None = None, spark=None) -> int:
    return run_main(lambda: run(parse_config(build_parser(), lambda args: args, argv), spark=spark))


if __name__ == "__main__":
    raise SystemExit(main())
