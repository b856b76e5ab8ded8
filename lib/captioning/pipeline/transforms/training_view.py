"""Training views: captions of one split joined with their image's feature vector.

Petastorm then streams each view into tf.data. A caption whose image has no usable
vector (missing from the store, or its extraction failed) is left out and counted.
"""
from __future__ import annotations

from pyspark.sql import functions as F

VIEW_COLUMNS = ("image_id", "caption_index", "features", "token_ids")


def training_view(captions, features, split: str):
    """(view rows, captions of the split without a usable vector) as DataFrames."""
    chosen = captions.where(F.col("split") == split).select("image_id", "caption_index", "token_ids")
    usable = features.where(F.col("status") == "ok").select("image_id", "features")
    view = chosen.join(usable, "image_id", "inner").select(*VIEW_COLUMNS)
    missing = chosen.join(usable, "image_id", "left_anti")
    return view, missing


def feature_moments(features, image_ids, dtype: str, dim: int) -> tuple[list[float], list[float], int]:
    """Per-dimension mean and variance of the usable vectors of ``image_ids`` (one per image).

    Each partition sums its vectors in float64 and only the sums reach the driver.
    """
    from typing import Iterator

    import numpy as np
    import pandas as pd

    from captioning.store.feature_store import decode_vectors

    def partial_sums(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        total, squares, count = np.zeros(dim), np.zeros(dim), 0
        for batch in batches:
            vectors = decode_vectors(list(batch["features"]), dtype, dim).astype(np.float64)  # (n, D)
            total += vectors.sum(axis=0)
            squares += np.square(vectors).sum(axis=0)
            count += len(vectors)
        yield pd.DataFrame({"count": [count], "total": [total.tobytes()], "squares": [squares.tobytes()]})

    usable = features.where(F.col("status") == "ok").join(image_ids, "image_id", "left_semi").select("features")
    parts = usable.mapInPandas(partial_sums, "count long, total binary, squares binary").collect()
    count = sum(int(p["count"]) for p in parts)
    if count == 0:
        raise ValueError("no usable training vectors to compute feature statistics from")
    total = sum(np.frombuffer(p["total"], np.float64) for p in parts)
    squares = sum(np.frombuffer(p["squares"], np.float64) for p in parts)
    mean = total / count
    variance = np.maximum(squares / count - np.square(mean), 0.0)
    return mean.tolist(), variance.tolist(), count
