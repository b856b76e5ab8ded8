"""emr/cloudformation.yaml: what a first deploy needs, read from the template itself.

cfn-lint (tests/unit/test_aws_definitions.py) checks the template against the resource
schemas; these tests check what the schemas cannot: the size ``aws cloudformation
deploy`` accepts, the IAM scoping, the network, encryption and the schedule's guards.
"""
from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest

from captioning.aws.cluster import MANAGED_POLICY_TAG, PROJECT_TAG
from captioning.store.lease import LEASE_FILE as LEASE_OBJECT
from captioning.aws.statemachines import TEMPLATE_BODY_LIMIT, template_path

ROOT = Path(__file__).resolve().parents[2]
MACHINES = ("TrainingStateMachine", "BulkCaptioningStateMachine")


@pytest.fixture(scope="module")
def template() -> dict:
    from cfnlint.decode import decode_str

    decoded, matches = decode_str(template_path(ROOT).read_text())
    assert not matches, matches
    return json.loads(json.dumps(decoded))


def resources(template: dict, kind: str) -> dict[str, dict]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def statements(template: dict, role: str) -> list[dict]:
    return [s for policy in template["Resources"][role]["Properties"]["Policies"] if "PolicyDocument" in policy for s in policy["PolicyDocument"]["Statement"]]


def actions(statement: dict) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def test_template_fits_the_body_size_aws_cloudformation_deploy_sends():
    size = len(template_path(ROOT).read_bytes())
    assert size <= TEMPLATE_BODY_LIMIT == 51_200, f"{size} bytes: 'aws cloudformation deploy' refuses it without --s3-bucket"


def test_state_machine_role_creates_and_tags_only_project_clusters(template):
    granted = statements(template, "StatesRole")
    create = [s for s in granted if {"elasticmapreduce:RunJobFlow", "elasticmapreduce:AddTags"} & set(actions(s))]
    assert {a for s in create for a in actions(s)} >= {"elasticmapreduce:RunJobFlow", "elasticmapreduce:AddTags"}
    for statement in create:
        assert statement["Condition"] == {"StringEquals": {f"elasticmapreduce:RequestTag/{PROJECT_TAG[0]}": PROJECT_TAG[1]}}
        assert "cluster/*" in json.dumps(statement["Resource"])


def test_state_machine_role_changes_only_clusters_tagged_by_the_project(template):
    changing = {"elasticmapreduce:AddJobFlowSteps", "elasticmapreduce:CancelSteps", "elasticmapreduce:TerminateJobFlows"}
    granted = [s for s in statements(template, "StatesRole") if changing & set(actions(s))]
    assert {a for s in granted for a in actions(s)} == changing
    for statement in granted:
        assert statement["Condition"] == {"StringEquals": {f"elasticmapreduce:ResourceTag/{PROJECT_TAG[0]}": PROJECT_TAG[1]}}
    everything = [a for s in statements(template, "StatesRole") for a in actions(s)]
    assert not any(fnmatch.fnmatch(a, "elasticmapreduce:*") and a.endswith("*") for a in everything), "no wildcard EMR actions"


def test_state_machine_role_reads_exactly_the_lease_objects_of_the_output_bucket(template):
    granted = statements(template, "StatesRole")
    (read,) = [s for s in granted if "s3:GetObject" in actions(s)]
    pattern = read["Resource"]["Fn::Sub"]
    assert pattern == "${OutputBucket.Arn}/*" + LEASE_OBJECT
    bucket_arn = "arn:aws:s3:::out"
    assert fnmatch.fnmatch(f"{bucket_arn}/captions/{LEASE_OBJECT}", pattern.replace("${OutputBucket.Arn}", bucket_arn))
    assert not fnmatch.fnmatch(f"{bucket_arn}/captions/part-0.parquet", pattern.replace("${OutputBucket.Arn}", bucket_arn))
    (listing,) = [s for s in granted if "s3:ListBucket" in actions(s)]
    assert listing["Resource"] == {"Fn::GetAtt": ["OutputBucket", "Arn"]}, "without it S3 reports a missing lease as AccessDenied"


