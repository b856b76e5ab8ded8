"""The output folder of bulk captioning (caption-images), and its only owner::

    <output>/captions/run_date=YYYY-MM-DD/run_id=<id>/   Parquet, one row per listed object:
                                                        uri, input, version (ETag or size-mtime),
                                                        size, status (ok/error/skipped), caption,
                                                        score, error reason, model_id, captioned_at
    <output>/exports/run_id=<id>/                       the same rows as JSON Lines
    <output>/runs/<id>.json                             run summary: counts by status, throughput
    <output>/gallery/<id>.html, <output>/gallery.html   a self-contained page of the run's results
    <output>/_lock.json                                 the run that holds the output now

A run's rows become visible only when Spark commits its Parquet output; a run killed
earlier leaves nothing visible. Run ids sort by their start time (UTC).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from dataclasses import dataclass

from captioning.errors import UserError
from captioning.store import storage

LOG = logging.getLogger("bulk_output")


class OutputLockedError(UserError):
    """Another run holds the output."""


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

    @property
    def lock(self) -> str:
        return storage.join(self.uri, "_lock.json")

    def has_summary(self, run_id: str) -> bool:
        return storage.exists(self.summary(run_id))

    def write_summary(self, summary: dict) -> None:
        storage.write_text(self.summary(summary["run_id"]), json.dumps(summary, indent=1))


class OutputLock:
    """A lock object at the output: one run at a time per output (overlapping schedules)."""

    def __init__(self, output: BulkOutput, run_id: str, timeout_hours: float):
        self.uri = output.lock
        self.run_id = run_id
        self.timeout = timeout_hours * 3600

    def __enter__(self):
        if storage.exists(self.uri):
            held = json.loads(storage.read_text(self.uri))
            age = time.time() - float(held.get("since", 0))
            if age < self.timeout:
                raise OutputLockedError(f"{self.uri}: run {held.get('run_id')} has been running for {age / 60:.0f} min on this output; wait for it, or delete the lock if that run is dead")
            LOG.warning("taking over abandoned lock of run %s (%.1f h old)", held.get("run_id"), age / 3600)
        storage.write_text(self.uri, json.dumps({"run_id": self.run_id, "since": time.time()}))
        return self

    def __exit__(self, *exc):
        storage.delete(self.uri)
        return False
