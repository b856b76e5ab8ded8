// Runs one Step Functions execution in the aws-local-stepfunctions interpreter; its Task
// states are answered by the parent process (lib/captioning/aws/rehearsal.py).
//
//   node run-state-machine.mjs <request.json>
//     request: {"definition": {...}, "input": {...}, "context": {"Execution": {...}, "State": {...}}}
//
// JSON lines on stdout, one object per line:
//   {"kind": "event", "event": {...}}            every entry of the interpreter's event log
//   {"kind": "call", "id": 1, "state": "Create cluster", "resource": "arn:...", "parameters": {...}}
//   {"kind": "end", "status": "SUCCEEDED", "output": ...} or {"kind": "end", "status": "FAILED", "error": ..., "cause": ...}
// Answers on stdin, one per call:
//   {"id": 1, "result": {...}}  or  {"id": 1, "error": "States.TaskFailed", "cause": "..."}
// An error answer is thrown as an Error whose name is the AWS error name, so the state's
// Retry and Catch rules match it as they would match the service's error.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { StateMachine } from "aws-local-stepfunctions";

const request = JSON.parse(readFileSync(process.argv[2], "utf8"));
const send = (message) => process.stdout.write(JSON.stringify(message) + "\n");

const pending = new Map();
let nextId = 1;
createInterface({ input: process.stdin }).on("line", (line) => {
  if (!line.trim()) return;
  const answer = JSON.parse(line);
  const waiting = pending.get(answer.id);
  if (!waiting) return;
  pending.delete(answer.id);
  if ("error" in answer) {
    const error = new Error(answer.cause ?? "");
    error.name = answer.error;
    waiting.reject(error);
  } else {
    waiting.resolve(answer.result ?? {});
  }
});

function handler(state, resource) {
  return (parameters) =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      send({ kind: "call", id, state, resource, parameters });
    });
}

const states = request.definition.States;
const taskResourceLocalHandlers = {};
const retryIntervalOverrides = {};
for (const [name, state] of Object.entries(states)) {
  if (state.Type === "Task") taskResourceLocalHandlers[name] = handler(name, state.Resource);
  if (state.Retry) retryIntervalOverrides[name] = 0; // retry at once: the rehearsal's point is the path, not the wait
}

const machine = new StateMachine(request.definition);
const execution = machine.run(request.input, {
  overrides: { taskResourceLocalHandlers, retryIntervalOverrides },
  context: request.context,
});

let failure = null;
const logged = (async () => {
  for await (const event of execution.eventLogs) {
    if (event.type === "ExecutionFailed") failure = { error: event.Error, cause: event.Cause };
    send({ kind: "event", event });
  }
})();

try {
  const output = await execution.result;
  await logged;
  send({ kind: "end", status: "SUCCEEDED", output });
} catch (error) {
  await logged.catch(() => {});
  const found = failure ?? { error: error.name, cause: error.message };
  send({ kind: "end", status: "FAILED", error: found.error, cause: typeof found.cause === "string" ? found.cause : JSON.stringify(found.cause ?? "") });
}
process.exit(0);
