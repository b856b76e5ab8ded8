"""Start a cluster that runs a pipeline's steps and terminates itself (``captioner launch``).

    captioner launch training --input emr/examples/training-input.json --stack captioning
    captioner launch bulk_captioning --input my-run.json --stack captioning --set core_spot=2
    captioner launch training --input emr/examples/training-input.json --stack captioning --dry-run

For accounts without the state machines: the same execution input, the same cluster
request and the same step argument lists as the Step Functions execution (they come from
simulating the generated definition, see ``plan``), sent as one ``run_job_flow`` call with
the steps included, ``KeepJobFlowAliveWhenNoSteps`` false and ``ActionOnFailure``
TERMINATE_CLUSTER, so the cluster ends after the last step or the first failure. There is
no retry of a failed step here. The output lease the bulk state machine checks is read
from the real bucket the same way, so a held output stops launch before any cluster.
Prints the cluster id.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

from captioning.aws.awserrors import AwsError, aws_call, one_line
from captioning.aws.plan import ObjectMissing, ObjectReader, ObjectUnreadable, Plan, PlanError, plan
from captioning.aws.deployment import Deployment
from captioning.aws.pipelines import pipelines
from captioning.aws.steps import JobUnavailable, StepArgumentError, check_argv, job


def run_job_flow_request(planned: Plan) -> dict:
    """The planned cluster with its steps, ending itself after them."""
    request = copy.deepcopy(planned.cluster)
    request["Instances"]["KeepJobFlowAliveWhenNoSteps"] = False
    request["Steps"] = [dict(copy.deepcopy(step.config), ActionOnFailure="TERMINATE_CLUSTER") for step in planned.steps]
    return request


def job_argv(step_args: list[str], job_name: str) -> list[str]:
    """The job's own arguments: everything after its entry script in a spark-submit list."""
    script = "/" + job(job_name).script_path
    positions = [i for i, arg in enumerate(step_args) if arg.endswith(script)]
    if len(positions) != 1:
        raise StepArgumentError(f"{job_name}: the entry script {script} appears {len(positions)} times in {step_args}")
    return step_args[positions[0] + 1 :]


def check_steps(planned: Plan) -> list[str]:
    """Parse every step's job arguments with the job's parser; returns jobs that could not be checked."""
    unchecked = []
    for step in planned.steps:
        name = step.config["Name"]
        try:
            check_argv(name, job_argv(step.args, name))
        except JobUnavailable:
            unchecked.append(name)
    return unchecked


def parse_setting(text: str) -> tuple[str, Any]:
    """``key=value`` with a JSON value (numbers, lists, ...) or else a plain string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def s3_reader(client=None) -> ObjectReader:
    """Read S3 objects for the plan's simulation, with the S3 integration's error names."""
    from botocore.exceptions import BotoCoreError, ClientError

    def read(bucket: str, key: str) -> str:
        import boto3

        s3 = client or boto3.client("s3")
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                raise ObjectMissing(f"s3://{bucket}/{key}") from None
            raise ObjectUnreadable(f"S3.{code}Exception", f"s3://{bucket}/{key}: {one_line(error)}") from None
        except BotoCoreError as error:
            raise ObjectUnreadable("States.TaskFailed", f"s3://{bucket}/{key}: {one_line(error)}") from None

    return read


def launch(planned: Plan, client=None) -> str:
    """``run_job_flow`` with the planned cluster and steps; returns the cluster id."""
    import boto3

    with aws_call(f"starting cluster {planned.cluster['Name']}"):
        client = client or boto3.client("emr")
        return client.run_job_flow(**run_job_flow_request(planned))["JobFlowId"]


def build_parser() -> argparse.ArgumentParser:
    from captioning.aws.stack import add_deployment_options

    parser = argparse.ArgumentParser(prog="captioner launch", description="Start an EMR cluster that runs a pipeline's steps and terminates itself (no Step Functions needed).")
    parser.add_argument("pipeline", choices=sorted(pipelines()), help="which pipeline")
    parser.add_argument("--input", type=Path, help="execution input JSON, as for the state machine (e.g. emr/examples/training-input.json)")
    parser.add_argument("--set", type=parse_setting, action="append", default=[], metavar="KEY=VALUE", help="set an input field (VALUE is JSON when it parses as JSON); repeatable")
    parser.add_argument("--name", help="run name used in the cluster name (default: launch-<UTC time>)")
    parser.add_argument("--dry-run", action="store_true", help="print the run_job_flow request and start nothing")
    add_deployment_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from captioning.aws.stack import StackError, deployment

    args = build_parser().parse_args(argv)
    try:
        execution_input = json.loads(args.input.read_text()) if args.input else {}
        execution_input.update(dict(args.set))
        target: Deployment = deployment(args)
        name = args.name or time.strftime("launch-%Y%m%dT%H%M%SZ", time.gmtime())
        planned = plan(args.pipeline, execution_input, target, execution_name=name, read_object=s3_reader())
        for unchecked in check_steps(planned):
            print(f"warning: {unchecked}: its module cannot be imported here, so its arguments were not checked", file=sys.stderr)
        if args.dry_run:
            print(json.dumps(run_job_flow_request(planned), indent=1))
            return 0
        cluster_id = launch(planned)
    except (OSError, json.JSONDecodeError, AwsError, PlanError, StackError, StepArgumentError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(cluster_id)
    print(f"started {cluster_id}: aws emr describe-cluster --cluster-id {cluster_id} (it terminates itself after the last step)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