def test_instance_profile_has_the_name_of_its_role(template):
    profile = template["Resources"]["EmrInstanceProfile"]["Properties"]
    assert profile["InstanceProfileName"] == {"Ref": "EmrInstanceRole"} and profile["Roles"] == [{"Ref": "EmrInstanceRole"}]


def test_nodes_live_in_private_subnets_of_different_zones_that_reach_only_s3(template):
    subnets = resources(template, "AWS::EC2::Subnet")
    assert len(subnets) == 3 and sum("Condition" in s for s in subnets.values()) == 1, "two always, the third optional"
    zones = [s["Properties"]["AvailabilityZone"]["Fn::If"] for s in subnets.values()]
    assert sorted(z[1]["Fn::Select"][0] for z in zones) == [0, 1, 2] == sorted(z[2]["Fn::Select"][0] for z in zones), "one zone each"
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets.values())
    assert all({"Key": MANAGED_POLICY_TAG[0], "Value": MANAGED_POLICY_TAG[1]} in s["Properties"]["Tags"] for s in subnets.values())
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert not kinds & {"AWS::EC2::InternetGateway", "AWS::EC2::NatGateway", "AWS::EC2::VPCGatewayAttachment", "AWS::EC2::Route", "AWS::EC2::EIP"}
    (endpoint,) = resources(template, "AWS::EC2::VPCEndpoint").values()
    assert endpoint["Properties"]["VpcEndpointType"] == "Gateway" and endpoint["Properties"]["ServiceName"] == {"Fn::Sub": "com.amazonaws.${AWS::Region}.s3"}
    tables = {a["Properties"]["SubnetId"]["Ref"]: a["Properties"]["RouteTableId"] for a in resources(template, "AWS::EC2::SubnetRouteTableAssociation").values()}
    assert set(tables) == set(subnets) and all(t in endpoint["Properties"]["RouteTableIds"] for t in tables.values())


def test_clusters_use_every_subnet_and_the_security_configuration(template):
    outputs = template["Outputs"]
    for machine in MACHINES:
        substitutions = template["Resources"][machine]["Properties"]["DefinitionSubstitutions"]
        assert substitutions["SubnetIds"] == outputs["SubnetIds"]["Value"]
        listed = substitutions["SubnetIds"]["Fn::Join"][1]
        assert [{"Ref": "Subnet1"}, {"Ref": "Subnet2"}] == listed[:2] and listed[2]["Fn::If"][1] == {"Ref": "Subnet3"}
        assert substitutions["SecurityConfiguration"] == {"Ref": "SecurityConfiguration"} == outputs["SecurityConfigurationName"]["Value"]


def test_security_configuration_encrypts_local_disks_and_ebs_and_requires_imdsv2(template):
    configuration = template["Resources"]["SecurityConfiguration"]["Properties"]["SecurityConfiguration"]
    at_rest = configuration["EncryptionConfiguration"]
    assert at_rest["EnableAtRestEncryption"] is True
    disks = at_rest["AtRestEncryptionConfiguration"]["LocalDiskEncryptionConfiguration"]
    assert disks["EnableEbsEncryption"] is True and disks["EncryptionKeyProviderType"] == "AwsKms"
    assert disks["AwsKmsKey"] == {"Fn::GetAtt": ["DiskKey", "Arn"]}
    assert configuration["InstanceMetadataServiceConfiguration"]["MinimumInstanceMetadataServiceVersion"] == 2
    key = {"Fn::GetAtt": ["DiskKey", "Arn"]}
    for role, needed in (("EmrInstanceRole", {"kms:GenerateDataKey*", "kms:Decrypt"}), ("EmrServiceRole", {"kms:CreateGrant", "kms:GenerateDataKey*"})):
        usable = {a for s in statements(template, role) if s["Resource"] == key for a in actions(s)}
        assert needed <= usable, role
    assert template["Resources"]["DiskKey"]["Properties"]["EnableKeyRotation"] is True


