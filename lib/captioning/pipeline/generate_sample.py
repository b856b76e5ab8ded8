"""``captioner generate-sample``: write the built-in Flickr8k-format sample dataset.

    captioner generate-sample --output data/sample --images 2000 --seed 0
    captioner generate-sample --output data/relations --images 3000 --difficulty relations
"""
from __future__ import annotations

import argparse
import time

from captioning.data.sample.config import DIFFICULTIES, SampleConfig
from captioning.pipeline.options import default, non_negative_int, positive_int
from captioning.pipeline.runner import run_stage


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="generate-sample", description="Write a Flickr8k-format dataset of pictures with grounded captions (local path or s3://).")
    parser.add_argument("--output", required=True, help="dataset root to write (Flicker8k_Dataset/, Flickr8k.token.txt, split lists)")
    parser.add_argument("--images", type=positive_int, default=default(SampleConfig, "num_images"), help="number of images (default %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=default(SampleConfig, "seed"), help="seed: the same seed writes identical files (default %(default)s)")
    parser.add_argument(
        "--difficulty", choices=DIFFICULTIES, default=default(SampleConfig, "difficulty"),
        help="kind of scene (default %(default)s): 'groups' (one or two groups, the main one captioned with its place), "
        "'relations' (two groups and how one lies relative to the other: harder, pooled image vectors lose it), "
        "'crowded' (3-6 scattered single shapes, unlike both: to see how a model copes with unfamiliar pictures)",
    )
    parser.add_argument("--quirks", action="store_true", help="add the real Flickr8k files' defects (.jpg.1 ids, CRLF, blank lines, missing images)")
    parser.add_argument("--workers", type=non_negative_int, default=default(SampleConfig, "workers"), help="rendering processes (default %(default)s: one per CPU)")
    return parser


def config_from_args(args: argparse.Namespace) -> tuple[str, SampleConfig]:
    return args.output, SampleConfig(num_images=args.images, seed=args.seed, difficulty=args.difficulty, quirks=args.quirks, workers=args.workers)


def generate(output: str, config: SampleConfig) -> dict:
    from captioning.data.sample.generate import generate_sample_dataset

    started = time.time()
    summary = generate_sample_dataset(output, config)
    return {"root": summary.root, "difficulty": config.difficulty, "images": summary.num_images, "splits": dict(summary.split_counts), "quirks": len(summary.quirks), "seconds": round(time.time() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    return run_stage(argv, build_parser(), config_from_args, lambda chosen: generate(*chosen))


if __name__ == "__main__":
    raise SystemExit(main())
