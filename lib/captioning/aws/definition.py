"""A pipeline as an Amazon States Language definition (JSONPath throughout).

Shape of both machines:

  Read input -> Apply defaults -> Resolve values -> Check inputs -> Build step arguments
  -> Flatten step arguments -> [output lease check] -> Create cluster -> step ... step
  -> Terminate cluster -> Succeeded
  every step's Catch -> Terminate cluster after failure -> Pipeline failed

Every value a step needs is computed by the Pass states *before* the cluster exists. The
reason: an expression that fails at run time (a missing input field, a wrong type) raises
States.Runtime, which no Catch can catch. Before the cluster that only fails the
execution; after it, it would leave the cluster running. So after "Create cluster" the
states only read fields that are known to exist ($.cluster.ClusterId, $.args.<step>).

Output lease check (pipelines with a ``lease``): the job keeps a lease object at
``<output>/_lease.json`` while it runs (:mod:`captioning.store.lease`). Before creating a
cluster the machine reads it with the S3 SDK integration; no object
(S3.NoSuchKeyException) means free, an ``expires_at`` later than the state's entry time
means another run holds the output, and the execution fails with OutputLeaseHeld without
creating a cluster. The output is given as a bucket and a prefix, so the lease's bucket
and key are plain paths and a ``States.Format``: JSONPath has no substring function, and
splitting an ``s3://`` URI would need one (or JSONata, which local ASL interpreters lack).

Error handling:
  * createCluster.sync: Retry once on States.TaskFailed (spot capacity, a failed download
    in the bootstrap); a cluster that fails to start is terminated by EMR itself, so its
    Catch goes straight to a Fail state.
  * addStep.sync: ActionOnFailure CONTINUE (the cluster waits; the state machine decides),
    Retry once on States.TaskFailed for steps marked ``retry`` — the training jobs can be
    rerun: prepare-captions and extract-features skip finished work, train-decoder resumes
    from its last checkpoint — then Catch States.ALL (also States.Timeout from
    TimeoutSeconds) -> terminate.
  * terminateCluster.sync is idempotent: Retry States.ALL six times with backoff; if it
    still fails the execution ends in "Cluster may still be running".
  * Nets under all of this: the cluster's idle auto-termination (ClusterConfig.idle_timeout_s)
    ends a cluster nobody terminated, e.g. after someone stops an execution (Step Functions
    does not terminate EMR clusters of stopped executions).

Deployment-specific values are ``${Name}`` placeholders filled by CloudFormation's
DefinitionSubstitutions (see ``captioning.aws.deployment``).
"""
from __future__ import annotations

from captioning.aws import asl, layout
from captioning.aws.cluster import PROJECT_TAG, cluster_parameters
from captioning.aws.pipelines import ARTIFACTS_PREFIX, Pipeline
from captioning.aws.steps import Fmt, JobUnavailable, Piece, Ref, SparkStep, Splice, StepArgumentError
from captioning.store.lease import LEASE_FILE

EMR = "arn:aws:states:::elasticmapreduce:"
CREATE, ADD_STEP, TERMINATE = EMR + "createCluster.sync", EMR + "addStep.sync", EMR + "terminateCluster.sync"
GET_OBJECT = "arn:aws:states:::aws-sdk:s3:getObject"
TERMINATE_OK, TERMINATE_AFTER_FAILURE = "Terminate cluster", "Terminate cluster after failure"
FAILED, NOT_STARTED, STILL_RUNNING, SUCCEEDED = "Pipeline failed", "Cluster did not start", "Cluster may still be running", "Succeeded"
INVALID = "Invalid input"
CREATE_CLUSTER = "Create cluster"
READ_LEASE, LEASE_FREE = "Read output lease", "Output lease free?"
LEASE_HELD, LEASE_UNREADABLE, LEASE_MALFORMED = "Output lease held", "Output lease not readable", "Output lease malformed"
DESCRIBE_HELD_LEASE = "Describe held lease"
MAX_INTRINSICS = 10  # per field, a Step Functions limit


def script(step: SparkStep) -> Fmt:
    return Fmt("{}/{}/" + step.spec.script_path, ARTIFACTS_PREFIX.args)


