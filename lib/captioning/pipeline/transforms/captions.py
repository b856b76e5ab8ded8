"""Caption preparation as Spark transforms: DataFrames in, DataFrames out, no paths.

Cleaning runs in Python workers (the same :func:`captioning.data.text.clean_caption` used at
inference), word counting is a Spark aggregation over the training split only, and ids are
encoded with the vocabulary broadcast to the workers. Token ids are padded to one fixed
length because Petastorm's batch reader only reads fixed-length list columns.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping

import pandas as pd
from pyspark.sql import functions as F
from pyspark.sql import types as T

from captioning.data.text import CleaningConfig, clean_caption
from captioning.data.vocab import Vocabulary, vocabulary_from_counts

CAPTION_COLUMNS = ("image_id", "split", "caption_index", "raw", "source")


def captions_frame(spark, rows: Iterable[tuple[str, str, int, str, str]], num_partitions: int | None = None):
    """DataFrame of (image_id, split, caption_index, raw, source) from driver-side records."""
    schema = T.StructType(
        [
            T.StructField("image_id", T.StringType(), False),
            T.StructField("split", T.StringType(), False),
            T.StructField("caption_index", T.IntegerType(), False),
            T.StructField("raw", T.StringType(), False),
            T.StructField("source", T.StringType(), False),
        ]
    )
    rows = list(rows)
    partitions = num_partitions or max(1, min(64, len(rows) // 5000 + 1))
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, partitions), schema)


def add_tokens(df, cleaning: CleaningConfig):
    """Adds ``tokens`` (array<string>): the cleaned words of ``raw``."""

    @F.pandas_udf(T.ArrayType(T.StringType()))
    def clean(raw: pd.Series) -> pd.Series:
        return raw.map(lambda text: clean_caption(text, cleaning))

    return df.withColumn("tokens", clean(F.col("raw")))


def training_word_counts(df) -> dict[str, int]:
    """Word -> count over training captions only (vocabulary-sized result, safe to collect)."""
    counted = (
        df.where(F.col("split") == "train")
        .select(F.explode("tokens").alias("word"))
        .groupBy("word")
        .count()
        .collect()
    )
    return {row["word"]: int(row["count"]) for row in counted}


def build_vocabulary(df, min_count: int, cleaning: CleaningConfig) -> Vocabulary:
    return vocabulary_from_counts(training_word_counts(df), min_count, cleaning)


def longest_training_caption(df) -> int:
    row = df.where(F.col("split") == "train").agg(F.max(F.size("tokens")).alias("n")).collect()[0]
    return int(row["n"] or 0)


def encode_captions(df, vocabulary: Vocabulary, max_length: int):
    """Adds ``token_ids`` (array<int>, exactly ``max_length``), ``length`` (ids before padding)
    and ``truncated`` (caption had more than ``max_length - 2`` words)."""
    shared = df.sparkSession.sparkContext.broadcast(vocabulary.to_json())

    @F.pandas_udf(T.ArrayType(T.IntegerType()))
    def encode(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        vocab = Vocabulary.from_json(shared.value)  # once per task, not per row
        for tokens in batches:
            yield tokens.map(lambda words: vocab.encode_tokens(list(words), max_length))

    return (
        df.withColumn("token_ids", encode(F.col("tokens")))
        .withColumn("length", F.least(F.size("tokens") + 2, F.lit(max_length)).cast("int"))
        .withColumn("truncated", F.size("tokens") > F.lit(max_length - 2))
    )


def split_counts(df) -> Mapping[str, Mapping[str, int]]:
    """{split: {"images": n, "captions": n}} for a captions DataFrame."""

    rows = df.groupBy("split").agg(F.countDistinct("image_id").alias("images"), F.count("*").alias("captions")).collect()
    return {row["split"]: {"images": int(row["images"]), "captions": int(row["captions"])} for row in rows}
