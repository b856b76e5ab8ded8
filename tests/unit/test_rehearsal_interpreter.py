"""The rehearsal's pieces that need neither Spark nor a cluster: the interpreter's RPC, its
history, a step's arguments rewritten for the local cluster, the console examples filled.

The interpreter tests run the generated definitions in the npm aws-local-stepfunctions
(``make rehearsal-interpreter``); they are skipped, saying so, when it is not installed.
"""
from __future__ import annotations

import pytest

from captioning.aws import interpreter
from captioning.aws.interpreter import TaskError, answer, history_of, run_execution
from captioning.aws.local_steps import core_nodes, failure_cause, local_argv, spark_defaults
from captioning.aws.rehearsal import PLACEHOLDERS, example_input, rendered_definition

TRAINING_INPUT = {"artifacts_version": "v1", "dataset": "s3://d/flickr8k", "output": "s3://o/runs/r", "backbone_weights": "none"}
BULK_INPUT = {"artifacts_version": "v1", "inputs": ["s3://d/photos/"], "model": "s3://o/runs/r/model", "output_bucket": "o", "output_prefix": "captions"}


def needs_interpreter():
    try:
        interpreter.interpreter_command()
    except interpreter.InterpreterError as missing:
        pytest.skip(str(missing))


def test_answer_carries_the_result_or_the_aws_error_name():
    call = {"id": 7, "state": "Create cluster", "resource": "arn", "parameters": {"a": 1}}
    assert answer(call, lambda state, resource, parameters: {"ClusterId": "j-1"}) == {"id": 7, "result": {"ClusterId": "j-1"}}
    assert answer(call, lambda *_: None) == {"id": 7, "result": {}}

    def fail(*_):
        raise TaskError("S3.NoSuchKeyException", "no such key")

    assert answer(call, fail) == {"id": 7, "error": "S3.NoSuchKeyException", "cause": "no such key"}


def test_a_bug_in_a_handler_is_not_turned_into_a_task_failure():
    with pytest.raises(KeyError):
        answer({"id": 1, "state": "s", "resource": "r"}, lambda *_: {}["missing"])


def test_history_has_one_record_per_attempt_with_durations():
    events = [
        {"type": "StateEntered", "timestamp": 1000, "state": {"name": "Create cluster", "type": "Task"}},
        {"type": "StateExited", "timestamp": 4000, "state": {"name": "Create cluster", "type": "Task"}},
        {"type": "StateEntered", "timestamp": 4000, "state": {"name": "Step", "type": "Task"}},
        {"type": "StateFailed", "timestamp": 6000, "state": {"name": "Step", "type": "Task"}, "Error": "States.TaskFailed"},
        {"type": "StateRetried", "timestamp": 6000, "state": {"name": "Step", "type": "Task"}},
        {"type": "StateFailed", "timestamp": 9000, "state": {"name": "Step", "type": "Task"}, "Error": "States.TaskFailed"},
        {"type": "StateCaught", "timestamp": 9000, "state": {"name": "Step", "type": "Task"}},
    ]
    records = history_of(events)
    assert [(r.name, r.seconds, r.outcome) for r in records] == [("Create cluster", 3.0, "exited"), ("Step", 2.0, "failed: States.TaskFailed"), ("Step", 3.0, "failed: States.TaskFailed")]


def test_local_argv_keeps_the_job_arguments_and_rewrites_only_the_cluster_settings():
    emr = ["spark-submit", "--master", "yarn", "--deploy-mode", "cluster", "--conf", "spark.task.resource.gpu.amount=1", "--conf", "spark.dynamicAllocation.enabled=false",
           "--conf", "spark.driver.memory=4g", "s3://a/v1/jobs/train_decoder.py", "--captions", "s3://o/p", "--epochs", "2"]
    defaults = {"spark.executor.resource.gpu.amount": "1", "spark.executor.memory": "4g", "spark.executor.memoryOverhead": "3g", "spark.pyspark.python": "/opt/captioning/venv/bin/python", "spark.yarn.maxAppAttempts": "1"}
    argv = local_argv(emr, defaults, "spark://127.0.0.1:7077", "/node/python", "/steps/train_decoder.py", ["/j/a.jar", "/j/b.jar"], "1g", "/spark/bin/spark-submit")
    assert argv[:7] == ["/spark/bin/spark-submit", "--master", "spark://127.0.0.1:7077", "--deploy-mode", "client", "--jars", "/j/a.jar,/j/b.jar"]
    assert argv[-5:] == ["/steps/train_decoder.py", "--captions", "s3://o/p", "--epochs", "2"]
    confs = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv[:-5]) if a == "--conf")
    assert confs["spark.dynamicAllocation.enabled"] == "false"
    assert confs["spark.pyspark.python"] == "/node/python"
    assert confs["spark.driver.memory"] == confs["spark.executor.memory"] == "1g"
    assert not [k for k in confs if "gpu" in k or "yarn" in k or "Overhead" in k]
    with pytest.raises(ValueError):
        local_argv(["hadoop-streaming"], {}, "m", "p", "s", [], "1g", "submit")


