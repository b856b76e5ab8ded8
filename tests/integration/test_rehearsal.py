"""Both state machines executed by the ASL interpreter on local Spark clusters and a local S3 server.

One rehearsal is shared by the module (deployed once, one sample dataset, one trained
model); every execution creates and terminates its own cluster as on AWS. The inputs are
the console examples of emr/examples/ with their placeholders filled, so an example that
does not run fails here. Skipped, saying so, without the interpreter (``make
rehearsal-interpreter``) or the S3A jars (``make venv``).
"""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import pytest

from captioning.aws import interpreter
from captioning.aws.rehearsal import BUCKETS, OUTPUT, LocalAws, RehearsalConfig, bulk_input, deploy_project, execute, launch_plan, launch_steps, training_input, upload_sample

TRAINING_STATES = ["Create cluster", "Prepare captions", "Extract features", "Train decoder", "Evaluate", "Terminate cluster", "Succeeded"]
BULK_STATES = ["Read output lease", "Output lease free?", "Create cluster", "Caption images", "Terminate cluster", "Succeeded"]


@dataclass(frozen=True)
class Rehearsal:
    config: RehearsalConfig
    aws: LocalAws
    data: dict


def keys(prefix: str) -> list[str]:
    """Every object key below ``s3://OUTPUT/<prefix>``."""
    from captioning.store import storage

    client = storage.s3_client()
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=OUTPUT, Prefix=prefix):
        found += [item["Key"] for item in page.get("Contents", [])]
    return sorted(found)


def visible(prefix: str) -> list[str]:
    """What a reader of the output sees: no lease, no Spark ``_temporary`` debris."""
    return [k for k in keys(prefix) if not k.endswith("_lease.json") and "/_temporary/" not in k]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    from captioning.cluster.session import s3a_jars
    from captioning.store.local_s3 import LocalS3

    try:
        interpreter.interpreter_command()
    except interpreter.InterpreterError as missing:
        pytest.skip(str(missing))
    if not s3a_jars():
        pytest.skip("Spark's S3A connector is not installed (make venv puts it in .venv/spark-jars/)")
    config = RehearsalConfig(workdir=str(tmp_path_factory.mktemp("rehearsal")), images=40, new_images=6, epochs=2, max_workers=1)
    with LocalS3(buckets=BUCKETS, start_timeout=120):  # moto starts slowly on a busy machine
        deploy_project(tmp_path_factory.mktemp("rehearsal-dist"))
        aws = LocalAws(config)
        try:
            yield Rehearsal(config, aws, upload_sample(config))
        finally:
            aws.close()


@dataclass(frozen=True)
class Trained:
    execution: Any
    steps: list  # the EMR arguments of every step the execution added

    @property
    def status(self) -> str:
        return self.execution.status


@pytest.fixture(scope="module")
def trained(rehearsal):
    """The training machine run once on the sample."""
    before = len(rehearsal.aws.steps)
    execution = execute("training", training_input(rehearsal.config, rehearsal.data), rehearsal.aws, "training-1")
    return Trained(execution, [args for _, args in rehearsal.aws.steps[before:]])


def test_a_held_output_lease_is_refused_before_any_cluster_starts(rehearsal):
    from captioning.store import storage

    lease = f"s3://{OUTPUT}/held/_lease.json"
    storage.write_text(lease, json.dumps({"holder": "another-run", "expires_at": "2999-01-01T00:00:00Z"}))
    created = rehearsal.aws.created
    execution = execute("bulk_captioning", {**bulk_input(rehearsal.config, rehearsal.data, f"s3://{OUTPUT}/runs/none/model"), "output_prefix": "held"}, rehearsal.aws, "held-1")
    assert execution.status == "FAILED" and execution.error == "OutputLeaseHeld", execution
    assert "s3://captioning-output/held/_lease.json until 2999-01-01T00:00:00Z" in execution.cause, execution.cause
    assert rehearsal.aws.created == created and "Create cluster" not in execution.states_entered()
    assert visible("held/") == []


def test_training_writes_model_evaluation_and_captions_to_the_output_bucket(rehearsal, trained):
    assert trained.status == "SUCCEEDED", trained.execution
    trained = trained.execution
    assert [s for s in trained.states_entered() if s in TRAINING_STATES] == TRAINING_STATES
    assert rehearsal.aws.running() == []
    run = "runs/rehearsal/"
    found = visible(run)
    for expected in ("model/config.json", "model/vocab.json", "evaluation/metrics.json", "evaluation/predictions.jsonl", "evaluation/summary.md", "prepared/vocab.json"):
        assert run + expected in found, (expected, found)
    assert any(k.startswith(run + "prepared/captions/") and k.endswith(".parquet") for k in found)
    assert any(k.startswith(run + "features/mobilenetv3small/") for k in found)
    history = trained.history()
    assert all(r.seconds >= 0 for r in history) and sum(r.seconds for r in history if r.name == "Train decoder") > 0


