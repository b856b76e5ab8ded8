"""Each Step Functions step's exact spark-submit arguments, run locally on local Spark.

The training state machine is simulated for an execution input (captioning.aws.plan), and
every step's job script and arguments after it are handed to the same job's main(): the
definitions cannot drift from the jobs without this test failing.
"""
import importlib
import os

from captioning.aws.plan import argv_per_step
from captioning.aws.deployment import Deployment

DEPLOYMENT = Deployment("s3://artifacts-bucket/artifacts", "s3://logs-bucket/emr/", "emr-service", "emr-profile", "subnet-0abc", "emr-security")


def job_and_arguments(argv: list[str]) -> tuple[str, list[str]]:
    """(job module name, its arguments) from a spark-submit argument list."""
    script = next(i for i, arg in enumerate(argv) if arg.endswith(".py"))
    return os.path.basename(argv[script])[: -len(".py")], argv[script + 1 :]


def test_training_pipeline_steps_run_locally(spark, sample_dataset, tmp_path):
    root, _ = sample_dataset
    execution_input = {
        "artifacts_version": "v1",
        "dataset": root,
        "output": str(tmp_path / "run"),
        "backbone": "mobilenetv3small",
        "backbone_weights": "none",
        "epochs": 1,
    }
    steps = argv_per_step("training", execution_input, DEPLOYMENT)
    names = [job_and_arguments(argv)[0] for argv in steps.values()]
    assert names == ["prepare_captions", "extract_features", "train_decoder", "evaluate"]
    for state, argv in steps.items():
        assert argv[0] == "spark-submit", state
        name, arguments = job_and_arguments(argv)
        if name == "prepare_captions":
            arguments += ["--min-count", "3"]  # the 80-image sample is too small for the default 10
        assert importlib.import_module(f"captioning.pipeline.{name}").main(arguments, spark=spark) == 0, state
    produced = sorted(os.listdir(tmp_path / "run"))
    assert produced, "the steps wrote nothing under the execution's output"
    assert any(os.path.exists(os.path.join(dirpath, "metrics.json")) for dirpath, _, _ in os.walk(tmp_path / "run"))
