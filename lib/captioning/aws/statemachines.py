"""The training and bulk-captioning state machines, generated from the step definitions.

    python -m captioning.aws.statemachines            # write emr/statemachines/*.asl.json
                                                      # and the copies in emr/cloudformation.yaml
    python -m captioning.aws.statemachines --check    # exit 1 if those files are out of date

Shape of both machines:

  Read input -> Apply defaults -> Resolve values -> Check inputs -> Build step arguments
  -> Flatten step arguments -> Create cluster -> step ... step -> Terminate cluster -> Succeeded
  every step's Catch -> Terminate cluster after failure -> Pipeline failed

Every value a step needs is computed by the Pass states *before* the cluster exists. The
reason: an expression that fails at run time (a missing input field, a wrong type) raises
States.Runtime, which no Catch can catch. Before the cluster that only fails the
execution; after it, it would leave the cluster running. So after "Create cluster" the
states only read fields that are known to exist ($.cluster.ClusterId, $.args.<step>).

Error handling:
  * createCluster.sync: Retry once on States.TaskFailed (spot capacity, a flaky package
    download in the bootstrap); a cluster that fails to start is terminated by EMR itself,
    so its Catch goes straight to a Fail state.
  * addStep.sync: ActionOnFailure CONTINUE (the cluster waits; the state machine decides),
    Retry once on States.TaskFailed — every job can be rerun: prepare-captions and
    extract-features skip finished work, train-decoder resumes from its last checkpoint,
    so a spot interruption or a transient S3 error costs one rerun — then Catch States.ALL
    (also States.Timeout from TimeoutSeconds) -> terminate.
  * terminateCluster.sync is idempotent: Retry States.ALL six times with backoff; if it
    still fails the execution ends in "Cluster may still be running".
  * Nets under all of this: the cluster's idle auto-termination (ClusterConfig.idle_timeout_s)
    ends a cluster nobody terminated, e.g. after someone stops an execution (Step Functions
    does not terminate EMR clusters of stopped executions).

Deployment-specific values are ``${Name}`` placeholders filled by CloudFormation's
DefinitionSubstitutions (see ``Deployment``).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captioning.aws import asl, layout
from captioning.aws.cluster import ClusterConfig, cluster_parameters, driver_gpu_conf
from captioning.aws.steps import Fmt, JobUnavailable, Piece, Ref, SparkStep, Splice, StepArgumentError

EMR = "arn:aws:states:::elasticmapreduce:"
CREATE, ADD_STEP, TERMINATE = EMR + "createCluster.sync", EMR + "addStep.sync", EMR + "terminateCluster.sync"
TERMINATE_OK, TERMINATE_AFTER_FAILURE = "Terminate cluster", "Terminate cluster after failure"
FAILED, NOT_STARTED, STILL_RUNNING, SUCCEEDED = "Pipeline failed", "Cluster did not start", "Cluster may still be running", "Succeeded"
INVALID = "Invalid input"
MAX_INTRINSICS = 10  # per field, a Step Functions limit


@dataclass(frozen=True)
class Deployment:
    """The values CloudFormation substitutes for the definitions' ``${Name}`` placeholders."""

    artifacts_uri: str  # ${ArtifactsUri}: versions are deployed below it
    log_uri: str  # ${LogUri}
    service_role: str  # ${EmrServiceRole}: role name
    instance_profile: str  # ${EmrInstanceProfile}: instance profile name
    subnet_id: str  # ${SubnetId}

    def substitutions(self) -> dict[str, str]:
        return {
            "ArtifactsUri": self.artifacts_uri.rstrip("/"),
            "LogUri": self.log_uri,
            "EmrServiceRole": self.service_role,
            "EmrInstanceProfile": self.instance_profile,
            "SubnetId": self.subnet_id,
        }


def cfg(name: str) -> Ref:
    """An execution input field (after defaults are applied)."""
    return Ref(f"$.config.{name}")