def test_failure_cause_names_the_jobs_error_line():
    cause = failure_cause("prepare-captions", 2, "INFO noise\nerror: s3://d/missing: no dataset there\nmore\n")
    assert cause.startswith("step prepare-captions failed (spark-submit exit 2): error: s3://d/missing: no dataset there")


def test_the_console_examples_fill_completely():
    for name in ("training-input", "bulk-captioning-input"):
        filled = example_input(name)
        assert "REPLACE" not in str(filled)
        assert filled["artifacts_version"] == PLACEHOLDERS["REPLACE-with-the-version-given-to-captioner-deploy"]


def test_the_cluster_request_sizes_the_local_cluster():
    from captioning.aws.deployment import Deployment
    from captioning.aws.plan import plan

    planned = plan("training", TRAINING_INPUT, Deployment("s3://a/artifacts", "s3://l/", "r", "p", "subnet-1", "sc"))
    assert core_nodes(planned.cluster) == 2
    assert spark_defaults(planned.cluster)["spark.pyspark.python"] == "/opt/captioning/venv/bin/python"


def test_training_definition_retries_a_failed_step_once_then_terminates_and_fails():
    needs_interpreter()
    calls = []

    def handle(state, resource, parameters):
        calls.append(state)
        if state == "Extract features":
            raise TaskError("States.TaskFailed", "step extract-features failed: error: out of memory")
        return {"ClusterId": "j-1"} if resource.endswith("createCluster.sync") else {}

    execution = run_execution(rendered_definition("training"), TRAINING_INPUT, handle, name="unit")
    assert execution.status == "FAILED"
    assert calls == ["Create cluster", "Prepare captions", "Extract features", "Extract features", "Terminate cluster after failure"]
    assert (execution.error, execution.cause) == ("States.TaskFailed", "step extract-features failed: error: out of memory")
    assert execution.states_entered()[-1] == "Pipeline failed"


def test_bulk_definition_reads_the_lease_and_refuses_a_held_output_before_any_cluster():
    needs_interpreter()
    calls = []

    def held(state, resource, parameters):
        calls.append((state, parameters))
        return {"Body": '{"holder": "other-run", "expires_at": "2999-01-01T00:00:00Z"}'}

    execution = run_execution(rendered_definition("bulk_captioning"), BULK_INPUT, held, name="unit")
    assert execution.status == "FAILED" and execution.error == "OutputLeaseHeld", execution
    assert calls == [("Read output lease", {"Bucket": "o", "Key": "captions/_lease.json"})]

    def free(state, resource, parameters):
        calls.append((state, parameters))
        if state == "Read output lease":
            raise TaskError("S3.NoSuchKeyException", "The specified key does not exist.")
        return {"ClusterId": "j-1"} if resource.endswith("createCluster.sync") else {}

    calls.clear()
    execution = run_execution(rendered_definition("bulk_captioning"), BULK_INPUT, free, name="unit")
    assert execution.status == "SUCCEEDED"
    assert [state for state, _ in calls] == ["Read output lease", "Create cluster", "Caption images", "Terminate cluster"]


def test_the_console_examples_pass_launch_dry_run_and_the_plan(tmp_path):
    """What the rehearsal starts from: a documented input that launch refuses fails here, without Spark."""
    from captioning.aws.plan import plan
    from captioning.aws.rehearsal import deployment, launch_plan, launch_steps

    request = launch_plan("training", example_input("training-input"), tmp_path)
    assert [next(a for a in args if a.endswith(".py")).rsplit("/", 1)[1] for args in launch_steps(request)] == ["prepare_captions.py", "extract_features.py", "train_decoder.py", "evaluate.py"]
    planned = plan("bulk_captioning", example_input("bulk-captioning-input"), deployment())
    assert [step.state for step in planned.steps] == ["Caption images"]
