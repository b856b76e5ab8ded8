"""Command-line options shared by the stages, with defaults read from the config dataclasses.

Each default is written once, in its dataclass; the parsers ask :func:`default` for it and
show it with ``%(default)s``, so ``--help``, the jobs and the library cannot disagree.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from captioning.data.images import DecodeConfig
from captioning.model.encoder_spec import EncoderConfig
from captioning.model.search.config import SearchConfig
from captioning.pipeline.reading import ImageReading
from captioning.store.lease import LeaseConfig


def default(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls``."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def add_model_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """The trained model that captions, and the CNN weights file its features may need (caption-images, caption, serve)."""
    parser.add_argument("--model", required=required, help="model directory written by train-decoder (local or s3://)")
    parser.add_argument("--backbone-weights", default=None, help="CNN weights file (local or s3://) when the model was trained on features from a weights file; 'imagenet' and seeded random weights are found automatically")


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """How captions are searched (evaluate, caption-images)."""
    group = parser.add_argument_group("caption search")
    group.add_argument("--search", default=default(SearchConfig, "method"), choices=("greedy", "beam"), help="decoding method (default %(default)s)")
    group.add_argument("--beam-width", type=positive_int, default=default(SearchConfig, "beam_width"), help="beams per image (default %(default)s)")
    group.add_argument("--length-alpha", type=float, default=default(SearchConfig, "length_alpha"), help="length normalisation exponent; 0 disables (default %(default)s)")
    group.add_argument("--max-length", type=non_negative_int, default=default(SearchConfig, "max_length"), help="most words per caption (default %(default)s: the model's own maximum)")
    group.add_argument("--no-repeat-ngram", type=non_negative_int, default=default(SearchConfig, "no_repeat_ngram"), help="never repeat an n-gram of this many words within a caption (default %(default)s; 0 allows repeats)")


def search_from_args(args: argparse.Namespace) -> SearchConfig:
    return SearchConfig(method=args.search, beam_width=args.beam_width, length_alpha=args.length_alpha, max_length=args.max_length, no_repeat_ngram=args.no_repeat_ngram)


def add_lease_options(parser: argparse.ArgumentParser) -> None:
    """How a run holds its output against other runs (see captioning.store.lease)."""
    group = parser.add_argument_group("output lease")
    group.add_argument("--lease-seconds", type=float, default=default(LeaseConfig, "period_seconds"), help="the output's lease lasts this long unless renewed; a crashed run's lease is free after it (default %(default)s)")
    group.add_argument("--lease-wait-seconds", type=float, default=None, help="wait this long for a lease another run holds (default: one lease period)")


def lease_from_args(args: argparse.Namespace) -> LeaseConfig:
    return LeaseConfig(period_seconds=args.lease_seconds, wait_seconds=args.lease_wait_seconds)


def add_reading_options(parser: argparse.ArgumentParser) -> None:
    """How a stage reads and encodes images in its Spark tasks (extract-features, caption-images)."""
    group = parser.add_argument_group("reading images")
    group.add_argument("--batch-size", type=positive_int, default=default(EncoderConfig, "batch_size"), help="images per CNN call (default %(default)s)")
    group.add_argument("--io-threads", type=positive_int, default=default(ImageReading, "io_threads"), help="concurrent object reads and decodes per task (default %(default)s)")
    group.add_argument("--images-per-partition", type=positive_int, default=default(ImageReading, "images_per_partition"), help="objects per Spark task (default %(default)s)")
    add_decode_options(group)
    group.add_argument("--mixed-precision", action="store_true", help="run the CNN in mixed float16 (GPUs with tensor cores)")


def reading_from_args(args: argparse.Namespace) -> ImageReading:
    return ImageReading(io_threads=args.io_threads, images_per_partition=args.images_per_partition, decode=decode_from_args(args))


def add_decode_options(parser) -> None:
    """How image bytes are decoded, on a parser or an argument group (every command that reads images)."""
    parser.add_argument("--max-pixels", type=positive_int, default=default(DecodeConfig, "max_pixels"), help="refuse images with more pixels than this, a decompression-bomb guard (default %(default)s)")


def decode_from_args(args: argparse.Namespace) -> DecodeConfig:
    return DecodeConfig(max_pixels=args.max_pixels)