ARTIFACTS_PREFIX = Fmt("{}/{}", (Ref("$.deployment.artifacts_uri"), cfg("artifacts_version")))


@dataclass(frozen=True)
class Pipeline:
    """One state machine: its input defaults, the steps and the cluster they run on.

    ``required`` input fields have no default; ``nonempty`` lists and ``no_trailing_slash``
    URIs (other paths are appended to them) are checked before the cluster starts. Every step also takes ``<step key>_args``, a list of extra job
    arguments appended as given (default empty), for options that are optional at run time.
    """

    name: str
    comment: str
    required: tuple[str, ...]
    defaults: tuple[tuple[str, Any], ...]
    steps: tuple[SparkStep, ...]
    nonempty: tuple[str, ...] = ()
    no_trailing_slash: tuple[str, ...] = ()
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def default_input(self) -> dict:
        return dict(self.defaults) | {f"{s.key}_args": [] for s in self.steps}


def _step(key: str, state: str, job_name: str, options: tuple, conf: tuple, timeout_s: int) -> SparkStep:
    return SparkStep(key=key, state=state, job=job_name, options=options, spark_conf=conf, extra=cfg(f"{key}_args"), timeout_s=timeout_s)


def training_conf(cluster: ClusterConfig) -> tuple:
    """Spark settings of the training step, for one worker (in the driver) or data-parallel.

    With ``train_workers`` N > 1 the job runs N TensorFlow workers as one barrier stage,
    which Spark refuses under dynamic allocation and which needs N task slots at once, each
    with a GPU of its own: static allocation of N executors, one GPU per task. With N = 1
    the same settings give the step's small Spark join one executor.
    """
    return (
        ("spark.task.resource.gpu.amount", "1"),
        ("spark.dynamicAllocation.enabled", "false"),
        ("spark.executor.instances", cfg("train_workers")),
    ) + driver_gpu_conf(cluster)


def training_pipeline(cluster: ClusterConfig = ClusterConfig()) -> Pipeline:
    output = cfg("output")
    prepared = Fmt("{}/prepared", (output,))
    features = Fmt("{}/features/{}", (output, cfg("backbone")))
    model = Fmt("{}/model", (output,))
    cpu_tasks = (("spark.task.resource.gpu.amount", "0.5"),)  # no TensorFlow on executors: two tasks share a GPU slot
    gpu_tasks = (("spark.task.resource.gpu.amount", "1"),)
    steps = (
        _step("prepare_captions", "Prepare captions", "prepare-captions", (("--dataset", cfg("dataset")), ("--output", prepared)), cpu_tasks, 2 * 3600),
        _step(
            "extract_features", "Extract features", "extract-features",
            (("--input", cfg("dataset")), ("--output", features), ("--backbone", cfg("backbone")), ("--weights", cfg("backbone_weights"))),
            gpu_tasks, 12 * 3600,
        ),
        _step(
            "train_decoder", "Train decoder", "train-decoder",
            (("--captions", prepared), ("--features", features), ("--output", model), ("--epochs", cfg("epochs")), ("--batch-size", cfg("batch_size")),
             ("--workers", cfg("train_workers"))),
            training_conf(cluster), 24 * 3600,
        ),
        _step(
            "evaluate", "Evaluate", "evaluate",
            (("--model", model), ("--features", features), ("--captions", prepared), ("--output", Fmt("{}/evaluation", (output,))),
             ("--search", cfg("search")), ("--beam-width", cfg("beam_width"))),
            cpu_tasks + driver_gpu_conf(cluster), 4 * 3600,
        ),
    )
    return Pipeline(
        name="training",
        comment="Prepare captions, extract CNN features, train the decoder and evaluate it on a transient GPU EMR cluster; the cluster is terminated on every path.",
        required=("artifacts_version", "dataset", "output"),
        defaults=(
            ("backbone", "resnet50"), ("backbone_weights", "imagenet"), ("epochs", 20), ("batch_size", 64), ("train_workers", 1),
            ("search", "beam"), ("beam_width", 3),
            ("release_label", cluster.release_label), ("core_on_demand", cluster.core_on_demand), ("core_spot", cluster.core_spot),
        ),
        steps=steps,
        no_trailing_slash=("output",),
        cluster=cluster,
    )


