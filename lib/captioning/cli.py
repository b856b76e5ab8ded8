"""``captioner``: one command whose subcommands run the pipeline's jobs.

Each subcommand hands its remaining arguments to the job's own ``main`` (the same
function ``spark-submit jobs/<name>.py`` runs), so ``captioner <job> --help`` and the
spark-submit form accept exactly the same arguments.
"""
from __future__ import annotations

import importlib
import sys

JOBS = {
    "generate-sample": ("captioning.sample_cli", "write the built-in Flickr8k-format sample dataset"),
    "prepare-captions": ("captioning.jobs.prepare_captions", "clean captions, build the vocabulary, write the captions table"),
    "extract-features": ("captioning.jobs.extract_features", "CNN features of every image into a Parquet feature store"),
    "train-decoder": ("captioning.jobs.train_decoder", "train the LSTM caption decoder from the feature store"),
    "evaluate": ("captioning.jobs.evaluate", "caption the test split and score it (BLEU, METEOR, ROUGE-L, CIDEr)"),
    "caption-images": ("captioning.jobs.caption_images", "caption every image in buckets or folders"),
    "demo": ("captioning.demo", "the whole pipeline on the built-in sample dataset"),
    "deploy": ("captioning.aws.deploy", "upload the packaged wheel, bootstrap and job scripts to S3 (emr/README.md)"),
    "launch": ("captioning.aws.launch", "start an EMR cluster that runs a pipeline and terminates itself"),
}


def usage() -> str:
    lines = ["usage: captioner <command> [options]   (captioner <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<18} {summary}" for name, (_, summary) in JOBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in JOBS:
        print(f"error: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(JOBS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
