"""Bulk captioning as a Spark transform: object listing in, one result row per object out.

Each partition reads, decodes, featurizes and captions its images in one pass (no
intermediate table); the CNN and the decoder are built once per Python worker. Objects
whose names are not images are answered with a "skipped" row, undecodable images with an
"error" row and its reason, so every listed object gets exactly one row.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import pandas as pd
from pyspark.sql import types as T

from captioning.model.encoder_spec import EncoderConfig
from captioning.data.layout import describe_image_extensions, is_image_name
from captioning.model.search.config import SearchConfig
from captioning.pipeline.reading import ImageReading
from captioning.pipeline.transforms.worker_models import captioner, featurizer
from captioning.pipeline.transforms.features import featurized_batches

OBJECT_SCHEMA = T.StructType(
    [
        T.StructField("uri", T.StringType(), False),
        T.StructField("input", T.StringType(), False),  # the prefix / folder it was listed under
        T.StructField("version", T.StringType(), False),  # S3 ETag, or size-mtime for files
        T.StructField("size", T.LongType(), False),
        T.StructField("mtime", T.DoubleType(), True),
    ]
)

RESULT_SCHEMA = T.StructType(
    list(OBJECT_SCHEMA.fields)
    + [
        T.StructField("status", T.StringType(), False),  # ok | error | skipped
        T.StructField("caption", T.StringType(), True),
        T.StructField("score", T.DoubleType(), True),  # length-normalised log-probability
        T.StructField("error", T.StringType(), True),  # reason code for error / skipped
        T.StructField("error_detail", T.StringType(), True),
        T.StructField("model_id", T.StringType(), False),
        T.StructField("run_id", T.StringType(), False),
        T.StructField("captioned_at", T.TimestampType(), False),
    ]
)


@dataclass(frozen=True)
class BulkConfig:
    model_uri: str
    model_id: str
    run_id: str
    encoder: EncoderConfig
    search: SearchConfig
    reading: ImageReading = field(default_factory=ImageReading)


def caption_batches(batches: Iterator[pd.DataFrame], config: BulkConfig) -> Iterator[pd.DataFrame]:
    """mapInPandas body: object batches in, RESULT_SCHEMA rows out."""
    featurizer(config.encoder)  # configures TensorFlow (GPU memory growth) before anything else uses it
    model = captioner(config.model_uri, config.search)
    skipped: list[pd.DataFrame] = []  # rows for non-image objects, emitted between batches

    def image_batches():
        for batch in batches:
            is_image = batch["uri"].map(is_image_name)
            if (~is_image).any():
                skipped.append(_skipped(batch[~is_image], config))
            yield batch[is_image]

    for featurized in featurized_batches(image_batches(), config.encoder, config.reading):
        while skipped:
            yield skipped.pop()
        captions = iter(model.caption(featurized.vectors))
        out = featurized.rows.copy()
        results = [None if problem else next(captions) for problem in featurized.problems]
        out["status"] = ["error" if problem else "ok" for problem in featurized.problems]
        out["caption"] = [r.text if r else None for r in results]
        out["score"] = [float(r.score) if r else None for r in results]
        out["error"] = [problem[0] if problem else None for problem in featurized.problems]
        out["error_detail"] = [problem[1] if problem else None for problem in featurized.problems]
        yield _stamp(out, config)
    while skipped:
        yield skipped.pop()


def _skipped(objects: pd.DataFrame, config: BulkConfig) -> pd.DataFrame:
    out = objects.copy()
    out["status"] = "skipped"
    out["caption"] = None
    out["score"] = None
    out["error"] = "not_an_image_name"
    out["error_detail"] = f"the object name has no image extension ({describe_image_extensions()}); not captioned"
    return _stamp(out, config)


def _stamp(out: pd.DataFrame, config: BulkConfig) -> pd.DataFrame:
    out["model_id"] = config.model_id
    out["run_id"] = config.run_id
    out["captioned_at"] = pd.Timestamp(time.time(), unit="s")
    return out[[f.name for f in RESULT_SCHEMA.fields]]


def caption_objects(objects_df, config: BulkConfig):
    return objects_df.mapInPandas(lambda batches: caption_batches(batches, config), RESULT_SCHEMA)
