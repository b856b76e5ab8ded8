"""Reading the deployed CloudFormation stack (emr/cloudformation.yaml) from the CLI commands.

``captioner deploy --stack NAME`` and ``captioner launch --stack NAME`` take the bucket
URIs and role names from the stack's outputs instead of separate options. The output
names are the ones the template declares; a test checks that they agree.
"""
from __future__ import annotations

import argparse

from captioning.aws.awserrors import aws_call
from captioning.aws.deployment import Deployment

# Deployment field -> stack output that holds it
DEPLOYMENT_OUTPUTS = {
    "artifacts_uri": "ArtifactsUri",
    "log_uri": "LogUri",
    "service_role": "EmrServiceRoleName",
    "instance_profile": "EmrInstanceProfileName",
    "subnet_ids": "SubnetIds",
    "security_configuration": "SecurityConfigurationName",
}


class StackError(RuntimeError):
    pass


def outputs(stack_name: str, client=None) -> dict[str, str]:
    import boto3

    with aws_call(f"reading the outputs of stack {stack_name}"):
        client = client or boto3.client("cloudformation")
        stacks = client.describe_stacks(StackName=stack_name)["Stacks"]
    if not stacks:
        raise StackError(f"no stack named {stack_name}")
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def add_deployment_options(parser: argparse.ArgumentParser, fields: tuple[str, ...] = tuple(DEPLOYMENT_OUTPUTS)) -> None:
    parser.add_argument("--stack", help="CloudFormation stack made from emr/cloudformation.yaml: the values below default to its outputs")
    helps = {
        "artifacts_uri": "s3:// URI the artifact versions live under (stack output ArtifactsUri)",
        "log_uri": "s3:// URI for the cluster logs (stack output LogUri)",
        "service_role": "EMR service role name (stack output EmrServiceRoleName)",
        "instance_profile": "EC2 instance profile name of the nodes (stack output EmrInstanceProfileName)",
        "subnet_ids": "comma-separated subnets EMR may start the cluster in (stack output SubnetIds)",
        "security_configuration": "EMR security configuration name (stack output SecurityConfigurationName)",
    }
    for name in fields:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, help=helps[name])


def resolve_options(args: argparse.Namespace, fields: tuple[str, ...] = tuple(DEPLOYMENT_OUTPUTS), client=None) -> dict[str, str]:
    """The values of ``fields``: explicit options first, then the stack's outputs."""
    values = {name: getattr(args, name) for name in fields}
    if args.stack and any(v is None for v in values.values()):
        found = outputs(args.stack, client)
        for name in fields:
            if values[name] is None:
                values[name] = found.get(DEPLOYMENT_OUTPUTS[name])
    missing = [f"--{n.replace('_', '-')}" for n, v in values.items() if not v]
    if missing:
        raise StackError(f"give {', '.join(missing)} (or --stack with a stack that has the outputs)")
    return values


def deployment(args: argparse.Namespace, client=None) -> Deployment:
    return Deployment(**resolve_options(args, client=client))