class Values:
    """The "Resolve values" Pass state's Parameters: one entry per computed value."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}

    def add(self, key: str, expression: str) -> Ref:
        name, n = key, 2
        while name in self.fields and self.fields[name] != expression:
            name, n = f"{key}_{n}", n + 1
        self.fields[name] = expression
        return Ref(f"$.values.{name}")

    def text(self, key: str, token: Ref | Fmt) -> Ref:
        """A string value (numbers in the input become strings, as command lines need)."""
        if isinstance(token, Ref):
            return self.add(key, asl.call("Format", "'{}'", token.path))
        return self.add(key, asl.call("Format", asl.quote_template(token.template), *(a.path for a in token.args)))


def array_expression(pieces: list[Piece], step: SparkStep, values: Values) -> str:
    """``States.Array(States.Array(args...), <list path>, ...)``: flattened by the next state."""
    groups: list[str] = []
    run: list[str] = []
    previous: Piece = ""
    for piece in pieces:
        if isinstance(piece, Splice):
            if run:
                groups.append(asl.call("Array", *run))
                run = []
            groups.append(piece.ref.path)
        elif isinstance(piece, str):
            run.append(asl.quote(piece))
        else:
            if previous == "--conf":
                name = "conf"
            elif isinstance(previous, str) and previous.startswith("--"):
                name = previous[2:].replace("-", "_")
            else:
                name = "script"
            run.append(values.text(f"{step.key}_{name}", piece).path)
        previous = piece
    if run:
        groups.append(asl.call("Array", *run))
    expression = asl.call("Array", *groups)
    if asl.count_intrinsics(expression) > MAX_INTRINSICS:
        raise StepArgumentError(f"{step.key}: the argument list needs more than {MAX_INTRINSICS} intrinsic calls in one field")
    return expression


def cluster_values(pipeline: Pipeline, values: Values) -> None:
    """The values the createCluster request reads (name, release, capacity, bootstrap, subnets)."""
    values.add("cluster_name", asl.call("Format", asl.quote_template(f"captioning-{pipeline.name.replace('_', '-')}-{{}}"), "$.execution"))
    values.add("release_label", "$.config.release_label")
    values.add("core_on_demand", "$.config.core_on_demand")
    values.add("core_spot", "$.config.core_spot")
    values.add("subnet_ids", asl.call("StringSplit", "'${SubnetIds}'", "','"))
    prefix = [ref.path for ref in ARTIFACTS_PREFIX.args]  # a Pass state cannot read its own results
    values.add("bootstrap_path", asl.call("Format", asl.quote_template("{}/{}/" + layout.BOOTSTRAP), *prefix))
    values.add("bootstrap_args", asl.call("Array", "'--artifacts'", asl.call("Format", "'{}/{}'", *prefix)))


def step_arrays(pipeline: Pipeline, values: Values, strict: bool, unchecked: list[str]) -> dict[str, str]:
    """{step key: its argument-list expression}; jobs that could not be checked go to ``unchecked``."""
    arrays: dict[str, str] = {}
    for step in pipeline.steps:
        try:
            pieces = step.pieces(script(step), validate=True)
        except JobUnavailable:
            if strict:
                raise
            unchecked.append(step.job)
            pieces = step.pieces(script(step), validate=False)
        for piece in pieces:
            if isinstance(piece, Splice):
                values.add(piece.ref.path.rsplit(".", 1)[1] + "_count", asl.call("ArrayLength", piece.ref.path))
        arrays[step.key] = array_expression(pieces, step, values)
    for name in pipeline.required:  # read before the cluster starts, so a missing one fails there
        if not any(f"$.config.{name}" in expression for expression in values.fields.values()):
            raise StepArgumentError(f"{pipeline.name}: required input {name!r} is not used by any value")
    return arrays


def input_states(pipeline: Pipeline, values: Values) -> dict[str, dict]:
    return {
        "Read input": {
            "Type": "Pass",
            "Parameters": {"input.$": "$", "execution.$": "$$.Execution.Name", "defaults": pipeline.default_input()},
            "Next": "Apply defaults",
        },
        "Apply defaults": {
            "Type": "Pass",
            "Comment": "Input fields override the defaults (shallow merge).",
            "Parameters": {
                "config.$": "States.JsonMerge($.defaults, $.input, false)",
                "execution.$": "$.execution",
                "deployment": {"artifacts_uri": "${ArtifactsUri}"},
            },
            "Next": "Resolve values",
        },
        "Resolve values": {
            "Type": "Pass",
            "Comment": "Every value the cluster and the steps use: a missing or malformed input fails here, before any cluster.",
            "Parameters": {f"{k}.$": v for k, v in values.fields.items()},
            "ResultPath": "$.values",
            "Next": "Check inputs",
        },
    }


def check_states(pipeline: Pipeline) -> dict[str, dict]:
    """The Choice that refuses inputs the steps would fail on, and its Fail state."""
    config = "$.config."
    rules: list[dict] = [{"Variable": config + "artifacts_version", "StringMatches": "*/*", "Next": INVALID}]
    causes = ["artifacts_version must not contain '/'"]
    for name in pipeline.no_trailing_slash:
        rules.append({"Variable": config + name, "StringMatches": "*/", "Next": INVALID})
        causes.append(f"{name} must not end with '/'")
    for name in pipeline.no_leading_slash:
        rules.append({"Variable": config + name, "StringMatches": "/*", "Next": INVALID})
        causes.append(f"{name} must not start with '/'")
    for name in pipeline.bucket_names:
        rules.append({"Variable": config + name, "StringMatches": "*/*", "Next": INVALID})
        causes.append(f"{name} must be a bucket name (no s3:// and no '/')")
    for name in pipeline.nonempty:
        rules.append({"Variable": f"$.values.{name}_count", "NumericEquals": 0, "Next": INVALID})
        causes.append(f"{name} must be a non-empty list")
    for name, value, why in pipeline.refused:
        rules.append({"Variable": config + name, "StringEquals": value, "Next": INVALID})
        causes.append(f"{name} {value!r}: {why}")
    return {
        "Check inputs": {"Type": "Choice", "Choices": rules, "Default": "Build step arguments"},
        INVALID: {"Type": "Fail", "Comment": "Before any cluster exists.", "Error": "InvalidInput", "Cause": "; ".join(causes)},
    }


def argument_states(arrays: dict[str, str], following: str) -> dict[str, dict]:
    return {
        "Build step arguments": {
            "Type": "Pass",
            "Comment": "Each step's command line as a list of lists (fixed arguments, input lists, extra arguments).",
            "Parameters": {f"{key}.$": expression for key, expression in arrays.items()},
            "ResultPath": "$.nested_args",
            "Next": "Flatten step arguments",
        },
        "Flatten step arguments": {
            "Type": "Pass",
            "Comment": "[*][*] flattens each list of lists into the step's argument list.",
            "Parameters": {"config.$": "$.config", "values.$": "$.values", "args": {f"{key}.$": f"$.nested_args.{key}[*][*]" for key in arrays}},
            "Next": following,
        },
    }


def lease_states(bucket_field: str, prefix_field: str) -> dict[str, dict]:
    """Read ``s3://<bucket>/<prefix>/_lease.json`` and stop before the cluster while another run holds it."""
    bucket, prefix = f"$.config.{bucket_field}", f"$.config.{prefix_field}"
    expires = "$.output_lease.object.expires_at"
    return {
        READ_LEASE: {
            "Type": "Task",
            "Resource": GET_OBJECT,
            "Parameters": {"Bucket.$": bucket, "Key.$": f"States.Format('{{}}/{LEASE_FILE}', {prefix})"},
            "ResultSelector": {"object.$": "States.StringToJson($.Body)"},
            "ResultPath": "$.output_lease",
            "Catch": [
                {"ErrorEquals": ["S3.NoSuchKeyException"], "ResultPath": None, "Next": CREATE_CLUSTER},
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": LEASE_UNREADABLE},
            ],
            "Next": LEASE_FREE,
        },
        LEASE_FREE: {
            "Type": "Choice",
            "Choices": [
                {"Variable": expires, "IsPresent": False, "Next": LEASE_MALFORMED},
                {"Variable": expires, "IsTimestamp": False, "Next": LEASE_MALFORMED},
                {"Variable": expires, "TimestampGreaterThanPath": "$$.State.EnteredTime", "Next": DESCRIBE_HELD_LEASE},
            ],
            "Default": CREATE_CLUSTER,
        },
        DESCRIBE_HELD_LEASE: {
            "Type": "Pass",
            "Comment": "Fail states take reference paths only, so the cause is formatted here.",
            "Parameters": {
                "Error": "OutputLeaseHeld",
                "Cause.$": (
                    f"States.Format('another run holds s3://{{}}/{{}}/{LEASE_FILE} until {{}}: "
                    f"start this run after that one ends; no cluster was created', {bucket}, {prefix}, {expires})"
                ),
            },
            "ResultPath": "$.error",
            "Next": LEASE_HELD,
        },
        LEASE_HELD: {"Type": "Fail", "Comment": "No cluster was created.", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"},
        LEASE_UNREADABLE: {"Type": "Fail", "Comment": "No cluster was created.", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"},
        LEASE_MALFORMED: {
            "Type": "Fail",
            "Error": "OutputLeaseMalformed",
            "Cause": f"the output's {LEASE_FILE} has no ISO-8601 expires_at: check or delete it; no cluster was created",
        },
    }


def task_catch(next_state: str, result_path: str = "$.error") -> list[dict]:
    return [{"ErrorEquals": ["States.ALL"], "ResultPath": result_path, "Next": next_state}]


def retry_once() -> list[dict]:
    return [{"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 60, "MaxAttempts": 1, "BackoffRate": 2.0}]


def create_cluster_state(pipeline: Pipeline) -> dict:
    parameters = cluster_parameters(
        pipeline.cluster,
        name=Ref("$.values.cluster_name"),
        release_label=Ref("$.values.release_label"),
        bootstrap_path=Ref("$.values.bootstrap_path"),
        bootstrap_args=Ref("$.values.bootstrap_args"),
        log_uri="${LogUri}",
        service_role="${EmrServiceRole}",
        instance_profile="${EmrInstanceProfile}",
        subnet_ids=Ref("$.values.subnet_ids"),
        security_configuration="${SecurityConfiguration}",
        core_on_demand=Ref("$.values.core_on_demand"),
        core_spot=Ref("$.values.core_spot"),
        tags=(PROJECT_TAG, ("pipeline", pipeline.name)),
    )
    return {
        "Type": "Task",
        "Resource": CREATE,
        "Comment": "Waits until the cluster is up (bootstrap done). A cluster that fails to start is terminated by EMR.",
        "Parameters": parameters,
        "ResultPath": "$.cluster",
        "TimeoutSeconds": 7200,
        "Retry": retry_once(),
        "Catch": task_catch(NOT_STARTED),
        "Next": pipeline.steps[0].state,
    }


def step_state(step: SparkStep, following: str) -> dict:
    state = {
        "Type": "Task",
        "Resource": ADD_STEP,
        "Comment": f"{step.job}: spark-submit {step.spec.script_path}",
        "Parameters": {
            "ClusterId.$": "$.cluster.ClusterId",
            "Step": {"Name": step.job, "ActionOnFailure": "CONTINUE", "HadoopJarStep": {"Jar": "command-runner.jar", "Args.$": f"$.args.{step.key}"}},
        },
        "ResultPath": None,
        "TimeoutSeconds": step.timeout_s,
        "Catch": task_catch(TERMINATE_AFTER_FAILURE),
        "Next": following,
    }
    if step.retry:
        state["Retry"] = retry_once()
    return state


def terminate_state(next_state: str) -> dict:
    return {
        "Type": "Task",
        "Resource": TERMINATE,
        "Parameters": {"ClusterId.$": "$.cluster.ClusterId"},
        "ResultPath": None,
        "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 10, "MaxAttempts": 6, "BackoffRate": 2.0}],
        "Catch": task_catch(STILL_RUNNING, "$.terminate_error"),
        "Next": next_state,
    }


def end_states() -> dict[str, dict]:
    return {
        TERMINATE_OK: terminate_state(SUCCEEDED),
        TERMINATE_AFTER_FAILURE: terminate_state(FAILED),
        SUCCEEDED: {"Type": "Succeed"},
        FAILED: {"Type": "Fail", "Comment": "A step failed; the cluster has been terminated. Error and cause are the step's.", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"},
        NOT_STARTED: {"Type": "Fail", "Comment": "EMR terminates a cluster that fails to start; the idle timeout ends one still starting after a timeout.", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"},
        STILL_RUNNING: {"Type": "Fail", "Comment": "Check the cluster in the EMR console (its idle timeout ends it otherwise).", "Error": "TerminateClusterFailed", "CausePath": "$.terminate_error.Cause"},
    }


def build(pipeline: Pipeline, strict: bool = True) -> tuple[dict, list[str]]:
    """(ASL definition, jobs whose arguments could not be checked against their parser).

    With ``strict`` a job module that cannot be imported raises ``JobUnavailable``;
    otherwise that step's arguments are rendered unchecked and the job is reported.
    """
    unchecked: list[str] = []
    values = Values()
    cluster_values(pipeline, values)
    arrays = step_arrays(pipeline, values, strict, unchecked)
    before_cluster = READ_LEASE if pipeline.lease else CREATE_CLUSTER
    states = input_states(pipeline, values) | check_states(pipeline) | argument_states(arrays, before_cluster)
    if pipeline.lease:
        states |= lease_states(*pipeline.lease)
    states[CREATE_CLUSTER] = create_cluster_state(pipeline)
    for index, step in enumerate(pipeline.steps):
        following = pipeline.steps[index + 1].state if index + 1 < len(pipeline.steps) else TERMINATE_OK
        states[step.state] = step_state(step, following)
    states |= end_states()
    return {"Comment": pipeline.comment, "StartAt": "Read input", "States": states}, unchecked


def definition(pipeline: Pipeline) -> dict:
    """The ASL definition, every step checked against its job's parser."""
    return build(pipeline, strict=True)[0]
