"""What a state machine would run for a given execution input, computed without AWS.

``simulate`` walks a definition from StartAt the way Step Functions would: it evaluates
the Pass and Choice states with ``asl`` and records, instead of calling EMR, the createCluster request, each addStep's step and the
terminate. S3 objects the machine reads (the output's lease) come from ``read_object``:
by default none exists, ``captioner launch`` passes a reader of the real bucket. The
result is the concrete RunJobFlow request and the concrete spark-submit argument list of
every step, after defaults, substitutions and JSONPath have been applied.

    argv_per_step("training", {"artifacts_version": "v1", "dataset": ..., "output": ...}, deployment)
    -> {"Prepare captions": ["spark-submit", "--master", "yarn", ...], ...}

``captioner launch`` runs exactly these (so the state machine and launch cannot drift
apart), and a test can run each argument list locally.
"""
from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from captioning.aws import asl
from captioning.aws.definition import ADD_STEP, CREATE, GET_OBJECT, TERMINATE, build
from captioning.aws.deployment import Deployment
from captioning.aws.pipelines import pipelines

SIMULATED_CLUSTER_ID = "j-SIMULATED"
MAX_TRANSITIONS = 200
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


class PlanError(ValueError):
    """The input is not one the state machine would run to the end."""


class ObjectMissing(LookupError):
    """The S3 object does not exist (the SDK integration's S3.NoSuchKeyException)."""


class ObjectUnreadable(RuntimeError):
    """The S3 object could not be read for another reason; ``error`` is the task's error name."""

    def __init__(self, error: str, cause: str):
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


ObjectReader = Callable[[str, str], str]  # (bucket, key) -> the object's text


def no_objects(bucket: str, key: str) -> str:
    raise ObjectMissing(f"s3://{bucket}/{key}")


@dataclass(frozen=True)
class EmrStep:
    state: str  # the state machine's name for it, e.g. "Prepare captions"
    config: dict  # the StepConfig (Name, ActionOnFailure, HadoopJarStep)

    @property
    def args(self) -> list[str]:
        return list(self.config["HadoopJarStep"]["Args"])


@dataclass(frozen=True)
class Plan:
    pipeline: str
    cluster: dict  # the RunJobFlow request createCluster would send
    steps: tuple[EmrStep, ...]
    visited: tuple[str, ...]  # states in the order they ran
    output: Any  # the final state's output
    reads: tuple[str, ...] = ()  # s3:// URIs of the objects the machine read (or found missing)