def bulk_pipeline(cluster: ClusterConfig = ClusterConfig()) -> Pipeline:
    step = _step(
        "caption_images", "Caption images", "caption-images",
        (("--input", Splice(cfg("inputs"))), ("--model", cfg("model")), ("--output", cfg("output")),
         ("--search", cfg("search")), ("--beam-width", cfg("beam_width"))),
        (("spark.task.resource.gpu.amount", "1"),), 24 * 3600,
    )
    return Pipeline(
        name="bulk_captioning",
        comment="Caption every image under one or more bucket prefixes with a trained model on a transient GPU EMR cluster; the cluster is terminated on every path.",
        required=("artifacts_version", "inputs", "model", "output"),
        defaults=(("search", "beam"), ("beam_width", 3), ("release_label", cluster.release_label),
                  ("core_on_demand", cluster.core_on_demand), ("core_spot", cluster.core_spot)),
        steps=(step,),
        nonempty=("inputs",),
        cluster=cluster,
    )


def pipelines(cluster: ClusterConfig = ClusterConfig()) -> dict[str, Pipeline]:
    return {p.name: p for p in (training_pipeline(cluster), bulk_pipeline(cluster))}


def _script(step: SparkStep) -> Fmt:
    return Fmt("{}/{}/" + step.spec.script_path, ARTIFACTS_PREFIX.args)


class _Values:
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


def _array_expression(pieces: list[Piece], step: SparkStep, values: _Values) -> str:
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


def _task_catch(next_state: str, result_path: str = "$.error") -> list[dict]:
    return [{"ErrorEquals": ["States.ALL"], "ResultPath": result_path, "Next": next_state}]


def _terminate(next_state: str) -> dict:
    return {
        "Type": "Task",
        "Resource": TERMINATE,
        "Parameters": {"ClusterId.$": "$.cluster.ClusterId"},
        "ResultPath": None,
        "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 10, "MaxAttempts": 6, "BackoffRate": 2.0}],
        "Catch": _task_catch(STILL_RUNNING, "$.terminate_error"),
        "Next": next_state,
    }


