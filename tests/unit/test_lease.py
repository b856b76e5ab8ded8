"""The output lease on a local disk: exclusive, renewed, taken over once expired, released."""
from __future__ import annotations

import json
import threading
import time

import pytest

from captioning.store import storage
from captioning.store.lease import Lease, LeaseConfig, LeaseHeldError, LeaseLostError, iso, lease_uri


def held_by(output: str) -> dict:
    return json.loads(storage.read_text(lease_uri(output)))


def test_a_lease_is_written_held_and_released(tmp_path):
    output = str(tmp_path / "out")
    with Lease(output, "run-a", LeaseConfig(period_seconds=60)):
        record = held_by(output)
        assert record["holder"] == "run-a" and record["period_seconds"] == 60
        assert record["expires_at"] > record["renewed_at"] == record["acquired_at"]
    assert not storage.exists(lease_uri(output))


def test_a_held_lease_refuses_a_second_run_naming_the_holder_and_expiry(tmp_path):
    output = str(tmp_path / "out")
    with Lease(output, "run-a", LeaseConfig(period_seconds=60)):
        started = time.time()
        with pytest.raises(LeaseHeldError, match=r"run run-a holds this output .*expires 20\d\d-"):
            Lease(output, "run-b", LeaseConfig(period_seconds=60, wait_seconds=0.5)).acquire()
        assert 0.4 < time.time() - started < 10
        assert held_by(output)["holder"] == "run-a"


def test_an_expired_lease_of_a_dead_run_is_taken_over(tmp_path):
    output = str(tmp_path / "out")
    dead = {"holder": "killed-run", "acquired_at": iso(0), "renewed_at": iso(0), "expires_at": iso(time.time() - 1), "period_seconds": 60}
    storage.write_text(lease_uri(output), json.dumps(dead))
    with Lease(output, "run-b", LeaseConfig(period_seconds=60, wait_seconds=0)):
        assert held_by(output)["holder"] == "run-b"


def test_a_new_run_waits_out_a_lease_that_expires(tmp_path):
    output = str(tmp_path / "out")
    soon = {"holder": "killed-run", "acquired_at": iso(0), "renewed_at": iso(0), "expires_at": iso(time.time() + 2), "period_seconds": 60}
    storage.write_text(lease_uri(output), json.dumps(soon))
    started = time.time()
    with Lease(output, "run-b", LeaseConfig(period_seconds=60, wait_seconds=30)):
        assert held_by(output)["holder"] == "run-b"
    assert 1 <= time.time() - started < 15


def test_a_run_longer_than_the_period_keeps_its_lease_by_renewing_it(tmp_path):
    output = str(tmp_path / "out")
    with Lease(output, "long-run", LeaseConfig(period_seconds=4)) as lease:
        first = held_by(output)["expires_at"]
        time.sleep(9)  # more than two periods: only renewals keep it
        with pytest.raises(LeaseHeldError):
            Lease(output, "intruder", LeaseConfig(period_seconds=4, wait_seconds=0)).acquire()
        assert held_by(output)["holder"] == "long-run" and held_by(output)["expires_at"] > first
        lease.check()


def test_only_one_of_two_simultaneous_runs_gets_the_lease(tmp_path):
    output = str(tmp_path / "out")
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def contend(name: str) -> None:
        barrier.wait()
        try:
            Lease(output, name, LeaseConfig(period_seconds=60, wait_seconds=0)).acquire()
            outcomes.append("held")
        except LeaseHeldError:
            outcomes.append("refused")

    threads = [threading.Thread(target=contend, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["held", "refused"]


def test_a_run_whose_lease_was_taken_over_learns_it_before_committing(tmp_path):
    output = str(tmp_path / "out")
    lease = Lease(output, "paused-run", LeaseConfig(period_seconds=60)).acquire()
    taken = {"holder": "other", "acquired_at": iso(0), "renewed_at": iso(0), "expires_at": iso(time.time() + 60), "period_seconds": 60}
    storage.write_text(lease_uri(output), json.dumps(taken))  # as a takeover after an expiry would
    assert lease.renew() is False
    with pytest.raises(LeaseLostError, match="another run took over this output"):
        lease.check()
    lease.release()
    assert held_by(output)["holder"] == "other"  # not ours to delete
