"""Spark transforms: DataFrames in, DataFrames out, no paths; the models they run are built once per Python worker."""
