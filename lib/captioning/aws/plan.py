"""What a state machine would run for a given execution input, computed without AWS.

``simulate`` walks a definition from StartAt the way Step Functions would on the success
path: it evaluates the Pass and Choice states with ``asl`` and records, instead of
calling EMR, the createCluster request, each addStep's step and the terminate. The
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
from dataclasses import dataclass
from typing import Any, Mapping

from captioning.aws import asl
from captioning.aws.statemachines import ADD_STEP, CREATE, TERMINATE, Deployment, build, pipelines

SIMULATED_CLUSTER_ID = "j-SIMULATED"
MAX_TRANSITIONS = 200


class PlanError(ValueError):
    """The input is not one the state machine would run to the end."""


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


def _choice(state: dict, data: Any, context: asl.Context) -> str:
    for rule in state["Choices"]:
        value = asl.read_path(rule["Variable"], data, context)
        if "NumericEquals" in rule:
            matched = isinstance(value, (int, float)) and not isinstance(value, bool) and value == rule["NumericEquals"]
        elif "StringMatches" in rule:
            matched = isinstance(value, str) and fnmatch.fnmatchcase(value, rule["StringMatches"])
        else:
            raise asl.AslError(f"Choice rule outside the supported subset: {rule}")
        if matched:
            return rule["Next"]
    if "Default" not in state:
        raise PlanError("no Choice rule matched and there is no Default")
    return state["Default"]


def simulate(definition: dict, execution_input: Any, deployment: Deployment, execution_name: str = "local") -> Plan:
    """Run ``definition`` (with placeholders) on ``execution_input``, recording the EMR calls."""
    document = json.loads(asl.substitute(json.dumps(definition), deployment.substitutions()))
    states = document["States"]
    context = asl.Context(execution_name=execution_name, execution_input=execution_input)
    data: Any = execution_input
    name = document["StartAt"]
    cluster: dict | None = None
    steps: list[EmrStep] = []
    visited: list[str] = []
    for _ in range(MAX_TRANSITIONS):
        visited.append(name)
        state = states[name]
        kind = state["Type"]
        if kind == "Pass":
            result = asl.resolve(state["Parameters"], data, context) if "Parameters" in state else state.get("Result", data)
            data = asl.write_path(state.get("ResultPath", "$"), data, result)
        elif kind == "Choice":
            name = _choice(state, data, context)
            continue
        elif kind == "Task":
            parameters = asl.resolve(state.get("Parameters", {}), data, context)
            resource = state["Resource"]
            if resource == CREATE:
                cluster = parameters
                result: Any = {"ClusterId": SIMULATED_CLUSTER_ID}
            elif resource == ADD_STEP:
                steps.append(EmrStep(state=name, config=parameters["Step"]))
                result = {"StepId": f"s-SIMULATED{len(steps)}"}
            elif resource == TERMINATE:
                result = {}
            else:
                raise PlanError(f"{name}: resource {resource} is outside the simulation")
            data = asl.write_path(state.get("ResultPath", "$"), data, result)
        elif kind == "Succeed":
            break
        elif kind == "Fail":
            raise PlanError(f"the execution would fail in state {name!r}: {state.get('Error', '')} {state.get('Cause', '')}".strip())
        else:
            raise PlanError(f"{name}: state type {kind} is outside the simulation")
        if state.get("End"):
            break
        name = state["Next"]
    else:
        raise PlanError(f"more than {MAX_TRANSITIONS} transitions")
    if cluster is None:
        raise PlanError("the definition never creates a cluster")
    return Plan(pipeline=document.get("Comment", ""), cluster=cluster, steps=tuple(steps), visited=tuple(visited), output=data)


def plan(pipeline_name: str, execution_input: Mapping[str, Any], deployment: Deployment, execution_name: str = "local", strict: bool = False) -> Plan:
    """The plan of one of this project's state machines (generated now, not read from disk)."""
    if pipeline_name not in pipelines():
        raise PlanError(f"unknown pipeline {pipeline_name!r} (known: {', '.join(pipelines())})")
    check_input(pipeline_name, execution_input)
    definition, _ = build(pipelines()[pipeline_name], strict=strict)
    try:
        return simulate(definition, dict(execution_input), deployment, execution_name)
    except asl.AslError as error:
        raise PlanError(f"{pipeline_name}: {error}") from error


def argv_per_step(pipeline_name: str, execution_input: Mapping[str, Any], deployment: Deployment, execution_name: str = "local") -> dict[str, list[str]]:
    """{state name: the concrete spark-submit argument list} for an execution input."""
    return {step.state: step.args for step in plan(pipeline_name, execution_input, deployment, execution_name).steps}