def build(pipeline: Pipeline, strict: bool = True) -> tuple[dict, list[str]]:
    """(ASL definition, jobs whose arguments could not be checked against their parser).

    With ``strict`` a job module that cannot be imported raises ``JobUnavailable``;
    otherwise that step's arguments are rendered unchecked and the job is reported.
    """
    unchecked: list[str] = []
    values = _Values()
    values.add("cluster_name", asl.call("Format", asl.quote_template(f"captioning-{pipeline.name.replace('_', '-')}-{{}}"), "$.execution"))
    values.add("release_label", "$.config.release_label")
    values.add("core_on_demand", "$.config.core_on_demand")
    values.add("core_spot", "$.config.core_spot")
    prefix = [ref.path for ref in ARTIFACTS_PREFIX.args]  # a Pass state cannot read its own results
    values.add("bootstrap_path", asl.call("Format", asl.quote_template("{}/{}/" + layout.BOOTSTRAP), *prefix))
    values.add("bootstrap_args", asl.call("Array", "'--artifacts'", asl.call("Format", "'{}/{}'", *prefix)))
    arrays: dict[str, str] = {}
    for step in pipeline.steps:
        try:
            pieces = step.pieces(_script(step), validate=True)
        except JobUnavailable:
            if strict:
                raise
            unchecked.append(step.job)
            pieces = step.pieces(_script(step), validate=False)
        for piece in pieces:
            if isinstance(piece, Splice):
                values.add(piece.ref.path.rsplit(".", 1)[1] + "_count", asl.call("ArrayLength", piece.ref.path))
        arrays[step.key] = _array_expression(pieces, step, values)
    for name in pipeline.required:  # read before the cluster starts, so a missing one fails there
        if not any(f"$.config.{name}" in expression for expression in values.fields.values()):
            raise StepArgumentError(f"{pipeline.name}: required input {name!r} is not used by any value")

    states: dict[str, dict] = {
        "Read input": {
            "Type": "Pass",
            "Comment": "Keep the execution input and its name next to the defaults.",
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
            "Comment": "Every value the cluster and the steps use, computed before the cluster exists: a missing or malformed input fails here.",
            "Parameters": {f"{k}.$": v for k, v in values.fields.items()},
            "ResultPath": "$.values",
            "Next": "Check inputs",
        },
    }
    rules = [{"Variable": "$.config.artifacts_version", "StringMatches": "*/*", "Next": INVALID}]
    rules += [{"Variable": f"$.config.{name}", "StringMatches": "*/", "Next": INVALID} for name in pipeline.no_trailing_slash]
    rules += [{"Variable": f"$.values.{name}_count", "NumericEquals": 0, "Next": INVALID} for name in pipeline.nonempty]
    cause = ["artifacts_version must not contain '/'"]
    cause += [f"{name} must not end with '/'" for name in pipeline.no_trailing_slash]
    cause += [f"{name} must be a non-empty list" for name in pipeline.nonempty]
    states["Check inputs"] = {"Type": "Choice", "Choices": rules, "Default": "Build step arguments"}
    states[INVALID] = {"Type": "Fail", "Comment": "Before any cluster exists.", "Error": "InvalidInput", "Cause": "; ".join(cause)}
    states["Build step arguments"] = {
        "Type": "Pass",
        "Comment": "Each step's command line as a list of lists (fixed arguments, input lists, extra arguments).",
        "Parameters": {f"{key}.$": expression for key, expression in arrays.items()},
        "ResultPath": "$.nested_args",
        "Next": "Flatten step arguments",
    }
    states["Flatten step arguments"] = {
        "Type": "Pass",
        "Comment": "[*][*] flattens each list of lists into the step's argument list.",
        "Parameters": {"config.$": "$.config", "values.$": "$.values", "args": {f"{key}.$": f"$.nested_args.{key}[*][*]" for key in arrays}},
        "Next": "Create cluster",
    }
    cluster = cluster_parameters(
        pipeline.cluster,
        name=Ref("$.values.cluster_name"),
        release_label=Ref("$.values.release_label"),
        bootstrap_path=Ref("$.values.bootstrap_path"),
        bootstrap_args=Ref("$.values.bootstrap_args"),
        log_uri="${LogUri}",
        service_role="${EmrServiceRole}",
        instance_profile="${EmrInstanceProfile}",
        subnet_id="${SubnetId}",
        core_on_demand=Ref("$.values.core_on_demand"),
        core_spot=Ref("$.values.core_spot"),
        tags=(("project", "captioning"), ("pipeline", pipeline.name)),
    )
    first = pipeline.steps[0].state
    states["Create cluster"] = {
        "Type": "Task",
        "Resource": CREATE,
        "Comment": "Waits until the cluster is up (bootstrap done). A cluster that fails to start is terminated by EMR.",
        "Parameters": cluster,
        "ResultPath": "$.cluster",
        "TimeoutSeconds": 7200,
        "Retry": [{"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 60, "MaxAttempts": 1, "BackoffRate": 2.0}],
        "Catch": _task_catch(NOT_STARTED),
        "Next": first,
    }
    for index, step in enumerate(pipeline.steps):
        following = pipeline.steps[index + 1].state if index + 1 < len(pipeline.steps) else TERMINATE_OK
        states[step.state] = {
            "Type": "Task",
            "Resource": ADD_STEP,
            "Comment": f"{step.job}: spark-submit {step.spec.script_path} (the job's arguments are checked against its parser when generated)",
            "Parameters": {
                "ClusterId.$": "$.cluster.ClusterId",
                "Step": {
                    "Name": step.job,
                    "ActionOnFailure": "CONTINUE",
                    "HadoopJarStep": {"Jar": "command-runner.jar", "Args.$": f"$.args.{step.key}"},
                },
            },
            "ResultPath": None,
            "TimeoutSeconds": step.timeout_s,
            "Retry": [{"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 60, "MaxAttempts": 1, "BackoffRate": 2.0}],
            "Catch": _task_catch(TERMINATE_AFTER_FAILURE),
            "Next": following,
        }
    states[TERMINATE_OK] = _terminate(SUCCEEDED)
    states[TERMINATE_AFTER_FAILURE] = _terminate(FAILED)
    states[SUCCEEDED] = {"Type": "Succeed"}
    states[FAILED] = {"Type": "Fail", "Comment": "A step failed; the cluster has been terminated. Error and cause are the step's.", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"}
    states[NOT_STARTED] = {"Type": "Fail", "Comment": "createCluster failed: EMR terminates a cluster that fails to start; the idle timeout ends one still starting after a timeout.", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"}
    states[STILL_RUNNING] = {"Type": "Fail", "Comment": "Terminating failed after retries: check the cluster in the EMR console (its idle timeout ends it otherwise).", "Error": "TerminateClusterFailed", "CausePath": "$.terminate_error.Cause"}
    definition = {"Comment": pipeline.comment, "StartAt": "Read input", "States": states}
    return definition, unchecked


def definition(pipeline: Pipeline) -> dict:
    """The ASL definition, every step checked against its job's parser."""
    return build(pipeline, strict=True)[0]


def render(document: dict) -> str:
    return json.dumps(document, indent=2) + "\n"


# --- generated files ---------------------------------------------------------------------

def asl_path(root: Path, name: str) -> Path:
    return root / "emr" / "statemachines" / f"{name}.asl.json"


def template_path(root: Path) -> Path:
    return root / "emr" / "cloudformation.yaml"


def _markers(name: str) -> tuple[str, str]:
    return f"# BEGIN GENERATED {name}.asl.json", f"# END GENERATED {name}.asl.json"


def embed(template: str, name: str, rendered: str) -> str:
    """``template`` with the Definition between the markers of ``name`` replaced."""
    begin, end = _markers(name)
    lines = template.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == begin]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError(f"the template needs exactly one '{begin}' ... '{end}' block")
    indent = lines[starts[0]][: len(lines[starts[0]]) - len(lines[starts[0]].lstrip())]
    body = [f"{indent}Definition:\n"] + [f"{indent}  {line}\n" for line in rendered.rstrip("\n").splitlines()]
    return "".join(lines[: starts[0] + 1] + body + lines[ends[0] :])


def generated_files(root: Path, strict: bool = False) -> tuple[dict[Path, str], list[str]]:
    """{path: content} of every generated file, and the jobs left unchecked."""
    files: dict[Path, str] = {}
    unchecked: list[str] = []
    template = template_path(root).read_text()
    for name, pipeline in pipelines().items():
        document, missing = build(pipeline, strict=strict)
        unchecked += missing
        files[asl_path(root, name)] = render(document)
        template = embed(template, name, render(document))
    files[template_path(root)] = template
    return files, unchecked


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="statemachines", description="Write the state machine definitions (emr/statemachines/*.asl.json and their copies in emr/cloudformation.yaml).")
    parser.add_argument("--root", default=".", help="project root (default: the current folder)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is out of date")
    parser.add_argument("--strict", action="store_true", help="fail when a job's module cannot be imported (default: render its step unchecked, with a warning)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(args.root)
    try:
        files, unchecked = generated_files(root, strict=args.strict)
    except (JobUnavailable, StepArgumentError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for job_name in unchecked:
        print(f"warning: {job_name}: its module cannot be imported here, so its step arguments were not checked against its parser", file=sys.stderr)
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"out of date: {path}", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