def test_policies_of_retained_buckets_are_retained_too(template):
    buckets = resources(template, "AWS::S3::Bucket")
    retained = {name for name, b in buckets.items() if b.get("DeletionPolicy") == "Retain"}
    assert retained == {"DataBucket", "OutputBucket"}
    for policy in resources(template, "AWS::S3::BucketPolicy").values():
        if policy["Properties"]["Bucket"]["Ref"] in retained:
            assert policy.get("DeletionPolicy") == "Retain" and policy.get("UpdateReplacePolicy") == "Retain"


def test_failed_scheduled_starts_go_to_a_dead_letter_queue(template):
    schedule = template["Resources"]["BulkCaptioningSchedule"]["Properties"]["Target"]
    assert schedule["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["ScheduleDeadLetters", "Arn"]}}
    queue = template["Resources"]["ScheduleDeadLetters"]
    assert queue["Condition"] == "CreateSchedule" and queue["Properties"]["SqsManagedSseEnabled"] is True
    sends = [s for s in statements(template, "SchedulerRole") if "sqs:SendMessage" in actions(s)]
    assert [s["Resource"] for s in sends] == [{"Fn::GetAtt": ["ScheduleDeadLetters", "Arn"]}]


# --- the Rules section, evaluated as CloudFormation does before it creates anything ---------


def rule_value(node, parameters: dict):
    """The rule functions the template uses: Ref, Fn::Not, Fn::Equals, Fn::Contains."""
    if isinstance(node, dict):
        (function, argument), = node.items()
        if function == "Ref":
            return parameters[argument]
        values = [rule_value(a, parameters) for a in argument]
        if function == "Fn::Not":
            return not values[0]
        if function == "Fn::Equals":
            return values[0] == values[1]
        if function == "Fn::Contains":
            return values[1] in values[0]
        raise AssertionError(f"rule function {function} is not evaluated here")
    return node


def failed_assertions(template: dict, **given: str) -> list[str]:
    """AssertDescriptions of the rules that refuse these parameter values (others at default)."""
    parameters = {}
    for name, spec in template["Parameters"].items():
        text = given.get(name, str(spec.get("Default", "")))
        parameters[name] = text.split(",") if spec["Type"] == "CommaDelimitedList" else text
    failed = []
    for rule in template["Rules"].values():
        if "RuleCondition" in rule and not rule_value(rule["RuleCondition"], parameters):
            continue
        failed += [a["AssertDescription"] for a in rule["Assertions"] if not rule_value(a["Assert"], parameters)]
    return failed


SCHEDULE = {"ScheduleModelUri": "s3://out/model", "ScheduleInputs": "s3://photos/2024/,s3://photos/new/", "ScheduleOutputPrefix": "captions", "ScheduleArtifactsVersion": "v1"}


def test_a_schedule_with_an_empty_input_list_is_refused_at_deploy(template):
    assert failed_assertions(template) == [], "no schedule, nothing to check"
    assert failed_assertions(template, **SCHEDULE) == []
    assert any("ScheduleInputs" in f for f in failed_assertions(template, **{**SCHEDULE, "ScheduleInputs": ""}))
    assert any("ScheduleInputs" in f for f in failed_assertions(template, **{**SCHEDULE, "ScheduleInputs": "s3://photos/2024/,,s3://x/"}))
    assert any("ScheduleOutputPrefix" in f for f in failed_assertions(template, **{**SCHEDULE, "ScheduleOutputPrefix": ""}))
    assert any("ScheduleArtifactsVersion" in f for f in failed_assertions(template, **{**SCHEDULE, "ScheduleArtifactsVersion": ""}))
