"""Feature extraction as a Spark transform: image listing in, feature rows out.

Each partition reads its images itself (:mod:`captioning.pipeline.reading`: local files
or S3, in a small thread pool so object-store latency overlaps), decodes and resizes
them with Pillow, and runs the CNN on whole batches through a compiled function built
once per Python worker.
The next batch is read and decoded while the current one is in the CNN. Image bytes
never travel to the driver. A bad image becomes a row with status "error" and a reason.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import types as T

from captioning.model.encoder_spec import EncoderConfig
from captioning.store.feature_store import encode_vector
from captioning.pipeline.reading import ImageReading, load_image
from captioning.pipeline.transforms.worker_models import featurizer

LISTING_SCHEMA = T.StructType(
    [
        T.StructField("image_id", T.StringType(), False),
        T.StructField("uri", T.StringType(), False),
        T.StructField("size", T.LongType(), False),
        T.StructField("version", T.StringType(), False),
        T.StructField("mtime", T.DoubleType(), True),
    ]
)

FEATURE_SCHEMA = T.StructType(
    list(LISTING_SCHEMA.fields)
    + [
        T.StructField("features", T.BinaryType(), True),  # dim x dtype bytes, null on error
        T.StructField("status", T.StringType(), False),  # "ok" or "error"
        T.StructField("error", T.StringType(), True),  # reason code: empty, truncated, ...
        T.StructField("error_detail", T.StringType(), True),
        T.StructField("extracted_at", T.TimestampType(), False),
    ]
)


@dataclass(frozen=True)
class FeatureConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    reading: ImageReading = field(default_factory=ImageReading)
    dtype: str = "float16"  # storage precision of vectors; float32 doubles the size


def listing_frame(spark, files, num_partitions: int):
    """DataFrame of image listings (image_id, uri, size, version, mtime), spread over partitions."""
    rows = [(f.image_id, f.uri, int(f.size), f.version, f.mtime) for f in files]
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, max(1, num_partitions)), LISTING_SCHEMA)


@dataclass(frozen=True)
class Featurized:
    """One batch of listing rows after reading, decoding and the CNN."""

    rows: pd.DataFrame  # the listing rows, in order
    problems: list  # per row: None, or (reason, message) when the image could not be used
    vectors: np.ndarray  # (number of rows without problem, feature_dim) float32, in row order


def featurized_batches(batches: Iterator[pd.DataFrame], encoder: EncoderConfig, reading: ImageReading) -> Iterator[Featurized]:
    """Read, decode and featurize listing batches; batch i+1 is read while batch i runs the CNN."""
    featurize, spec = featurizer(encoder)
    size = tuple(spec.input_size)
    with ThreadPoolExecutor(max_workers=reading.io_threads) as pool:

        def submit(chunk: pd.DataFrame):
            return chunk, [pool.submit(load_image, uri, size, reading.decode) for uri in chunk["uri"]]

        chunks = (listing.iloc[i : i + encoder.batch_size] for listing in batches for i in range(0, len(listing), encoder.batch_size))
        pending = None
        for chunk in chunks:
            upcoming = submit(chunk)
            if pending is not None:
                yield _run_cnn(*pending, featurize)
            pending = upcoming
        if pending is not None:
            yield _run_cnn(*pending, featurize)


def _run_cnn(chunk: pd.DataFrame, futures, featurize) -> Featurized:
    loaded = [f.result() for f in futures]
    pixels = [image for image, _ in loaded if image is not None]
    vectors = featurize(np.stack(pixels)) if pixels else np.zeros((0, 0), np.float32)  # (n_ok, D) float32
    return Featurized(chunk.reset_index(drop=True), [problem for _, problem in loaded], vectors)


def feature_rows(batch: Featurized, dtype: str) -> pd.DataFrame:
    """FEATURE_SCHEMA rows for one featurized batch."""
    ok = iter(batch.vectors)
    out = batch.rows.copy()
    out["features"] = [encode_vector(next(ok), dtype) if problem is None else None for problem in batch.problems]
    out["status"] = ["ok" if problem is None else "error" for problem in batch.problems]
    out["error"] = [None if problem is None else problem[0] for problem in batch.problems]
    out["error_detail"] = [None if problem is None else problem[1] for problem in batch.problems]
    out["extracted_at"] = pd.Timestamp(time.time(), unit="s")
    return out


def featurize_batches(batches: Iterator[pd.DataFrame], config: FeatureConfig) -> Iterator[pd.DataFrame]:
    """mapInPandas body: listing batches in, feature rows out (same rows, same order)."""
    for batch in featurized_batches(batches, config.encoder, config.reading):
        yield feature_rows(batch, config.dtype)


def extract_features(listing_df, config: FeatureConfig):
    """Feature rows for every listed image (FEATURE_SCHEMA)."""
    return listing_df.mapInPandas(lambda batches: featurize_batches(batches, config), FEATURE_SCHEMA)
