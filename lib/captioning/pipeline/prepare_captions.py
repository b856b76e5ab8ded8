"""Prepare captions: a Flickr8k-layout dataset -> captions table, vocabulary, summary.

    spark-submit jobs/prepare_captions.py --dataset s3://my-bucket/flickr8k --output s3://my-bucket/prepared
    captioner prepare-captions --dataset data/sample --output data/prepared

Writes under ``--output``:
  captions/      Parquet, one row per caption: image_id, split, caption_index, raw,
                 source, tokens, token_ids (padded to max_length), length, truncated
  vocab.json     the vocabulary with counts and the cleaning rules that made it
  summary.json   images and captions per split, and every dropped or odd item by reason

summary.json is written last: its presence means the stage completed. A rerun over
unchanged inputs with the same options does nothing (``--overwrite`` forces it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field

from captioning.store import storage
from captioning.data.flickr8k import load_dataset
from captioning.pipeline.runner import InputError, run_main, spark_for
from captioning.data.text import CleaningConfig

LOG = logging.getLogger("prepare_captions")
SUMMARY_FORMAT = "captioning.prepare-summary/1"


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
        data = asdict(self)
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
    parser.add_argument("--min-count", type=int, default=10, help="keep words seen at least this many times in training captions (default 10, as the original project)")
    parser.add_argument("--max-length", type=int, default=0, help="token ids per caption including startseq/endseq; longer captions are truncated and counted (default: longest training caption + 2, at most --max-length-cap)")
    parser.add_argument("--max-length-cap", type=int, default=40, help="upper bound for the automatic --max-length (default 40)")
    parser.add_argument("--keep-case", action="store_true", help="do not lower-case captions")
    parser.add_argument("--keep-punctuation", action="store_true", help="do not delete punctuation characters")
    parser.add_argument("--keep-single-letters", action="store_true", help="keep one-letter tokens such as 'a' (the original dropped them)")
    parser.add_argument("--keep-digits", action="store_true", help="keep tokens that contain digits (the original dropped them)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the hash split used when the dataset has no split lists (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="recompute even if the output is up to date")
    return parser


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    if args.min_count < 1:
        raise InputError(f"--min-count must be at least 1, got {args.min_count}")
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


def previous_fingerprint(output_uri: str) -> str | None:
    summary_uri = storage.join(output_uri, "summary.json")
    if not storage.exists(summary_uri):
        return None
    try:
        return json.loads(storage.read_text(summary_uri)).get("fingerprint")
    except (ValueError, storage.StorageError):
        return None


def extract(config: PrepareConfig):
    """Read the dataset on the driver (a few MB of text); images are only listed."""
    return load_dataset(config.dataset_uri, split_seed=config.split_seed)


def caption_rows(dataset) -> tuple[list[tuple], list[dict]]:
    """(rows for Spark, dropped captions) — captions of images in no split are dropped, counted."""
    rows, dropped = [], []
    for record in dataset.captions:
        split = dataset.split_of(record.image_id)
        if split is None:
            dropped.append({"reason": "caption_image_in_no_split", "source": record.source, "detail": f"{record.image_id} is in no split list"})
            continue
        rows.append((record.image_id, split, record.caption_index, record.text, record.source))
    return rows, dropped


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

    summary_uri = storage.join(config.output_uri, "summary.json")
    storage.delete(summary_uri)  # no summary = incomplete output, until the new one is written
    table.cache()
    table.write.mode("overwrite").parquet(storage.join(config.output_uri, "captions"))
    storage.write_text(storage.join(config.output_uri, "vocab.json"), vocabulary.to_json())
    written = table.count()
    truncated = table.where("truncated").count()
    issues = [{"reason": i.reason, "source": f"{i.uri}:{i.line}" if i.line else i.uri, "detail": i.detail} for i in dataset.issues]
    issues += dropped
    counts: dict[str, int] = {}
    for issue in issues:
        counts[issue["reason"]] = counts.get(issue["reason"], 0) + 1
    summary = {
        "format": SUMMARY_FORMAT,
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
    storage.write_text(summary_uri, json.dumps(summary, indent=1))
    table.unpersist()
    return summary


def run(config: PrepareConfig, spark=None) -> dict:
    """The whole stage; returns the summary (the existing one when up to date)."""
    dataset = extract(config)
    digest = fingerprint(config, dataset)
    if not config.overwrite and previous_fingerprint(config.output_uri) == digest:
        LOG.info("%s is up to date with %s; nothing to do (--overwrite recomputes)", config.output_uri, config.dataset_uri)
        return json.loads(storage.read_text(storage.join(config.output_uri, "summary.json")))
    rows, dropped = caption_rows(dataset)
    if not rows:
        raise InputError(f"{config.dataset_uri}: no caption belongs to an image in a split; check the split lists and image folder")
    with spark_for("prepare-captions", spark) as session:
        table, vocabulary, max_length, empty = transform(session, config, rows)
        summary = load(config, table, vocabulary, max_length, dataset, dropped + empty, digest)
    LOG.info("wrote %d captions (%s), vocabulary %d words, max_length %d to %s", summary["captions"]["written"], summary["splits"], vocabulary.size, max_length, config.output_uri)
    return summary


def main(argv: list[str] | None = None, spark=None) -> int:
    def job() -> int:
        config = config_from_args(build_parser().parse_args(argv))
        summary = run(config, spark)
        print(json.dumps({k: summary[k] for k in ("splits", "captions", "vocabulary", "max_length", "issue_counts")}, indent=1))
        return 0

    return run_main(job)


if __name__ == "__main__":
    raise SystemExit(main())
