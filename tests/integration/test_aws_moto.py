"""deploy and launch against a real AWS API surface: the moto server (S3, EMR, CloudFormation).

deploy must put every file where the state machines' definitions look for it (compared
with the URIs a simulated execution produces), and launch must send exactly the planned
request, which moto then reports back through describe_cluster, list_bootstrap_actions
and list_steps.
"""
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import boto3
import pytest

from captioning.aws import deploy as deploy_module
from captioning.aws import launch as launch_module
from captioning.aws import layout
from captioning.aws.deploy import DeployError, deploy, split_s3
from captioning.aws.package import build_dist
from captioning.aws.plan import argv_per_step, plan
from captioning.aws.deployment import Deployment
from captioning.aws.pipelines import pipelines

ROOT = Path(__file__).resolve().parents[2]
VERSION = "v1"


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    return build_dist(ROOT, tmp_path_factory.mktemp("dist") / "emr")


def deployment_for(bucket: str) -> Deployment:
    return Deployment(f"{bucket}/artifacts", f"{bucket}/logs/", "captioning-emr-service", "captioning-emr-profile", "subnet-0abc", "captioning-security")


def example(name: str, **changes) -> dict:
    data = json.loads((ROOT / "emr/examples" / f"{name.replace('_', '-')}-input.json").read_text())
    return {**data, "artifacts_version": VERSION, **changes}


def s3_object(uri: str) -> bytes:
    bucket, key = split_s3(uri)
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def s3_keys(uri: str) -> list[str]:
    bucket, prefix = split_s3(uri)
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


@pytest.mark.parametrize("pipeline", sorted(pipelines()))
def test_deploy_puts_every_file_where_the_state_machine_looks(s3_bucket, dist, pipeline):
    deployed = deploy(f"{s3_bucket}/artifacts", VERSION, dist.root).uris()
    assert deployed["uploaded"] is True
    planned = plan(pipeline, example(pipeline), deployment_for(s3_bucket))

    (action,) = planned.cluster["BootstrapActions"]
    script = action["ScriptBootstrapAction"]
    assert script["Path"] == deployed["bootstrap"]
    assert s3_object(script["Path"]) == (ROOT / "emr/bootstrap.sh").read_bytes()
    assert script["Args"] == ["--artifacts", deployed["prefix"]]
    prefix = deployed["prefix"]
    # what bootstrap.sh downloads from its --artifacts folder
    assert s3_object(f"{prefix}/{layout.CONSTRAINTS}") == (ROOT / "requirements/constraints.txt").read_bytes()
    for kind, name in layout.NODE_REQUIREMENTS.items():
        assert deployed["node_requirements"][kind] == f"{prefix}/{name}"
        assert b"tensorflow" in s3_object(f"{prefix}/{name}")
    wheels = s3_keys(f"{prefix}/{layout.WHEELS}")
    assert wheels == [split_s3(deployed["wheel"])[1]] and wheels[0].endswith(".whl")

    assert planned.steps
    for step in planned.steps:
        scripts = [arg for arg in step.args if arg.startswith(f"{prefix}/{layout.JOBS}/")]
        assert len(scripts) == 1, step.args
        assert scripts[0] in deployed["jobs"].values()
        assert s3_object(scripts[0]) == (ROOT / "jobs" / Path(scripts[0]).name).read_bytes()
    manifest = json.loads(s3_object(deployed["manifest"]))
    assert manifest["files"] == dist.manifest["files"]


def test_a_version_is_immutable_and_a_redeploy_of_it_is_a_no_op(s3_bucket, dist, tmp_path):
    artifacts = f"{s3_bucket}/artifacts"
    assert deploy(artifacts, VERSION, dist.root).uploaded is True
    assert deploy(artifacts, VERSION, dist.root).uploaded is False

    changed = tmp_path / "emr"
    shutil.copytree(dist.root, changed)
    script = changed / "jobs" / "evaluate.py"
    script.write_text(script.read_text() + "\n# changed\n")
    manifest = json.loads((changed / layout.MANIFEST).read_text())
    import hashlib

    manifest["files"]["jobs/evaluate.py"] = {"sha256": hashlib.sha256(script.read_bytes()).hexdigest(), "size": script.stat().st_size}
    (changed / layout.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DeployError, match="different deployment"):
        deploy(artifacts, VERSION, changed)
    assert deploy(artifacts, VERSION, changed, force=True).uploaded is True
    assert s3_object(f"{artifacts}/{VERSION}/jobs/evaluate.py").endswith(b"# changed\n")
    assert deploy(artifacts, "v2", changed).uploaded is True


def test_deploy_refuses_a_dist_changed_after_packaging(s3_bucket, dist, tmp_path):
    changed = tmp_path / "emr"
    shutil.copytree(dist.root, changed)
    (changed / layout.BOOTSTRAP).write_text("#!/bin/sh\n")
    with pytest.raises(DeployError, match="rebuild"):
        deploy(f"{s3_bucket}/artifacts", VERSION, changed)
    assert s3_keys(f"{s3_bucket}/artifacts") == []


