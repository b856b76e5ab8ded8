"""Prepare captions: a Flickr8k-layout dataset -> captions table, vocabulary, summary.

    spark-submit jobs/prepare_captions.py --dataset s3://my-bucket/flickr8k --output s3://my-bucket/prepared
    captioner prepare-captions --dataset data/sample --output data/prepared

Writes the prepared-captions folder (:mod:`captioning.data.prepared`): the captions
table, the vocabulary and, last, a summary that counts every dropped or odd item by
reason. A rerun over unchanged inputs with the same options does nothing
(``--overwrite`` forces it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
from dataclasses import dataclass, field

from captioning.data.flickr8k import load_dataset
from captioning.data.text import CleaningConfig
from captioning.errors import InputError
from captioning.pipeline.options import default, positive_int
from captioning.serialization import to_dict
from captioning.pipeline.runner import print_json, run_stage, spark_for
from captioning.store import storage
from captioning.data.prepared import PreparedCaptions

LOG = logging.getLogger("prepare_captions")


@dataclass(frozen=True)
class PrepareConfig:
    dataset_uri: str
    output_uri: str
    min_count: int = 10  # the original project's vocabulary threshold
    max_length: int = 0  # ids per caption incl. start/end; 0 = longest training caption + 2
    max_length_cap: int = 40  # upper bound for the automatic max_length
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    split_seed: int = 0  # only used when the dataset has no split lists (Kaggle layout)
    overwrite: bool = False

    def options(self) -> dict:
        """The settings that change the output (the rerun fingerprint covers these)."""
        data = to_dict(self)
        data.pop("output_uri")
        data.pop("overwrite")
        return data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepare-captions",
        description="Clean Flickr8k captions, build the vocabulary from the training split and write a Parquet captions table.",
    )
    parser.add_argument("--dataset", required=True, help="dataset root (local path, file:// or s3://) in Flickr8k layout: Flicker8k_Dataset/ or Images/, Flickr8k.token.txt or captions.txt, Flickr_8k.{train,dev,test}Images.txt")
    parser.add_argument("--output", required=True, help="output folder/prefix for captions/, vocab.json and summary.json")
    parser.add_argument("--min-count", type=positive_int, default=default(PrepareConfig, "min_count"), help="keep words seen at least this many times in training captions (default %(default)s, as the original project)")
    parser.add_argument("--max-length", type=int, default=default(PrepareConfig, "max_length"), help="token ids per caption including startseq/endseq; longer captions are truncated and counted (default %(default)s: longest training caption + 2, at most --max-length-cap)")
    parser.add_argument("--max-length-cap", type=positive_int, default=default(PrepareConfig, "max_length_cap"), help="upper bound for the automatic --max-length (default %(default)s)")
    parser.add_argument("--keep-case", action="store_true", help="do not lower-case captions")
    parser.add_argument("--keep-punctuation", action="store_true", help="do not delete punctuation characters")
    parser.add_argument("--keep-single-letters", action="store_true", help="keep one-letter tokens such as 'a' (the original dropped them)")
    parser.add_argument("--keep-digits", action="store_true", help="keep tokens that contain digits (the original dropped them)")
    parser.add_argument("--split-seed", type=int, default=default(PrepareConfig, "split_seed"), help="seed of the hash split used when the dataset has no split lists (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="recompute even if the output is up to date")
    return parser


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    if args.max_length and args.max_length < 3:
        raise InputError(f"--max-length must be at least 3 (startseq, a word, endseq), got {args.max_length}")
    return PrepareConfig(
        dataset_uri=args.dataset,
        output_uri=args.output,
        min_count=args.min_count,
        max_length=args.max_length,
        max_length_cap=args.max_length_cap,
        cleaning=CleaningConfig(
            lowercase=not args.keep_case,
            strip_punctuation=not args.keep_punctuation,
            drop_single_letter=not args.keep_single_letters,
            drop_with_digits=not args.keep_digits,
        ),
        split_seed=args.split_seed,
        overwrite=args.overwrite,
    )


def fingerprint(config: PrepareConfig, dataset) -> str:
    """Identity of (inputs, options): unchanged images, captions, splits and options give the same value."""
    digest = hashlib.sha256(json.dumps(config.options(), sort_keys=True).encode())
    for image_id in sorted(dataset.images):
        digest.update(f"{image_id}\0{dataset.images[image_id].version}\n".encode())
    for record in dataset.captions:
        digest.update(f"{record.image_id}\0{record.caption_index}\0{record.text}\n".encode())
    for split in sorted(dataset.splits):
        digest.update(f"{split}:{','.join(sorted(dataset.splits[split]))}\n".encode())
    return digest.hexdigest()


def extract(config: PrepareConfig):
    """Read the dataset on the driver (a few MB of text); images are only listed."""
    return load_dataset(config.dataset_uri, split_seed=config.split_seed)


def caption_rows(dataset) -> tuple[list[tuple], list[dict]]:
    """(rows for Spark, dropped captions): captions of images in no split are dropped, counted."""
    dropped = [
        {"reason": "caption_image_in_no_split", "source": record.source, "detail": f"{record.image_id} is in no split list"}
        for record in dataset.captions
        if dataset.split_of(record.image_id) is None
    ]
    return dataset.caption_rows(), dropped


def transform(spark, config: PrepareConfig, rows: list[tuple]):
    """Spark part: clean, count training words, encode. Returns (table, vocab, max_length, empties)."""
    from pyspark.sql import functions as F

    from captioning.pipeline.transforms import captions as stage

    tokens = stage.add_tokens(stage.captions_frame(spark, rows), config.cleaning).cache()
    empty = [
        {"reason": "empty_after_cleaning", "source": row["source"], "detail": f"caption {row['raw']!r} has no words left after cleaning"}
        for row in tokens.where(F.size("tokens") == 0).select("source", "raw").collect()
    ]
    tokens = tokens.where(F.size("tokens") > 0)
    vocabulary = stage.build_vocabulary(tokens, config.min_count, config.cleaning)
    if vocabulary.size <= 4:
        raise InputError(
            f"{config.dataset_uri}: no training word occurs {config.min_count} times or more; "
            "check the train split list, or lower --min-count for a small dataset"
        )
    max_length = config.max_length or min(config.max_length_cap, stage.longest_training_caption(tokens) + 2)
    table = stage.encode_captions(tokens, vocabulary, max_length).select(
        "image_id", "split", "caption_index", "raw", "source", "tokens", "token_ids", "length", "truncated"
    )
    return table, vocabulary, max_length, empty


def load(config: PrepareConfig, table, vocabulary, max_length: int, dataset, dropped: list[dict], digest: str) -> dict:
    """Write table, vocabulary and, last, the summary."""
    from captioning.pipeline.transforms import captions as stage

    output = PreparedCaptions(config.output_uri)
    storage.delete(output.summary)  # no summary = incomplete output, until the new one is written
    table.cache()
    table.write.mode("overwrite").parquet(output.captions)
    output.write_vocabulary(vocabulary)
    written = table.count()
    truncated = table.where("truncated").count()
    issues = [{"reason": i.reason, "source": f"{i.uri}:{i.line}" if i.line else i.uri, "detail": i.detail} for i in dataset.issues]
    issues += dropped
    counts: dict[str, int] = {}
    for issue in issues:
        counts[issue["reason"]] = counts.get(issue["reason"], 0) + 1
    summary = {
        "fingerprint": digest,
        "dataset": config.dataset_uri,
        "layout": dataset.layout,
        "options": config.options(),
        "images": {"in_folder": len(dataset.images), "with_captions": len({r.image_id for r in dataset.captions})},
        "splits": stage.split_counts(table),
        "captions": {"read": len(dataset.captions), "written": written, "truncated": truncated},
        "vocabulary": {"size": vocabulary.size, "min_count": vocabulary.min_count, "dropped_words": vocabulary.dropped_words},
        "max_length": max_length,
        "issue_counts": dict(sorted(counts.items())),
        "issues": issues,
    }
    output.write_summary(summary)
    table.unpersist()
    return output.read_summary()


def run(config: PrepareConfig, spark=None) -> dict:
    """The whole stage; returns the summary (the existing one when up to date)."""
    dataset = extract(config)
    digest = fingerprint(config, dataset)
    previous = PreparedCaptions(config.output_uri).read_summary()
    if not config.overwrite and previous is not None and previous.get("fingerprint") == digest:
        LOG.info("%s is up to date with %s; nothing to do (--overwrite recomputes)", config.output_uri, config.dataset_uri)
        return previous
    rows, dropped = caption_rows(dataset)
    if not rows:
        raise InputError(f"{config.dataset_uri}: no caption belongs to an image in a split; check the split lists and image folder")
    with spark_for("prepare-captions", spark) as session:
        table, vocabulary, max_length, empty = transform(session, config, rows)
        summary = load(config, table, vocabulary, max_length, dataset, dropped + empty, digest)
    LOG.info("wrote %d captions (%s), vocabulary %d words, max_length %d to %s", summary["captions"]["written"], summary["splits"], vocabulary.size, max_length, config.output_uri)
    return summary


def report(summary: dict) -> None:
    print_json({k: summary[k] for k in ("splits", "captions", "vocabulary", "max_length", "issue_counts")})


def main(argv: list[str] | None = None, spark=None) -> int:
    return run_stage(argv, build_parser(), config_from_args, lambda config: run(config, spark), report)


if __name__ == "__main__":
    raise SystemExit(main())
