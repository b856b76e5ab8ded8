"""deploy and launch against a real AWS API surface: the moto server (S3, EMR, CloudFormation).

deploy must put every file where the state machines' definitions look for it (compared
with the URIs a simulated execution produces) and every wheel of the node set where the
bootstrap looks for it, and launch must send exactly the planned request, which moto then
reports back through describe_cluster, list_bootstrap_actions and list_steps. AWS errors
must reach the user as one line. The dist holds the CPU node set only (the GPU set is
several GB; tests/integration/test_gpu_node_set.py builds it without uploading it).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from pathlib import Path

import boto3
import pytest
from packaging import tags
from packaging.utils import parse_wheel_filename

from captioning.aws import deploy as deploy_module
from captioning.aws import launch as launch_module
from captioning.aws import layout
from captioning.aws.deploy import DeployError, deploy, split_s3
from captioning.aws.package import build_dist
from captioning.aws.wheelhouse import PROVIDED, TargetPlatform, constraint_pins
from captioning.aws.plan import argv_per_step, plan
from captioning.aws.deployment import Deployment
from captioning.aws.pipelines import pipelines

ROOT = Path(__file__).resolve().parents[2]
VERSION = "v1"
CPU = ("cpu",)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    return build_dist(ROOT, folder / "emr", folder / "wheelhouse", kinds=CPU)


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
    deployed = deploy(f"{s3_bucket}/artifacts", VERSION, dist.root, kinds=CPU).uris()
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
    assert deployed["node_requirements"] == {"cpu": f"{prefix}/{layout.NODE_REQUIREMENTS['cpu']}"}
    lock = s3_object(deployed["node_requirements"]["cpu"]).decode()
    hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", lock)
    assert len(hashes) == len(dist.manifest["node_sets"]["cpu"]) > 50
    stored = s3_keys(deployed["wheelhouse"])  # where bootstrap.sh looks: <artifacts>/wheelhouse/<sha256>/<file>
    assert sorted(key.split("/")[-2] for key in stored) == sorted(hashes)
    assert deployed["wheelhouse"] == f"{s3_bucket}/artifacts/{layout.WHEELHOUSE}"
    assert s3_object(f"{prefix}/{layout.GPU_DISCOVERY}") == (ROOT / "emr" / layout.GPU_DISCOVERY).read_bytes()
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
    first = deploy(artifacts, VERSION, dist.root, kinds=CPU)
    assert first.uploaded is True and first.wheels_uploaded == len(dist.manifest["node_sets"]["cpu"]) and first.wheels_reused == 0
    assert deploy(artifacts, VERSION, dist.root, kinds=CPU).uploaded is False

    changed = tmp_path / "emr"
    shutil.copytree(dist.root, changed)
    script = changed / "jobs" / "evaluate.py"
    script.write_text(script.read_text() + "\n# changed\n")
    manifest = json.loads((changed / layout.MANIFEST).read_text())
    import hashlib

    manifest["files"]["jobs/evaluate.py"] = {"sha256": hashlib.sha256(script.read_bytes()).hexdigest(), "size": script.stat().st_size}
    (changed / layout.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DeployError, match="different deployment"):
        deploy(artifacts, VERSION, changed, kinds=CPU, wheelhouse=dist.wheelhouse)
    assert deploy(artifacts, VERSION, changed, force=True, kinds=CPU, wheelhouse=dist.wheelhouse).uploaded is True
    assert s3_object(f"{artifacts}/{VERSION}/jobs/evaluate.py").endswith(b"# changed\n")
    second = deploy(artifacts, "v2", changed, kinds=CPU, wheelhouse=dist.wheelhouse)
    assert second.uploaded is True
    assert (second.wheels_uploaded, second.bytes_uploaded) == (0, 0), "a new version shares every unchanged wheel"
    assert second.wheels_reused == first.wheels_uploaded


def test_deploy_refuses_a_dist_changed_after_packaging(s3_bucket, dist, tmp_path):
    changed = tmp_path / "emr"
    shutil.copytree(dist.root, changed)
    (changed / layout.BOOTSTRAP).write_text("#!/bin/sh\n")
    with pytest.raises(DeployError, match="rebuild"):
        deploy(f"{s3_bucket}/artifacts", VERSION, changed, kinds=CPU)
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
    assert deploy_module.main(["--stack", stack, "--version", "v3", "--dist", str(dist.root), "--wheelhouse", str(dist.wheelhouse), "--node-sets", "cpu"]) == 0
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
        "--set", f"output_bucket={s3_bucket[len('s3://'):]}", "--set", "output_prefix=captions",
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


def test_the_cpu_node_set_is_the_pinned_set_for_the_nodes_without_pyspark(dist):
    pins = constraint_pins((ROOT / "requirements/constraints.txt").read_text())
    wheels = dist.manifest["node_sets"]["cpu"]
    names = {w["name"] for w in wheels}
    assert not names & {"pyspark", "py4j", *PROVIDED}, "EMR's Spark provides pyspark"
    assert {"tensorflow-cpu", "numpy", "pycocoevalcap", "petastorm", "boto3"} <= names and "tensorflow" not in names
    assert all(w["version"] == pins[w["name"]] for w in wheels), "every wheel is the version requirements/constraints.txt pins"
    target = TargetPlatform()
    supported = set(tags.cpython_tags((3, 11), target.abis, target.platforms)) | set(tags.compatible_tags((3, 11), "cp311", target.platforms))
    for wheel in wheels:
        path = dist.wheelhouse / wheel["sha256"] / wheel["file"]
        assert path.stat().st_size == wheel["size"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == wheel["sha256"], "stored under its own content hash"
        assert parse_wheel_filename(wheel["file"])[3] & supported, f"{wheel['file']} does not install on CPython 3.11 manylinux_2_34 x86_64"
    lock = (dist.root / layout.NODE_REQUIREMENTS["cpu"]).read_text()
    assert [line for line in lock.splitlines() if not line.startswith("#")] == [f"{w['name']}=={w['version']} --hash=sha256:{w['sha256']}" for w in wheels]


def test_deploy_refuses_a_dist_without_the_gpu_node_set(s3_bucket, dist, capsys):
    with pytest.raises(DeployError, match="no gpu node set"):
        deploy(f"{s3_bucket}/artifacts", VERSION, dist.root)
    assert deploy_module.main(["--artifacts-uri", f"{s3_bucket}/artifacts", "--version", VERSION, "--dist", str(dist.root)]) == 2
    assert s3_keys(f"{s3_bucket}/artifacts") == []


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_aws_errors_of_deploy_are_one_line(s3_endpoint, dist, capsys):
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/artifacts"
    assert deploy_module.main(["--artifacts-uri", missing, "--version", VERSION, "--dist", str(dist.root), "--wheelhouse", str(dist.wheelhouse), "--node-sets", "cpu"]) == 2
    line = one_line_error(capsys)
    assert "NoSuchBucket" in line and missing in line and "check the bucket name" in line


def test_aws_errors_of_launch_are_one_line(s3_endpoint, capsys):
    assert launch_module.main(["training", "--input", str(ROOT / "emr/examples/training-input.json"), "--stack", "no-such-stack"]) == 2
    line = one_line_error(capsys)
    assert "no-such-stack" in line and "ValidationError" in line and "check the stack name" in line


def lease(expires_at: str) -> bytes:
    return json.dumps({"holder": "run-0", "acquired_at": "2026-11-28T20:00:00Z", "renewed_at": "2026-11-28T21:00:00Z", "expires_at": expires_at, "period_seconds": 600}).encode()


def test_launch_stops_before_any_cluster_while_another_run_holds_the_output(s3_bucket, capsys):
    stack = outputs_stack(s3_bucket)
    bucket, _ = split_s3(s3_bucket)
    boto3.client("s3").put_object(Bucket=bucket, Key="captions/_lease.json", Body=lease("2999-01-01T00:00:00Z"))
    emr = boto3.client("emr")
    before = len(emr.list_clusters()["Clusters"])
    args = ["bulk_captioning", "--input", str(ROOT / "emr/examples/bulk-captioning-input.json"), "--stack", stack,
            "--set", f"artifacts_version={VERSION}", "--set", f"output_bucket={bucket}", "--set", "output_prefix=captions"]
    assert launch_module.main(args) == 2
    line = one_line_error(capsys)
    assert "OutputLeaseHeld" in line and f"{s3_bucket}/captions/_lease.json" in line and "2999-01-01T00:00:00Z" in line
    assert len(emr.list_clusters()["Clusters"]) == before

    boto3.client("s3").put_object(Bucket=bucket, Key="captions/_lease.json", Body=lease("2020-01-01T00:00:00Z"))  # expired
    assert launch_module.main(args) == 0
    assert capsys.readouterr().out.strip().startswith("j-")
    assert len(emr.list_clusters()["Clusters"]) == before + 1