def outputs_stack(bucket: str) -> str:
    """A stack with the outputs of emr/cloudformation.yaml (moto cannot create the real one)."""
    name = f"captioning-{uuid.uuid4().hex[:8]}"
    values = {
        "ArtifactsUri": f"{bucket}/artifacts",
        "LogUri": f"{bucket}/logs/",
        "EmrServiceRoleName": "captioning-emr-service",
        "EmrInstanceProfileName": "captioning-emr-profile",
        "SubnetIds": "subnet-0abc,subnet-0def",
        "SecurityConfigurationName": "captioning-security",
    }
    template = {
        "Resources": {"Placeholder": {"Type": "AWS::S3::Bucket"}},
        "Outputs": {key: {"Value": value} for key, value in values.items()},
    }
    boto3.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))
    return name


def test_deploy_command_reads_the_artifacts_uri_from_the_stack(s3_bucket, dist, capsys):
    stack = outputs_stack(s3_bucket)
    assert deploy_module.main(["--stack", stack, "--version", "v3", "--dist", str(dist.root)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["prefix"] == f"{s3_bucket}/artifacts/v3"
    assert s3_object(printed["bootstrap"]) == (ROOT / "emr/bootstrap.sh").read_bytes()


def test_launch_sends_the_planned_cluster_and_steps(s3_bucket):
    planned = plan("training", example("training"), deployment_for(s3_bucket), execution_name="launch-test")
    expected = launch_module.run_job_flow_request(planned)
    emr = boto3.client("emr")
    sent = {}
    emr.meta.events.register("provide-client-params.emr.RunJobFlow", lambda params, **_: sent.update(params))
    cluster_id = launch_module.launch(planned, emr)
    assert sent == expected

    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["Name"] == "captioning-training-launch-test"
    assert cluster["ReleaseLabel"] == expected["ReleaseLabel"]
    assert cluster["LogUri"] == f"{s3_bucket}/logs/"
    assert cluster["ServiceRole"] == "captioning-emr-service"
    assert cluster["Ec2InstanceAttributes"]["IamInstanceProfile"] == "captioning-emr-profile"
    assert cluster["AutoTerminate"] is True  # KeepJobFlowAliveWhenNoSteps=False
    assert [a["Name"] for a in cluster["Applications"]] == ["Hadoop", "Spark"]
    assert cluster["Configurations"] == expected["Configurations"]
    assert {t["Key"]: t["Value"] for t in cluster["Tags"]} == {"for-use-with-amazon-emr-managed-policies": "true", "project": "captioning", "pipeline": "training"}

    (action,) = emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    assert action["ScriptPath"] == f"{s3_bucket}/artifacts/{VERSION}/bootstrap.sh"
    assert action["Args"] == ["--artifacts", f"{s3_bucket}/artifacts/{VERSION}"]

    steps = list(reversed(emr.list_steps(ClusterId=cluster_id)["Steps"]))  # newest first
    assert [s["Name"] for s in steps] == ["prepare-captions", "extract-features", "train-decoder", "evaluate"]
    assert all(s["ActionOnFailure"] == "TERMINATE_CLUSTER" and s["Config"]["Jar"] == "command-runner.jar" for s in steps)
    argv = argv_per_step("training", example("training"), deployment_for(s3_bucket))
    assert [s["Config"]["Args"] for s in steps] == list(argv.values())


def test_launch_command_with_stack_outputs_and_settings(s3_bucket, capsys):
    stack = outputs_stack(s3_bucket)
    inputs = ["s3://photos/2024/", "s3://photos/uploads/"]
    code = launch_module.main([
        "bulk_captioning", "--input", str(ROOT / "emr/examples/bulk-captioning-input.json"), "--stack", stack,
        "--set", f"artifacts_version={VERSION}", "--set", f"inputs={json.dumps(inputs)}", "--set", "core_spot=2", "--name", "nightly",
        "--set", f"output={s3_bucket}/captions",
    ])
    assert code == 0
    cluster_id = capsys.readouterr().out.strip()
    emr = boto3.client("emr")
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["Name"] == "captioning-bulk-captioning-nightly"
    (step,) = emr.list_steps(ClusterId=cluster_id)["Steps"]
    args = step["Config"]["Args"]
    assert args[args.index("--input") + 1 : args.index("--model")] == inputs
    assert args[args.index("--model") + 1] == example("bulk_captioning")["model"]


def test_launch_command_refuses_an_input_the_job_would_refuse(s3_bucket, capsys):
    stack = outputs_stack(s3_bucket)
    emr = boto3.client("emr")
    before = len(emr.list_clusters()["Clusters"])
    code = launch_module.main(["training", "--input", str(ROOT / "emr/examples/training-input.json"), "--stack", stack, "--set", "search=beem"])
    assert code == 2
    assert "invalid choice: 'beem'" in capsys.readouterr().err
    assert len(emr.list_clusters()["Clusters"]) == before, "no cluster may be started for an input the job refuses"
