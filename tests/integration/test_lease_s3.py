"""The output lease on S3 (conditional requests against the S3 API over HTTP)."""
from __future__ import annotations

import json
import threading
import time

import pytest

from captioning.store import storage
from captioning.store.lease import Lease, LeaseConfig, LeaseHeldError, LeaseLostError, iso, lease_uri


def held_by(output: str) -> dict:
    return json.loads(storage.read_text(lease_uri(output)))


def test_take_refuse_renew_and_release_on_s3(s3_bucket):
    output = f"{s3_bucket}/captions"
    with Lease(output, "run-a", LeaseConfig(period_seconds=4)) as lease:
        first = held_by(output)["expires_at"]
        time.sleep(9)  # more than two periods: only renewals keep it
        with pytest.raises(LeaseHeldError, match="run run-a holds this output"):
            Lease(output, "run-b", LeaseConfig(period_seconds=60, wait_seconds=0)).acquire()
        assert held_by(output)["holder"] == "run-a" and held_by(output)["expires_at"] > first
        lease.check()
    assert not storage.exists(lease_uri(output))


def test_an_expired_lease_on_s3_is_taken_over_by_exactly_one_run(s3_bucket):
    output = f"{s3_bucket}/features"
    dead = {"holder": "killed-run", "acquired_at": iso(0), "renewed_at": iso(0), "expires_at": iso(time.time() - 5), "period_seconds": 60}
    storage.write_text(lease_uri(output), json.dumps(dead))
    outcomes: list[str] = []
    barrier = threading.Barrier(3)

    def contend(name: str) -> None:
        barrier.wait()
        try:
            Lease(output, name, LeaseConfig(period_seconds=60, wait_seconds=0)).acquire()
            outcomes.append(name)
        except LeaseHeldError:
            outcomes.append("refused")

    threads = [threading.Thread(target=contend, args=(name,)) for name in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1 and held_by(output)["holder"] == winners[0]


def test_a_lease_taken_over_on_s3_is_lost_and_not_deleted(s3_bucket):
    output = f"{s3_bucket}/out"
    lease = Lease(output, "paused", LeaseConfig(period_seconds=60)).acquire()
    storage.write_text(lease_uri(output), json.dumps({"holder": "other", "expires_at": iso(time.time() + 60)}))
    assert lease.renew() is False
    with pytest.raises(LeaseLostError):
        lease.check()
    lease.release()
    assert held_by(output)["holder"] == "other"
