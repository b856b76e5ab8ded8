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