def check_input(pipeline_name: str, execution_input: Mapping[str, Any]) -> None:
    """Refuse unknown fields (a typo would silently fall back to a default) and missing ones."""
    pipeline = pipelines()[pipeline_name]
    known = set(pipeline.required) | set(pipeline.default_input())
    unknown = sorted(set(execution_input) - known)
    if unknown:
        raise PlanError(f"{pipeline_name}: unknown input field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    missing = [name for name in pipeline.required if name not in execution_input]
    if missing:
        raise PlanError(f"{pipeline_name}: missing input field(s) {', '.join(missing)}")


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not _TIMESTAMP.match(value):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _present(path: str, data: Any, context: asl.Context) -> bool:
    try:
        asl.read_path(path, data, context)
    except asl.AslError:
        return False
    return True


def matches(rule: dict, data: Any, context: asl.Context) -> bool:
    """One Choice rule (the operators these definitions use)."""
    if "Not" in rule:
        return not matches(rule["Not"], data, context)
    if "And" in rule:
        return all(matches(r, data, context) for r in rule["And"])
    if "IsPresent" in rule:
        return _present(rule["Variable"], data, context) == rule["IsPresent"]
    value = asl.read_path(rule["Variable"], data, context)
    if "IsTimestamp" in rule:
        return (_timestamp(value) is not None) == rule["IsTimestamp"]
    if "NumericEquals" in rule:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == rule["NumericEquals"]
    if "StringMatches" in rule:
        return isinstance(value, str) and fnmatch.fnmatchcase(value, rule["StringMatches"])
    if "StringEquals" in rule:
        return isinstance(value, str) and value == rule["StringEquals"]
    if "TimestampGreaterThanPath" in rule:
        left, right = _timestamp(value), _timestamp(asl.read_path(rule["TimestampGreaterThanPath"], data, context))
        return left is not None and right is not None and left > right
    raise asl.AslError(f"Choice rule outside the supported subset: {rule}")


class _TaskFailed(Exception):
    def __init__(self, error: str, cause: str):
        super().__init__(error)
        self.error, self.cause = error, cause


class _Simulation:
    """One walk through a definition; ``run`` returns the Plan."""

    def __init__(self, document: dict, execution_input: Any, execution_name: str, read_object: ObjectReader, now: datetime):
        self.states = document["States"]
        self.comment = document.get("Comment", "")
        self.start = document["StartAt"]
        entered = now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        self.context = asl.Context(execution_name=execution_name, execution_input=execution_input, entered_time=entered)
        self.data: Any = execution_input
        self.read_object = read_object
        self.cluster: dict | None = None
        self.steps: list[EmrStep] = []
        self.reads: list[str] = []

    def run(self) -> Plan:
        name, visited = self.start, []
        for _ in range(MAX_TRANSITIONS):
            visited.append(name)
            state = self.states[name]
            kind = state["Type"]
            if kind == "Succeed":
                break
            if kind == "Fail":
                raise PlanError(f"the execution would fail in state {name!r}: {self.failure(state)}")
            if kind == "Pass":
                self.pass_state(state)
                following = state.get("Next")
            elif kind == "Choice":
                following = self.choice(name, state)
            elif kind == "Task":
                following = self.task(name, state)
            else:
                raise PlanError(f"{name}: state type {kind} is outside the simulation")
            if state.get("End"):
                break
            name = following
        else:
            raise PlanError(f"more than {MAX_TRANSITIONS} transitions")
        if self.cluster is None:
            raise PlanError("the definition never creates a cluster")
        return Plan(pipeline=self.comment, cluster=self.cluster, steps=tuple(self.steps), visited=tuple(visited), output=self.data, reads=tuple(self.reads))

    def failure(self, state: dict) -> str:
        """The Fail state's error and cause, as the execution would report them."""
        error = state["Error"] if "Error" in state else asl.evaluate(state["ErrorPath"], self.data, self.context) if "ErrorPath" in state else ""
        cause = state["Cause"] if "Cause" in state else asl.evaluate(state["CausePath"], self.data, self.context) if "CausePath" in state else ""
        return f"{error}: {cause}" if cause else str(error)

    def pass_state(self, state: dict) -> None:
        result = asl.resolve(state["Parameters"], self.data, self.context) if "Parameters" in state else state.get("Result", self.data)
        self.data = asl.write_path(state.get("ResultPath", "$"), self.data, result)

    def choice(self, name: str, state: dict) -> str:
        for rule in state["Choices"]:
            if matches(rule, self.data, self.context):
                return rule["Next"]
        if "Default" not in state:
            raise PlanError(f"{name}: no Choice rule matched and there is no Default")
        return state["Default"]

    def task(self, name: str, state: dict) -> str:
        parameters = asl.resolve(state.get("Parameters", {}), self.data, self.context)
        try:
            result = self.call(name, state["Resource"], parameters)
        except _TaskFailed as failed:
            return self.catch(name, state, failed)
        if "ResultSelector" in state:
            result = asl.resolve(state["ResultSelector"], result, self.context)
        self.data = asl.write_path(state.get("ResultPath", "$"), self.data, result)
        return state["Next"]

    def call(self, name: str, resource: str, parameters: dict) -> Any:
        if resource == CREATE:
            self.cluster = parameters
            return {"ClusterId": SIMULATED_CLUSTER_ID}
        if resource == ADD_STEP:
            self.steps.append(EmrStep(state=name, config=parameters["Step"]))
            return {"StepId": f"s-SIMULATED{len(self.steps)}"}
        if resource == TERMINATE:
            return {}
        if resource == GET_OBJECT:
            bucket, key = parameters["Bucket"], parameters["Key"]
            self.reads.append(f"s3://{bucket}/{key}")
            try:
                return {"Body": self.read_object(bucket, key)}
            except ObjectMissing as missing:
                raise _TaskFailed("S3.NoSuchKeyException", f"no object {missing}") from None
            except ObjectUnreadable as unreadable:
                raise _TaskFailed(unreadable.error, unreadable.cause) from None
        raise PlanError(f"{name}: resource {resource} is outside the simulation")

    def catch(self, name: str, state: dict, failed: _TaskFailed) -> str:
        for catcher in state.get("Catch", []):
            if failed.error in catcher["ErrorEquals"] or "States.ALL" in catcher["ErrorEquals"]:
                self.data = asl.write_path(catcher.get("ResultPath", "$"), self.data, {"Error": failed.error, "Cause": failed.cause})
                return catcher["Next"]
        raise PlanError(f"{name}: {failed.error}: {failed.cause}")


def simulate(
    definition: dict,
    execution_input: Any,
    deployment: Deployment,
    execution_name: str = "local",
    read_object: ObjectReader = no_objects,
    now: datetime | None = None,
) -> Plan:
    """Run ``definition`` (with placeholders) on ``execution_input``, recording the AWS calls."""
    document = json.loads(asl.substitute(json.dumps(definition), deployment.substitutions()))
    return _Simulation(document, execution_input, execution_name, read_object, now or datetime.now(timezone.utc)).run()


def plan(
    pipeline_name: str,
    execution_input: Mapping[str, Any],
    deployment: Deployment,
    execution_name: str = "local",
    strict: bool = False,
    read_object: ObjectReader = no_objects,
) -> Plan:
    """The plan of one of this project's state machines (generated now, not read from disk)."""
    if pipeline_name not in pipelines():
        raise PlanError(f"unknown pipeline {pipeline_name!r} (known: {', '.join(pipelines())})")
    check_input(pipeline_name, execution_input)
    definition, _ = build(pipelines()[pipeline_name], strict=strict)
    try:
        return simulate(definition, dict(execution_input), deployment, execution_name, read_object)
    except asl.AslError as error:
        raise PlanError(f"{pipeline_name}: {error}") from error


def argv_per_step(pipeline_name: str, execution_input: Mapping[str, Any], deployment: Deployment, execution_name: str = "local") -> dict[str, list[str]]:
    """{state name: the concrete spark-submit argument list} for an execution input."""
    return {step.state: step.args for step in plan(pipeline_name, execution_input, deployment, execution_name).steps}
