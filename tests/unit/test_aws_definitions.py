"""The AWS definitions: template, state machines, step arguments — without AWS.

External checkers run as subprocesses: cfn-lint (a Python dependency of moto, in the
test environment) and the npm asl-validator (``make asl-validator`` installs it into
emr/validator/node_modules; the test is skipped, saying so, when it is not installed).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from captioning.aws import asl, layout
from captioning.aws.cluster import ClusterConfig
from captioning.aws.package import PackageError, node_requirements, pinned_version
from captioning.aws.plan import ObjectMissing, ObjectUnreadable, PlanError, argv_per_step, check_input, plan, simulate
from captioning.aws.stack import DEPLOYMENT_OUTPUTS
from captioning.aws.definition import (
    ADD_STEP,
    CREATE,
    GET_OBJECT,
    INVALID,
    LEASE_FREE,
    LEASE_HELD,
    LEASE_MALFORMED,
    LEASE_UNREADABLE,
    READ_LEASE,
    NOT_STARTED,
    TERMINATE,
    TERMINATE_AFTER_FAILURE,
    build,
)
from captioning.aws.deployment import Deployment
from captioning.aws.pipelines import pipelines
from captioning.aws.statemachines import asl_path, generated_files, template_path
from captioning.aws.steps import Fmt, JobUnavailable, Ref, Splice, StepArgumentError, check_argv, job_arguments, job_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = Deployment("s3://artifacts-bucket/artifacts", "s3://logs-bucket/emr/", "emr-service", "emr-profile", "subnet-0abc,subnet-0def", "emr-security")
EXAMPLES = {"training": ROOT / "emr/examples/training-input.json", "bulk_captioning": ROOT / "emr/examples/bulk-captioning-input.json"}
PIPELINE_NAMES = sorted(pipelines())
BEFORE_CLUSTER_FAILURES = {INVALID, LEASE_HELD, LEASE_MALFORMED, LEASE_UNREADABLE}


def definition_of(name: str) -> dict:
    return build(pipelines()[name], strict=False)[0]


def parser_or_skip(job_name: str) -> argparse.ArgumentParser:
    try:
        return job_parser(job_name)
    except JobUnavailable as error:
        pytest.skip(f"{job_name} cannot be imported yet ({error}); its arguments are checked once it exists")


def example_input(name: str) -> dict:
    return json.loads(EXAMPLES[name].read_text())


# --- generated files are up to date --------------------------------------------------------


def test_committed_definitions_and_template_equal_the_generated_ones():
    files, _ = generated_files(ROOT, strict=False)
    stale = [str(path.relative_to(ROOT)) for path, text in files.items() if not path.exists() or path.read_text() != text]
    assert not stale, f"regenerate with: python -m captioning.aws.statemachines  (stale: {stale})"


def load_template() -> dict:
    from cfnlint.decode import decode_str

    template, matches = decode_str(template_path(ROOT).read_text())
    assert not matches, matches
    return template


@pytest.mark.parametrize("name,resource", [("training", "TrainingStateMachine"), ("bulk_captioning", "BulkCaptioningStateMachine")])
def test_template_embeds_each_definition_with_all_its_substitutions(name, resource):
    properties = load_template()["Resources"][resource]["Properties"]
    document = json.loads(asl_path(ROOT, name).read_text())
    assert json.loads(json.dumps(properties["Definition"])) == document
    assert set(properties["DefinitionSubstitutions"]) == asl.placeholders(json.dumps(document)) == set(DEPLOYMENT.substitutions())


def test_template_outputs_what_deploy_and_launch_read():
    outputs = load_template()["Outputs"]
    assert set(DEPLOYMENT_OUTPUTS.values()) <= set(outputs)


# --- external validators -------------------------------------------------------------------


def test_cloudformation_template_passes_cfn_lint():
    pytest.importorskip("cfnlint", reason="cfn-lint is not installed (it comes with moto[server] in the test extras)")
    command = [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())", str(template_path(ROOT))]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def asl_validator() -> str | None:
    for candidate in (ROOT / "emr/validator/node_modules/.bin/asl-validator", ROOT / ".tools/node_modules/.bin/asl-validator"):
        if candidate.exists():
            return str(candidate)
    return None


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_state_machine_passes_asl_validator(name):
    validator = asl_validator()
    if validator is None or shutil.which("node") is None:
        pytest.skip("asl-validator is not installed: run 'make asl-validator' (npm ci --prefix emr/validator; needs Node.js)")
    result = subprocess.run([validator, "--json-path", str(asl_path(ROOT, name))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_validator_pin_matches_its_lock_file():
    package = json.loads((ROOT / "emr/validator/package.json").read_text())
    lock = json.loads((ROOT / "emr/validator/package-lock.json").read_text())
    pinned = package["dependencies"]["asl-validator"]
    assert pinned[0].isdigit(), "pin an exact version"
    assert lock["packages"]["node_modules/asl-validator"]["version"] == pinned


# --- graph: no path leaves a cluster running -----------------------------------------------


def successors(state: dict) -> list[str]:
    found = [state["Next"]] if "Next" in state else []
    found += [c["Next"] for c in state.get("Catch", [])]
    found += [c["Next"] for c in state.get("Choices", [])]
    found += [state["Default"]] if "Default" in state else []
    return found


def only(states: dict, resource: str) -> list[str]:
    return [n for n, s in states.items() if s.get("Resource") == resource]


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_every_state_is_reachable_and_every_transition_exists(name):
    states = definition_of(name)["States"]
    seen, todo = set(), [definition_of(name)["StartAt"]]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        assert current in states, f"transition to missing state {current!r}"
        seen.add(current)
        todo += successors(states[current])
    assert seen == set(states)


def catch_problems(document: dict) -> list[str]:
    """EMR steps whose errors do not all go to the terminate-after-failure state."""
    states = document["States"]
    problems = []
    if states.get(TERMINATE_AFTER_FAILURE, {}).get("Resource") != TERMINATE:
        problems.append(f"{TERMINATE_AFTER_FAILURE} is not a terminateCluster task")
    for step in only(states, ADD_STEP):
        catches = states[step].get("Catch", [])
        if not catches or catches[-1]["ErrorEquals"] != ["States.ALL"]:
            problems.append(f"{step}: no Catch of States.ALL")
        if any(c["Next"] != TERMINATE_AFTER_FAILURE for c in catches):
            problems.append(f"{step}: a Catch bypasses {TERMINATE_AFTER_FAILURE}")
        if any(c.get("ResultPath", "$") in ("$", "$.cluster") for c in catches):
            problems.append(f"{step}: a Catch overwrites the cluster id")
    return problems


def fail_path_problems(document: dict) -> list[str]:
    """Paths from StartAt to a Fail state that leave a created cluster behind."""
    states = document["States"]
    (create,) = only(states, CREATE)
    terminates = set(only(states, TERMINATE))
    problems = []

    def paths(current: str, path: tuple[str, ...]):
        if current in path:
            return
        path = path + (current,)
        if states[current]["Type"] in ("Fail", "Succeed"):
            yield path
        for following in successors(states[current]):
            yield from paths(following, path)

    for path in paths(document["StartAt"], ()):
        if states[path[-1]]["Type"] != "Fail":
            if create in path and not terminates.intersection(path[path.index(create) :]):
                problems.append(f"success without terminating: {path}")
            continue
        if create not in path:
            if path[-1] not in BEFORE_CLUSTER_FAILURES:
                problems.append(f"only the input and lease checks may fail before the cluster: {path}")
            continue
        after = path[path.index(create) + 1 :]
        if after == (NOT_STARTED,):
            continue  # createCluster's Catch: the cluster never came up (EMR terminates a failed one)
        if not terminates.intersection(after):
            problems.append(f"fails in {path[-1]} without terminating the cluster: {path}")
    return problems


def post_cluster_problems(document: dict) -> list[str]:
    """States.Runtime errors cannot be caught: after createCluster only read known fields."""
    states = document["States"]
    (create,) = only(states, CREATE)
    problems = []
    seen, todo = set(), [states[create]["Next"]] + [c["Next"] for c in states[create]["Catch"]]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        state = states[current]
        if state["Type"] not in ("Task", "Fail", "Succeed"):
            problems.append(f"{current}: a {state['Type']} state after the cluster exists")
        if state["Type"] == "Task":
            if "Catch" not in state:
                problems.append(f"{current}: no Catch")
            if "States." in json.dumps(state.get("Parameters", {})):
                problems.append(f"{current}: an intrinsic after the cluster exists")
            paths = [v for k, v in _walk(state.get("Parameters", {})) if k.endswith(".$")]
            if not all(p == "$.cluster.ClusterId" or p.startswith("$.args.") for p in paths):
                problems.append(f"{current}: reads {paths}")
        todo += successors(state)
    return problems


def _walk(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_every_emr_step_catches_all_errors_into_terminate(name):
    document = definition_of(name)
    assert only(document["States"], ADD_STEP)
    assert catch_problems(document) == []


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_every_path_to_a_fail_after_the_cluster_exists_passes_a_terminate(name):
    assert fail_path_problems(definition_of(name)) == []


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_after_the_cluster_exists_no_state_evaluates_expressions_that_could_fail(name):
    assert post_cluster_problems(definition_of(name)) == []


def test_the_graph_checks_find_a_step_that_fails_without_terminating():
    import copy

    document = definition_of("training")
    broken = copy.deepcopy(document)
    broken["States"]["Train decoder"]["Catch"][0]["Next"] = "Pipeline failed"
    assert catch_problems(broken) and fail_path_problems(broken)
    no_catch = copy.deepcopy(document)
    del no_catch["States"]["Evaluate"]["Catch"]
    assert catch_problems(no_catch) and post_cluster_problems(no_catch)
    late_pass = copy.deepcopy(document)
    late_pass["States"]["Evaluate"]["Parameters"]["Step"]["HadoopJarStep"]["Args.$"] = "States.Array($.config.x)"
    assert post_cluster_problems(late_pass)


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_terminate_and_steps_use_the_cluster_id_from_create_cluster(name):
    states = definition_of(name)["States"]
    (create,) = only(states, CREATE)
    result_path = states[create]["ResultPath"]
    assert result_path == "$.cluster"
    for state_name in only(states, TERMINATE) + only(states, ADD_STEP):
        assert states[state_name]["Parameters"]["ClusterId.$"] == f"{result_path}.ClusterId", state_name
        assert states[state_name].get("ResultPath", "$") is None, "results are discarded, keeping $.cluster and $.error"


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_no_execution_timeout_and_keep_alive_cluster_with_idle_net(name):
    document = definition_of(name)
    assert "TimeoutSeconds" not in document, "an execution timeout would stop it without terminating the cluster"
    (create,) = only(document["States"], CREATE)
    parameters = document["States"][create]["Parameters"]
    assert parameters["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert parameters["AutoTerminationPolicy"]["IdleTimeout"] > 0


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_intrinsic_fields_stay_within_the_nesting_limit(name):
    for key, value in _walk(definition_of(name)):
        if isinstance(value, str) and value.startswith("States."):
            assert asl.count_intrinsics(value) <= 10, key


# --- step arguments come from the jobs' parsers --------------------------------------------


@pytest.mark.parametrize("pipeline_name,step_key", [(p.name, s.key) for p in pipelines().values() for s in p.steps])
def test_step_options_exist_in_the_jobs_parser_and_cover_required_ones(pipeline_name, step_key):
    step = next(s for s in pipelines()[pipeline_name].steps if s.key == step_key)
    parser = parser_or_skip(step.job)
    pieces = job_arguments(step.job, dict(step.options), parser)
    assert pieces


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_concrete_step_arguments_parse_with_each_jobs_parser(name):
    from captioning.aws.launch import job_argv

    planned = plan(name, example_input(name), DEPLOYMENT)
    assert [s.config["Name"] for s in planned.steps] == [s.job for s in pipelines()[name].steps]
    for step in planned.steps:
        parser = parser_or_skip(step.config["Name"])
        check_argv(step.config["Name"], job_argv(step.args, step.config["Name"]), parser)


def test_the_generator_refuses_options_the_parser_does_not_know():
    parser = argparse.ArgumentParser(prog="demo")
    parser.add_argument("--input", nargs="+", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--search", choices=("greedy", "beam"), default="beam")
    parser.add_argument("--beam-width", type=int, default=3)
    parser.add_argument("--recaption", action="store_true")
    good = {"--input": Splice(Ref("$.config.inputs")), "--output": Ref("$.config.output")}
    assert job_arguments("demo", good, parser) == ["--input", Splice(Ref("$.config.inputs")), "--output", Ref("$.config.output")]
    assert job_arguments("demo", {**good, "--beam-width": 5, "--recaption": True}, parser)[-3:] == ["--beam-width", "5", "--recaption"]
    assert "--recaption" not in job_arguments("demo", {**good, "--recaption": False}, parser)
    refused = [
        ({**good, "--bogus": "x"}, "unknown option --bogus"),
        ({"--output": "s3://o"}, "required option --input"),
        ({**good, "--search": "beem"}, "not one of"),
        ({**good, "--beam-width": "wide"}, "not accepted"),
        ({**good, "--recaption": "yes"}, "flag takes True or False"),
        ({**good, "--input": Ref("$.config.inputs")}, "takes several values"),
        ({**good, "--output": ["a", "b"]}, "takes one value"),
        ({**good, "--input": []}, "at least one value"),
    ]
    for options, message in refused:
        with pytest.raises(StepArgumentError, match=message):
            job_arguments("demo", options, parser)


def test_a_step_with_an_unknown_option_breaks_generation():
    import dataclasses

    pipeline = pipelines()["training"]
    step = pipeline.steps[0]
    parser_or_skip(step.job)
    broken = dataclasses.replace(step, options=step.options + (("--no-such-option", "x"),))
    with pytest.raises(StepArgumentError, match="unknown option --no-such-option"):
        build(dataclasses.replace(pipeline, steps=(broken,) + pipeline.steps[1:]), strict=True)


def test_check_argv_reports_the_parsers_own_message():
    parser = argparse.ArgumentParser(prog="demo")
    parser.add_argument("--n", type=int)
    assert check_argv("demo", ["--n", "3"], parser).n == 3
    with pytest.raises(StepArgumentError, match="invalid int value"):
        check_argv("demo", ["--n", "x"], parser)


# --- what the machines run for an input ----------------------------------------------------


def test_training_argv_per_step_for_an_input():
    argv = argv_per_step("training", {"artifacts_version": "v7", "dataset": "s3://d/flickr8k", "output": "s3://o/run", "backbone_weights": "s3://w/resnet.h5", "epochs": 5}, DEPLOYMENT)
    assert list(argv) == ["Prepare captions", "Extract features", "Train decoder", "Evaluate"]
    submit = ["spark-submit", "--master", "yarn", "--deploy-mode", "cluster"]
    assert argv["Prepare captions"] == submit + [
        "--conf", "spark.task.resource.gpu.amount=0.5",
        "s3://artifacts-bucket/artifacts/v7/jobs/prepare_captions.py", "--dataset", "s3://d/flickr8k", "--output", "s3://o/run/prepared",
    ]
    assert argv["Extract features"][-9:] == [
        "s3://artifacts-bucket/artifacts/v7/jobs/extract_features.py",
        "--input", "s3://d/flickr8k", "--output", "s3://o/run/features/resnet50", "--backbone", "resnet50", "--weights", "s3://w/resnet.h5",
    ]
    train = argv["Train decoder"]
    assert "spark.driver.resource.gpu.amount=1" in train
    assert train[train.index("--epochs") + 1] == "5" and train[train.index("--batch-size") + 1] == "64"
    assert train[train.index("--workers") + 1] == "1"
    assert "spark.dynamicAllocation.enabled=false" in train and "spark.executor.instances=1" in train
    evaluate = argv["Evaluate"]
    assert evaluate[evaluate.index("--output") + 1] == "s3://o/run/evaluation"


def test_data_parallel_training_gets_one_executor_and_one_gpu_per_worker():
    argv = argv_per_step("training", {"artifacts_version": "v7", "dataset": "s3://d/flickr8k", "output": "s3://o/run", "backbone_weights": "none", "train_workers": 3}, DEPLOYMENT)
    train = argv["Train decoder"]
    confs = [train[i + 1] for i, piece in enumerate(train) if piece == "--conf"]
    assert "spark.executor.instances=3" in confs
    assert "spark.dynamicAllocation.enabled=false" in confs
    assert "spark.task.resource.gpu.amount=1" in confs
    assert train[train.index("--workers") + 1] == "3"
    assert train.index("--workers") > train.index("s3://artifacts-bucket/artifacts/v7/jobs/train_decoder.py")


def test_bulk_argv_splices_every_input_prefix_and_extra_arguments():
    argv = argv_per_step(
        "bulk_captioning",
        {"artifacts_version": "v7", "inputs": ["s3://a/x/", "s3://b/"], "model": "s3://o/run/model", "output_bucket": "o", "output_prefix": "captions",
         "caption_images_args": ["--recaption", "--backbone-weights", "s3://w/resnet.h5"], "beam_width": 5},
        DEPLOYMENT,
    )["Caption images"]
    script = argv.index("s3://artifacts-bucket/artifacts/v7/jobs/caption_images.py")
    assert argv[script + 1 :] == [
        "--input", "s3://a/x/", "s3://b/", "--model", "s3://o/run/model", "--output", "s3://o/captions",
        "--search", "beam", "--beam-width", "5", "--recaption", "--backbone-weights", "s3://w/resnet.h5",
    ]


def test_cluster_request_from_the_machine():
    planned = plan("training", example_input("training"), DEPLOYMENT, execution_name="run-1")
    cluster = planned.cluster
    config = ClusterConfig()
    assert cluster["Name"] == "captioning-training-run-1"
    assert cluster["ReleaseLabel"] == config.release_label and cluster["ReleaseLabel"].startswith("emr-7.")
    assert [a["Name"] for a in cluster["Applications"]] == ["Hadoop", "Spark"]
    assert (cluster["LogUri"], cluster["ServiceRole"], cluster["JobFlowRole"]) == ("s3://logs-bucket/emr/", "emr-service", "emr-profile")
    assert cluster["Instances"]["Ec2SubnetIds"] == ["subnet-0abc", "subnet-0def"]  # EMR picks the zone with capacity
    assert cluster["SecurityConfiguration"] == "emr-security"
    fleets = {f["InstanceFleetType"]: f for f in cluster["Instances"]["InstanceFleets"]}
    assert [c["InstanceType"] for c in fleets["MASTER"]["InstanceTypeConfigs"]] == ["m5.xlarge"]
    assert {c["InstanceType"] for c in fleets["CORE"]["InstanceTypeConfigs"]} == {"g4dn.xlarge", "g5.xlarge"}
    assert fleets["CORE"]["TargetOnDemandCapacity"] == 2 and fleets["CORE"]["TargetSpotCapacity"] == 0
    version = example_input("training")["artifacts_version"]
    (bootstrap,) = cluster["BootstrapActions"]
    assert bootstrap["ScriptBootstrapAction"] == {"Path": f"s3://artifacts-bucket/artifacts/{version}/bootstrap.sh", "Args": ["--artifacts", f"s3://artifacts-bucket/artifacts/{version}"]}
    assert {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"} in cluster["Tags"]
    classes = {c["Classification"]: c for c in cluster["Configurations"]}
    yarn = classes["yarn-site"]["Properties"]
    assert yarn["yarn.nodemanager.resource-plugins"] == "yarn.io/gpu" and yarn["yarn.resource-types"] == "yarn.io/gpu"
    assert yarn["yarn.nodemanager.linux-container-executor.cgroups.mount-path"] == config.cgroup_root
    executor = {c["Classification"]: c["Properties"] for c in classes["container-executor"]["Configurations"]}
    assert executor == {"gpu": {"module.enabled": "true"}, "cgroups": {"root": config.cgroup_root, "yarn-hierarchy": "yarn"}}
    assert classes["capacity-scheduler"]["Properties"]["yarn.scheduler.capacity.resource-calculator"].endswith("DominantResourceCalculator")
    spark = classes["spark-defaults"]["Properties"]
    assert spark["spark.executor.resource.gpu.amount"] == "1"
    assert spark["spark.executor.resource.gpu.discoveryScript"] == config.gpu_discovery_script
    (export,) = classes["spark-env"]["Configurations"]
    assert export["Properties"]["PYSPARK_PYTHON"] == "/opt/captioning/venv/bin/python"


def test_input_overrides_cluster_capacity_and_release():
    planned = plan("bulk_captioning", {**example_input("bulk_captioning"), "core_on_demand": 1, "core_spot": 4, "release_label": "emr-7.2.0"}, DEPLOYMENT)
    core = next(f for f in planned.cluster["Instances"]["InstanceFleets"] if f["InstanceFleetType"] == "CORE")
    assert (core["TargetOnDemandCapacity"], core["TargetSpotCapacity"]) == (1, 4)
    assert planned.cluster["ReleaseLabel"] == "emr-7.2.0"


@pytest.mark.parametrize(
    "name,change,message",
    [
        ("bulk_captioning", {"inputs": []}, "non-empty list"),
        ("training", {"output": "s3://o/run/"}, "must not end with '/'"),
        ("training", {"artifacts_version": "a/b"}, "must not contain '/'"),
    ],
)
def test_bad_inputs_stop_before_any_cluster(name, change, message):
    definition = definition_of(name)
    with pytest.raises(PlanError, match=message) as caught:
        simulate(definition, {**example_input(name), **change}, DEPLOYMENT)
    assert INVALID in str(caught.value)


def test_missing_and_unknown_input_fields_are_refused():
    data = example_input("training")
    with pytest.raises(PlanError, match="missing input field"):
        check_input("training", {k: v for k, v in data.items() if k != "dataset"})
    with pytest.raises(PlanError, match="unknown input field.*epoch"):
        check_input("training", {**data, "epoch": 3})
    definition = definition_of("training")  # the machine itself also fails before the cluster
    with pytest.raises(asl.AslError, match="dataset"):
        simulate(definition, {k: v for k, v in data.items() if k != "dataset"}, DEPLOYMENT)


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_example_inputs_run_to_the_end(name):
    planned = plan(name, example_input(name), DEPLOYMENT)
    assert planned.visited[-2:] == ("Terminate cluster", "Succeeded")


# --- packaging helpers -----------------------------------------------------------------------


def test_node_requirements_swap_tensorflow_for_gpu_nodes():
    requires = [
        "numpy<2,>=1.26", "boto3", 'pyspark<3.6,>=3.5; extra == "spark"', 'tensorflow-cpu<2.20,>=2.16; extra == "tf"',
        'keras>=3; extra == "tf"', 'pytest; extra == "test"', 'tomli; python_version < "3.11"',
    ]
    constraints = "# pins\ntensorflow_cpu==2.19.1\nkeras==3.15.1\n"
    out = node_requirements(requires, ("spark", "tf"), constraints)
    assert out["cpu"] == ["numpy<2,>=1.26", "boto3", "pyspark<3.6,>=3.5", "tensorflow-cpu<2.20,>=2.16", "keras>=3", 'tomli; python_version < "3.11"']
    assert out["gpu"][3] == "tensorflow[and-cuda]==2.19.1" and out["gpu"][:3] == out["cpu"][:3]
    assert pinned_version(constraints, "tensorflow-cpu") == "2.19.1"
    with pytest.raises(PackageError):
        pinned_version("numpy==1.26.4\n", "tensorflow-cpu")
    with pytest.raises(PackageError, match="tensorflow-cpu"):
        node_requirements(["numpy"], ("tf",), constraints)


def test_artifact_layout_refuses_version_names_with_slashes():
    with pytest.raises(ValueError):
        layout.ArtifactLayout("s3://b/artifacts", "a/b")
    assert layout.ArtifactLayout("s3://b/artifacts/", "v1").job("evaluate.py") == "s3://b/artifacts/v1/jobs/evaluate.py"


# --- the expression subset ---------------------------------------------------------------------


def test_intrinsic_quoting_round_trips_through_the_evaluator():
    awkward = "it's {braces} and \\ backslash"
    assert asl.evaluate(asl.call("Array", asl.quote(awkward)), {}) == [awkward]
    template = asl.call("Format", asl.quote_template("{}/x-{y}-{}"), "$.a", "$.b")
    assert asl.evaluate(template, {"a": "s3://p", "b": 3}) == "s3://p/x-{y}-3"


def test_paths_wildcards_flatten_and_result_paths():
    data = {"parts": [["a", "b"], [], ["c"]], "n": {"m": 1}}
    assert asl.read_path("$.parts[*][*]", data) == ["a", "b", "c"]
    assert asl.read_path("$.n.m", data) == 1
    with pytest.raises(asl.AslError):
        asl.read_path("$.n.missing", data)
    assert asl.write_path("$.n.k", data, 2)["n"] == {"m": 1, "k": 2}
    assert asl.write_path(None, data, 2) is data
    merged = asl.evaluate("States.JsonMerge($.d, $.i, false)", {"d": {"a": 1, "b": 2}, "i": {"b": 3}})
    assert merged == {"a": 1, "b": 3}


def test_substitution_requires_every_placeholder():
    assert asl.substitute('{"a": "${X}"}', {"X": "v"}) == '{"a": "v"}'
    with pytest.raises(asl.AslError, match="Y"):
        asl.substitute('"${X}${Y}"', {"X": "v"})


def test_fmt_and_ref_reject_malformed_templates():
    with pytest.raises(ValueError):
        Fmt("{}/{}", (Ref("$.a"),))
    with pytest.raises(ValueError):
        Ref("config.a")


# --- the bulk machine's output lease ---------------------------------------------------------


def lease_body(expires_at) -> str:
    return json.dumps({"holder": "run-7", "acquired_at": "2026-11-28T20:00:00Z", "renewed_at": "2026-11-28T21:00:00Z", "expires_at": expires_at, "period_seconds": 600})


def bulk_input(**changes) -> dict:
    return {**example_input("bulk_captioning"), "output_bucket": "out-bucket", "output_prefix": "captions/weekly", **changes}


def test_the_bulk_machine_reads_the_output_lease_right_before_creating_the_cluster():
    states = definition_of("bulk_captioning")["States"]
    (reader,) = only(states, GET_OBJECT)
    assert states["Flatten step arguments"]["Next"] == reader == READ_LEASE
    catches = {c["ErrorEquals"][0]: c["Next"] for c in states[reader]["Catch"]}
    assert catches == {"S3.NoSuchKeyException": "Create cluster", "States.ALL": LEASE_UNREADABLE}
    assert states[reader]["Next"] == LEASE_FREE and states[LEASE_FREE]["Default"] == "Create cluster"
    assert not only(definition_of("training")["States"], GET_OBJECT), "training outputs have no lease"


@pytest.mark.parametrize("prefix", ["captions", "a/b/c"])
def test_the_lease_is_read_at_the_output_folder_the_job_writes(prefix):
    seen = []

    def missing(b, k):
        seen.append((b, k))
        raise ObjectMissing(f"s3://{b}/{k}")

    planned = plan("bulk_captioning", bulk_input(output_prefix=prefix), DEPLOYMENT, read_object=missing)
    assert seen == [("out-bucket", f"{prefix}/_lease.json")] and planned.reads == (f"s3://out-bucket/{prefix}/_lease.json",)
    argv = planned.steps[0].args
    assert argv[argv.index("--output") + 1] == f"s3://out-bucket/{prefix}"  # the folder whose lease the job takes
    assert planned.visited[-3:] == ("Caption images", "Terminate cluster", "Succeeded") and LEASE_FREE not in planned.visited


def test_an_expired_lease_lets_the_run_start():
    planned = plan("bulk_captioning", bulk_input(), DEPLOYMENT, read_object=lambda b, k: lease_body("2020-01-01T00:00:00Z"))
    assert LEASE_FREE in planned.visited and "Create cluster" in planned.visited


@pytest.mark.parametrize("expires_at", ["2026-11-28T22:00:00.001Z", "2026-11-28T23:30:00+01:00"])
def test_a_lease_expiring_after_the_check_stops_the_run_before_any_cluster(expires_at):
    now = datetime(2026, 11, 28, 22, 0, 0, tzinfo=timezone.utc)
    definition = definition_of("bulk_captioning")
    with pytest.raises(PlanError, match="OutputLeaseHeld") as caught:
        simulate(definition, bulk_input(), DEPLOYMENT, read_object=lambda b, k: lease_body(expires_at), now=now)
    assert LEASE_HELD in str(caught.value) and "_lease.json" in str(caught.value)
    free = simulate(definition, bulk_input(), DEPLOYMENT, read_object=lambda b, k: lease_body("2026-11-28T21:59:59Z"), now=now)
    assert free.cluster["Name"].startswith("captioning-bulk-captioning-")


@pytest.mark.parametrize("body", [json.dumps({"holder": "run-7"}), lease_body("next tuesday"), lease_body(1764367200)])
def test_a_malformed_lease_stops_the_run_before_any_cluster(body):
    with pytest.raises(PlanError, match="OutputLeaseMalformed"):
        plan("bulk_captioning", bulk_input(), DEPLOYMENT, read_object=lambda b, k: body)


def test_an_unreadable_lease_stops_the_run_with_the_s3_error():
    def denied(bucket, key):
        raise ObjectUnreadable("S3.AccessDeniedException", f"s3://{bucket}/{key}: Access Denied")

    with pytest.raises(PlanError, match="Output lease not readable.*S3.AccessDeniedException.*Access Denied"):
        plan("bulk_captioning", bulk_input(), DEPLOYMENT, read_object=denied)


@pytest.mark.parametrize("changes", [{"output_bucket": "s3://out-bucket"}, {"output_bucket": "out-bucket/captions"}, {"output_prefix": "captions/"}, {"output_prefix": "/captions"}])
def test_bulk_output_must_be_a_bucket_and_a_prefix_without_outer_slashes(changes):
    with pytest.raises(PlanError, match="InvalidInput"):
        plan("bulk_captioning", bulk_input(**changes), DEPLOYMENT)


def test_a_lease_refusal_is_not_retried_but_training_steps_are():
    bulk = definition_of("bulk_captioning")["States"]
    assert "Retry" not in bulk["Caption images"], "a step's failure cannot be told apart from the job refusing a held lease"
    training = definition_of("training")["States"]
    assert all(training[s]["Retry"][0]["ErrorEquals"] == ["States.TaskFailed"] for s in only(training, ADD_STEP))


def test_intrinsics_for_subnets_and_lease_bodies():
    assert asl.evaluate("States.StringSplit('subnet-a,subnet-b', ',')", {}) == ["subnet-a", "subnet-b"]
    with pytest.raises(asl.AslError, match="empty pieces"):
        asl.evaluate("States.StringSplit('a,,b', ',')", {})
    assert asl.evaluate("States.StringToJson($.Body)", {"Body": '{"expires_at": "x"}'}) == {"expires_at": "x"}
