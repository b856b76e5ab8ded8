"""A lease on an output: one run at a time, and a crashed run never blocks the next for long.

A run that writes an output (a bulk captioning output, a feature store) first takes the
output's lease, an object ``<output>/_lease.json``::

    {"holder": "<run id>", "acquired_at": "...Z", "renewed_at": "...Z",
     "expires_at": "...Z", "period_seconds": 300}

(times in ISO 8601 UTC). Taking it is atomic: an S3 conditional write that succeeds only
if no such object exists (``If-None-Match: *``), or a create-exclusive on a local disk.
While the run works a heartbeat renews it every third of the period, again
conditionally (``If-Match`` on the version it wrote last), so a run whose lease was taken
over learns so at its next renewal and stops before committing anything. The run
releases it at the end, also when stopped by SIGTERM.

A run killed outright (SIGKILL, a lost spot instance, a terminated cluster) stops
renewing; once ``expires_at`` has passed, the next run takes the lease over (again
conditionally, on the version it found, so of two runs that both see it expired only one
wins). A new run that finds the lease held waits up to ``wait_seconds`` for it to be
released or to expire, then gives up with a message naming the holder and when the lease
expires. The period is short (minutes), so an hourly schedule survives a crash with at
most one refused run, and a run longer than the period keeps its lease because it renews
it. Anything else that checks the output before starting (the bulk captioning state
machine) reads the same object: held while ``expires_at`` is in the future.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from captioning.errors import UserError
from captioning.store import storage

LOG = logging.getLogger("lease")
LEASE_FILE = "_lease.json"


class LeaseHeldError(UserError):
    """Another run holds the output's lease and kept it while this run waited."""


class LeaseLostError(UserError):
    """Another run took this run's lease over (this run did not renew it in time)."""


@dataclass(frozen=True)
class LeaseConfig:
    period_seconds: float = 300.0  # a lease not renewed for this long may be taken over
    wait_seconds: float | None = None  # how long a run waits for a held lease; None: one period

    def __post_init__(self) -> None:
        if self.period_seconds <= 0:
            raise ValueError(f"the lease period must be positive, got {self.period_seconds}")
        if self.wait_seconds is not None and self.wait_seconds < 0:
            raise ValueError(f"the lease wait must not be negative, got {self.wait_seconds}")

    @property
    def patience(self) -> float:
        return self.period_seconds if self.wait_seconds is None else self.wait_seconds


def lease_uri(output_uri: str) -> str:
    return storage.join(output_uri, LEASE_FILE)


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc).timestamp()


class Lease:
    """``with Lease(output_uri, run_id, config):`` holds the output's lease for the block."""

    def __init__(self, output_uri: str, holder: str, config: LeaseConfig = LeaseConfig(), clock: Callable[[], float] = time.time):
        self.uri = lease_uri(output_uri)
        self.holder = holder
        self.config = config
        self.clock = clock
        self._version: str | None = None
        self._acquired_at = 0.0
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # ---------------------------------------------------------------- record

    def _record(self, now: float) -> bytes:
        record = {
            "holder": self.holder, "acquired_at": iso(self._acquired_at), "renewed_at": iso(now),
            "expires_at": iso(now + self.config.period_seconds), "period_seconds": self.config.period_seconds,
        }
        return json.dumps(record, indent=1).encode()

    def _read(self) -> tuple[dict, str] | None:
        found = storage.read_versioned(self.uri)
        if found is None:
            return None
        data, version = found
        try:
            return json.loads(data), version
        except ValueError:  # not a lease we can read: treat as expired, it is replaced conditionally
            return {"holder": "(unreadable)", "expires_at": iso(0)}, version

    # ---------------------------------------------------------------- taking it

    def acquire(self) -> "Lease":
        deadline = self.clock() + self.config.patience
        while True:
            now = self.clock()
            self._acquired_at = now
            self._version = storage.create_exclusive(self.uri, self._record(now))
            if self._version is not None:
                LOG.info("took the lease %s until %s", self.uri, iso(now + self.config.period_seconds))
                return self
            found = self._read()
            if found is None:
                continue  # released between our two calls: try again at once
            held, version = found
            expires = parse_iso(held.get("expires_at", iso(0)))
            if expires <= now:
                self._version = storage.replace_if(self.uri, self._record(now), version)
                if self._version is not None:
                    LOG.warning("took over the lease of run %s on %s (it expired at %s without renewal)", held.get("holder"), self.uri, held.get("expires_at"))
                    return self
                continue  # another run took it over first: look again
            if now >= deadline:
                raise LeaseHeldError(
                    f"{self.uri}: run {held.get('holder')} holds this output (renewed {held.get('renewed_at')}, expires {held.get('expires_at')} "
                    "unless renewed); a live run renews it, a dead one's lease expires on its own: run again after that"
                )
            time.sleep(max(0.05, min(expires - now, deadline - now, 5.0)))

    def renew(self) -> bool:
        """Extend the lease; False (and the lease counts as lost) when another run took it."""
        if self._lost.is_set():
            return False
        version = storage.replace_if(self.uri, self._record(self.clock()), self._version)
        if version is None:
            self._lost.set()
            LOG.error("lost the lease %s: another run took it over", self.uri)
            return False
        self._version = version
        return True

    def check(self) -> None:
        """Raise :class:`LeaseLostError` when another run took the lease over; call before committing."""
        if self._lost.is_set():
            raise LeaseLostError(f"{self.uri}: another run took over this output while this run (holder {self.holder}) was not renewing its lease; nothing more was written")

    def release(self) -> None:
        if self._version is not None and not self._lost.is_set():
            storage.delete_if(self.uri, self._version)
        self._version = None

    # ---------------------------------------------------------------- heartbeat

    def _beat(self) -> None:
        interval = self.config.period_seconds / 3
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    return
            except storage.StorageError as error:  # a storage hiccup: the next beat tries again
                LOG.warning("could not renew the lease %s (%s); retrying", self.uri, error)

    def __enter__(self) -> "Lease":
        self.acquire()
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
        self._heartbeat.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=30)
        self.release()
        return False
