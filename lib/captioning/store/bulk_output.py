"""The output folder of bulk captioning (caption-images), and its only owner::

    <output>/captions/run_date=YYYY-MM-DD/run_id=<id>/   Parquet, one row per listed object:
                                                        uri, input, version (ETag or size-mtime),
                                                        size, status (ok/error/skipped), caption,
                                                        score, error reason, model_id, captioned_at
    <output>/exports/run_id=<id>/                       the same rows as JSON Lines
    <output>/runs/<id>.json                             run summary: counts by status, throughput
    <output>/gallery/<id>.html, <output>/gallery.html   a self-contained page of the run's results
    <output>/_lease.json                                the run that holds the output now
                                                        (:mod:`captioning.store.lease`)

A run's rows become visible only when Spark commits its Parquet output; a run killed
earlier leaves nothing visible. Run ids sort by their start time (UTC).

:func:`latest_answers` reads the committed rows of every run without Spark (pyarrow),
keeping each object's latest answer: what a person browsing the output wants to see.
"""
from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass
from typing import Sequence

from captioning.store import storage

def new_run_id(now: float | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ-<6 hex>``: sortable by start time, unique across concurrent starts."""
    started = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.timezone.utc)
    return started.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def run_date(run_id: str) -> str:
    return f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}"


@dataclass(frozen=True)
class BulkOutput:
    uri: str

    @property
    def captions(self) -> str:
        """The root of every committed result row (Parquet, partitioned by run_date and run_id)."""
        return storage.join(self.uri, "captions")

    def run_rows(self, run_id: str) -> str:
        return storage.join(self.captions, f"run_date={run_date(run_id)}", f"run_id={run_id}")

    def export(self, run_id: str) -> str:
        return storage.join(self.uri, "exports", f"run_id={run_id}")

    def summary(self, run_id: str) -> str:
        return storage.join(self.uri, "runs", f"{run_id}.json")

    def gallery(self, run_id: str) -> str:
        return storage.join(self.uri, "gallery", f"{run_id}.html")

    @property
    def latest_gallery(self) -> str:
        return storage.join(self.uri, "gallery.html")

    def has_summary(self, run_id: str) -> bool:
        return storage.exists(self.summary(run_id))

    def write_summary(self, summary: dict) -> None:
        storage.write_text(self.summary(summary["run_id"]), json.dumps(summary, indent=1))

    def discard_run(self, run_id: str) -> None:
        """Delete a run's rows: the run was stopped before its write returned, so whatever
        Spark managed to commit of it must not count as answered."""
        target = self.run_rows(run_id)
        if storage.exists(target):
            storage.delete(target, recursive=True)

    def remove_debris(self) -> list[str]:
        """Delete the ``_temporary`` folders killed runs left in ``captions/`` and ``exports/``.

        Spark writes a run's files there and moves them into place when the job commits, so
        they are never results; only the run holding the output's lease may call this.
        """
        removed = []
        for area in (self.captions, storage.join(self.uri, "exports")):
            if not storage.exists(area):
                continue
            debris = {f.uri.split("/_temporary/", 1)[0] + "/_temporary" for f in storage.list_files(area, include_hidden=True) if "/_temporary/" in f.uri}
            for folder in sorted(debris):
                storage.delete(folder, recursive=True)
                removed.append(folder)
        return removed


# Columns of the result rows that say what an object got, and who answered when.
ANSWER_COLUMNS = ("uri", "version", "status", "caption", "score", "error", "error_detail", "model_id", "captioned_at")


def latest_answers(output: BulkOutput, columns: Sequence[str] = ANSWER_COLUMNS):
    """The latest committed answer of every object, across all runs: a pandas DataFrame
    with ``columns`` and ``run_id``, one row per URI, sorted by URI.

    "Latest" is the row of the most recent run (run ids sort by start time), then the
    latest ``captioned_at``: a changed object captioned again, or an object recaptioned by
    a new model, shows its new answer. Spark's uncommitted ``_temporary`` folders and
    marker files are not read (pyarrow skips names starting with ``_`` and ``.``). An
    output with no committed rows yet gives an empty frame.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds

    wanted = list(dict.fromkeys([*columns, "run_id"]))
    if not storage.exists(output.captions):
        return pd.DataFrame({name: pd.Series(dtype=object) for name in wanted})
    filesystem, path = storage.arrow_filesystem(output.captions)
    partitioning = ds.partitioning(pa.schema([("run_date", pa.string()), ("run_id", pa.string())]), flavor="hive")
    try:
        table = ds.dataset(path, filesystem=filesystem, format="parquet", partitioning=partitioning).to_table(columns=wanted)
    except (OSError, pa.ArrowInvalid) as error:
        raise storage.StorageError(f"{output.captions}: cannot read the committed caption rows ({type(error).__name__}: {error})") from error
    frame = table.to_pandas()
    order = [name for name in ("uri", "run_id", "captioned_at") if name in frame.columns]
    frame = frame.sort_values(order, kind="stable").drop_duplicates("uri", keep="last")
    return frame.reset_index(drop=True)
