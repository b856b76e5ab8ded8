"""What each state machine runs: input fields and defaults, the steps, the cluster.

A ``Pipeline`` is data; ``definition.build`` turns it into Amazon States Language. The
step options are checked against each job's own parser when the definition is built.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from captioning.aws.cluster import ClusterConfig, driver_gpu_conf
from captioning.aws.steps import Fmt, Ref, SparkStep, Splice


def cfg(name: str) -> Ref:
    """An execution input field (after defaults are applied)."""
    return Ref(f"$.config.{name}")


ARTIFACTS_PREFIX = Fmt("{}/{}", (Ref("$.deployment.artifacts_uri"), cfg("artifacts_version")))


@dataclass(frozen=True)
class Pipeline:
    """One state machine: its input defaults, the steps and the cluster they run on.

    Checked before the cluster starts: ``required`` input fields (no default),
    ``nonempty`` lists, ``no_trailing_slash`` URIs and prefixes (other paths are appended
    to them), ``no_leading_slash`` prefixes, ``bucket_names`` and ``refused`` (field,
    value, why) values. ``lease`` names the input fields (bucket, prefix) of the output
    that holds a lease object (``s3://<bucket>/<prefix>/_lease.json``): the machine stops
    before creating a cluster while another run holds it. Every step also takes ``<step key>_args``, a list of extra job
    arguments appended as given (default empty), for options that are optional at run time.
    """

    name: str
    comment: str
    required: tuple[str, ...]
    defaults: tuple[tuple[str, Any], ...]
    steps: tuple[SparkStep, ...]
    nonempty: tuple[str, ...] = ()
    no_trailing_slash: tuple[str, ...] = ()
    no_leading_slash: tuple[str, ...] = ()
    bucket_names: tuple[str, ...] = ()
    refused: tuple[tuple[str, str, str], ...] = ()
    lease: tuple[str, str] | None = None  # (bucket field, prefix field) of the output
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def default_input(self) -> dict:
        return dict(self.defaults) | {f"{s.key}_args": [] for s in self.steps}


def _step(key: str, state: str, job_name: str, options: tuple, conf: tuple, timeout_s: int, retry: bool = True) -> SparkStep:
    return SparkStep(key=key, state=state, job=job_name, options=options, spark_conf=conf, extra=cfg(f"{key}_args"), timeout_s=timeout_s, retry=retry)


def training_conf(cluster: ClusterConfig) -> tuple:
    """Spark settings of the training step, for one worker (in the driver) or data-parallel.

    With ``train_workers`` N > 1 the job runs N TensorFlow workers as one barrier stage,
    which Spark refuses under dynamic allocation and which needs N task slots at once, each
    with a GPU of its own: static allocation of N executors, one GPU per task. With N = 1
    the same settings give the step's small Spark join one executor.
    """
    return (
        ("spark.task.resource.gpu.amount", "1"),
        ("spark.dynamicAllocation.enabled", "false"),
        ("spark.executor.instances", cfg("train_workers")),
    ) + driver_gpu_conf(cluster)


# The cluster subnets reach only S3 (no internet), so Keras cannot download ImageNet
# weights there: the file is staged in S3 once (emr/README.md) and named instead.
NO_DOWNLOAD = "the cluster has no internet access: stage the weights file in S3 (emr/README.md) and give its s3:// URI"


def training_pipeline(cluster: ClusterConfig = ClusterConfig()) -> Pipeline:
    output = cfg("output")
    prepared = Fmt("{}/prepared", (output,))
    features = Fmt("{}/features/{}", (output, cfg("backbone")))
    model = Fmt("{}/model", (output,))
    cpu_tasks = (("spark.task.resource.gpu.amount", "0.5"),)  # no TensorFlow on executors: two tasks share a GPU slot
    gpu_tasks = (("spark.task.resource.gpu.amount", "1"),)
    steps = (
        _step("prepare_captions", "Prepare captions", "prepare-captions", (("--dataset", cfg("dataset")), ("--output", prepared)), cpu_tasks, 2 * 3600),
        _step(
            "extract_features", "Extract features", "extract-features",
            (("--input", cfg("dataset")), ("--output", features), ("--backbone", cfg("backbone")), ("--weights", cfg("backbone_weights"))),
            gpu_tasks, 12 * 3600,
        ),
        _step(
            "train_decoder", "Train decoder", "train-decoder",
            (("--captions", prepared), ("--features", features), ("--output", model), ("--epochs", cfg("epochs")), ("--batch-size", cfg("batch_size")),
             ("--workers", cfg("train_workers"))),
            training_conf(cluster), 24 * 3600,
        ),
        _step(
            "evaluate", "Evaluate", "evaluate",
            (("--model", model), ("--features", features), ("--captions", prepared), ("--output", Fmt("{}/evaluation", (output,))),
             ("--search", cfg("search")), ("--beam-width", cfg("beam_width"))),
            cpu_tasks + driver_gpu_conf(cluster), 4 * 3600,
        ),
    )
    return Pipeline(
        name="training",
        comment="Prepare captions, extract CNN features, train the decoder and evaluate it on a transient GPU EMR cluster; the cluster is terminated on every path.",
        required=("artifacts_version", "dataset", "output", "backbone_weights"),
        defaults=(
            ("backbone", "resnet50"), ("epochs", 20), ("batch_size", 64), ("train_workers", 1),
            ("search", "beam"), ("beam_width", 3),
            ("release_label", cluster.release_label), ("core_on_demand", cluster.core_on_demand), ("core_spot", cluster.core_spot),
        ),
        steps=steps,
        no_trailing_slash=("output",),
        refused=(("backbone_weights", "imagenet", NO_DOWNLOAD),),
        cluster=cluster,
    )


def bulk_pipeline(cluster: ClusterConfig = ClusterConfig()) -> Pipeline:
    # No Retry: when another run holds the output's lease the job refuses to start, and
    # an EMR step's failure reaches the state machine only as States.TaskFailed with the
    # step's details as text, so a Retry could not tell that refusal from other failures.
    step = _step(
        "caption_images", "Caption images", "caption-images",
        (("--input", Splice(cfg("inputs"))), ("--model", cfg("model")), ("--output", Fmt("s3://{}/{}", (cfg("output_bucket"), cfg("output_prefix")))),
         ("--search", cfg("search")), ("--beam-width", cfg("beam_width"))),
        (("spark.task.resource.gpu.amount", "1"),), 24 * 3600, retry=False,
    )
    return Pipeline(
        name="bulk_captioning",
        comment="Caption every image under one or more bucket prefixes with a trained model on a transient GPU EMR cluster; the cluster is terminated on every path.",
        required=("artifacts_version", "inputs", "model", "output_bucket", "output_prefix"),
        defaults=(("search", "beam"), ("beam_width", 3), ("release_label", cluster.release_label),
                  ("core_on_demand", cluster.core_on_demand), ("core_spot", cluster.core_spot)),
        steps=(step,),
        nonempty=("inputs",),
        no_trailing_slash=("output_prefix",),
        no_leading_slash=("output_prefix",),
        bucket_names=("output_bucket",),
        lease=("output_bucket", "output_prefix"),
        cluster=cluster,
    )


def pipelines(cluster: ClusterConfig = ClusterConfig()) -> dict[str, Pipeline]:
    return {p.name: p for p in (training_pipeline(cluster), bulk_pipeline(cluster))}
