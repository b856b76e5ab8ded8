"""``captioner``: one command whose subcommands are the pipeline's stages and its tools.

Each subcommand hands its remaining arguments to its module's ``main`` (for a stage, the
same function ``spark-submit jobs/<stage>.py`` runs), so ``captioner <command> --help``
and the spark-submit form accept exactly the same arguments.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str  # the subcommand
    module: str  # the module whose main(argv) runs it
    summary: str
    stage: bool = False  # a Spark stage: jobs/<module's last name>.py runs it under spark-submit

    @property
    def script(self) -> str:
        """File name of a stage's spark-submit entry script, e.g. ``prepare_captions.py``."""
        return self.module.rsplit(".", 1)[1] + ".py"


COMMANDS = (
    Command("generate-sample", "captioning.pipeline.generate_sample", "write the built-in Flickr8k-format sample dataset"),
    Command("prepare-captions", "captioning.pipeline.prepare_captions", "clean captions, build the vocabulary, write the captions table", stage=True),
    Command("extract-features", "captioning.pipeline.extract_features", "CNN features of every image into a Parquet feature store", stage=True),
    Command("train-decoder", "captioning.pipeline.train_decoder", "train the LSTM caption decoder from the feature store", stage=True),
    Command("evaluate", "captioning.pipeline.evaluate", "caption the test split and score it (BLEU, METEOR, ROUGE-L, CIDEr)", stage=True),
    Command("caption-images", "captioning.pipeline.caption_images", "caption every image in buckets or folders", stage=True),
    Command("caption", "captioning.app.caption", "caption image files or s3:// objects in this process (no Spark)"),
    Command("serve", "captioning.app.serve", "a web page on 127.0.0.1: caption your photos, hear them, browse a caption-images output"),
    Command("demo", "captioning.pipeline.demo", "the whole pipeline on the built-in sample dataset"),
    Command("deploy", "captioning.aws.deploy", "upload the packaged wheel, bootstrap and job scripts to S3 (emr/README.md)"),
    Command("launch", "captioning.aws.launch", "start an EMR cluster that runs a pipeline and terminates itself"),
    Command("rehearse", "captioning.aws.rehearsal", "run both state machines locally: ASL interpreter, Spark cluster, S3 server"),
)


def command(name: str) -> Command | None:
    return next((c for c in COMMANDS if c.name == name), None)


def stages() -> tuple[Command, ...]:
    return tuple(c for c in COMMANDS if c.stage)


def usage() -> str:
    lines = ["usage: captioner <command> [options]   (captioner <command> --help for its options)", "", "commands:"]
    lines += [f"  {c.name:<18} {c.summary}" for c in COMMANDS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    chosen = command(argv[0])
    if chosen is None:
        print(f"error: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return int(importlib.import_module(chosen.module).main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