def test_launch_plans_exactly_the_steps_the_state_machine_ran(rehearsal, trained, tmp_path):
    assert trained.status == "SUCCEEDED"
    request = launch_plan("training", training_input(rehearsal.config, rehearsal.data), tmp_path)
    assert launch_steps(request) == trained.steps
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False


def test_bulk_captioning_twice_captions_nothing_new_the_second_time(rehearsal, trained):
    assert trained.status == "SUCCEEDED"
    execution_input = bulk_input(rehearsal.config, rehearsal.data, f"s3://{OUTPUT}/runs/rehearsal/model")
    first = execute("bulk_captioning", execution_input, rehearsal.aws, "bulk-1")
    assert first.status == "SUCCEEDED", first
    # no lease object yet: S3.NoSuchKeyException is caught straight into "Create cluster", past the Choice
    assert [s for s in first.states_entered() if s in BULK_STATES] == [s for s in BULK_STATES if s != "Output lease free?"]
    after_first = visible("captions/")
    assert "captions/gallery.html" in after_first and any(k.startswith("captions/exports/") for k in after_first)
    second = execute("bulk_captioning", execution_input, rehearsal.aws, "bulk-2")
    assert second.status == "SUCCEEDED", second
    assert "Caption images" in second.states_entered()
    assert visible("captions/") == after_first
    assert rehearsal.aws.running() == []


def test_a_bad_dataset_uri_fails_the_execution_with_the_steps_error_and_terminates(rehearsal):
    execution_input = {**training_input(rehearsal.config, rehearsal.data, run="bad-dataset"), "dataset": "s3://captioning-data/no-such-dataset"}
    execution = execute("training", execution_input, rehearsal.aws, "bad-dataset-1")
    assert execution.status == "FAILED"
    assert execution.error == "States.TaskFailed" and "no-such-dataset" in execution.cause and "error:" in execution.cause, execution.cause
    assert [state for state, _, _ in execution.failures()][:2] == ["Prepare captions", "Prepare captions"]  # retried once
    entered = execution.states_entered()
    assert "Terminate cluster after failure" in entered and entered[-1] == "Pipeline failed"
    assert rehearsal.aws.running() == []
    assert visible("runs/bad-dataset/") == []


def test_a_killed_step_fails_the_execution_and_leaves_nothing_visible(rehearsal, trained):
    def kill_caption_step(state, process):
        if state == "Caption images":
            time.sleep(5)
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    aws = LocalAws(rehearsal.config, step_hook=kill_caption_step)
    try:
        execution_input = {**bulk_input(rehearsal.config, rehearsal.data, f"s3://{OUTPUT}/runs/rehearsal/model"), "output_prefix": "killed"}
        execution = execute("bulk_captioning", execution_input, aws, "killed-1")
    finally:
        aws.close()
    assert execution.status == "FAILED" and execution.error == "States.TaskFailed", execution
    assert "exit -9" in execution.cause or "exit 137" in execution.cause, execution.cause
    assert aws.terminated and aws.running() == []
    assert "Terminate cluster after failure" in execution.states_entered()
    assert [k for k in visible("killed/") if "/captions/" in k or "/exports/" in k or k.endswith(".html")] == []


def test_a_corrupt_model_fails_bulk_captioning_with_its_error_and_terminates(rehearsal, trained):
    from captioning.store import storage

    source, broken = f"s3://{OUTPUT}/runs/rehearsal/model", f"s3://{OUTPUT}/runs/broken/model"
    for key in visible("runs/rehearsal/model/"):
        data = storage.read_bytes(f"s3://{OUTPUT}/{key}")
        storage.write_bytes(broken + key[len("runs/rehearsal/model"):], b"{ not json" if key.endswith("config.json") else data)
    execution_input = {**bulk_input(rehearsal.config, rehearsal.data, broken), "output_prefix": "corrupt"}
    execution = execute("bulk_captioning", execution_input, rehearsal.aws, "corrupt-1")
    assert execution.status == "FAILED" and execution.error == "States.TaskFailed", execution
    assert "error:" in execution.cause.splitlines()[0] and "broken/model" in execution.cause, execution.cause
    assert "Terminate cluster after failure" in execution.states_entered()
    assert rehearsal.aws.running() == []
    assert [k for k in visible("corrupt/") if not k.startswith("corrupt/_")] == []
    assert source != broken
