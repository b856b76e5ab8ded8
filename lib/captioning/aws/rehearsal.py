"""``captioner rehearse`` / ``make rehearse``: both state machines executed locally, end to end.

Nothing is deployed and no AWS account is used. The definitions are rendered as the
stack deploys them (the generator's documents with the stack's ``${...}`` values filled),
and a real ASL interpreter (:mod:`captioning.aws.interpreter`) executes them. Its Task
states are answered by :class:`LocalAws`, which does locally what the AWS service would:

* ``createCluster.sync``: a Spark standalone cluster on 127.0.0.1 with the requested core
  nodes as workers (scaled down to this machine), and the node environment installed from
  the uploaded artifacts: the bootstrap action's ``--artifacts`` version folder is read
  from S3, its manifest names the project wheel, which is installed with ``pip --no-deps``
  into the node's virtual environment, as the bootstrap's last step does;
* ``addStep.sync``: the step's own ``spark-submit`` argument list run against that
  cluster, with only what must differ on one machine rewritten (:func:`captioning.aws.local_steps.local_argv`); a
  non-zero exit is the step's failure (``States.TaskFailed``, the driver's ``error:``
  line and the tail of its output as the cause);
* ``terminateCluster.sync``: the cluster stopped;
* ``aws-sdk:s3:getObject``: the object read from the local S3 server
  (``S3.NoSuchKeyException`` when missing).

The run: a local S3 server with the stack's four buckets, the project deployed to the
artifacts bucket by ``captioning.aws.deploy``, the sample dataset in the data bucket, the
training machine started with emr/examples/training-input.json (its placeholders filled),
then the bulk machine on a folder of new images with emr/examples/bulk-captioning-input.json.
It prints each execution's history and where the results are, and copies the output
bucket into the work folder (the server keeps nothing once stopped).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from captioning.aws.interpreter import ROOT, Execution, TaskError, run_execution
from captioning.aws.local_steps import core_nodes, failure_cause, local_argv, spark_defaults
from captioning.errors import InputError

LOG = logging.getLogger("rehearsal")

DATA, ARTIFACTS, OUTPUT, LOGS = "captioning-data", "captioning-artifacts", "captioning-output", "captioning-logs"
BUCKETS = (DATA, ARTIFACTS, OUTPUT, LOGS)
VERSION = "rehearsal"
EXAMPLES = ROOT / "emr" / "examples"
# what the examples' placeholders stand for here
PLACEHOLDERS = {"REPLACE-with-the-version-given-to-captioner-deploy": VERSION, "REPLACE-data-bucket": DATA, "REPLACE-output-bucket": OUTPUT}


@dataclass(frozen=True)
class RehearsalConfig:
    workdir: str
    images: int = 40  # sample dataset size: a few seconds per stage on 2 cores
    new_images: int = 8  # the "bucket of new images" the bulk machine captions
    epochs: int = 2
    seed: int = 0
    max_workers: int = 2  # core nodes become at most this many local workers, 1 core each
    worker_memory: str = "2g"
    job_memory: str = "1g"  # spark.driver.memory and spark.executor.memory on the local cluster
    step_timeout_s: float = 900.0
    # short-lived JVMs on a few cores: the quick JIT tier and one GC thread start faster (unless a step sets its own)
    jvm_options: str = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    # the examples ask for resnet50 with a weights file and 20 epochs; a rehearsal proves the path, not the model
    training_overrides: dict = field(default_factory=lambda: {
        "backbone": "mobilenetv3small", "backbone_weights": "none", "search": "greedy", "batch_size": 32,
        "extract_features_args": ["--batch-size", "16", "--images-per-partition", "16"],
        "train_decoder_args": ["--units", "32", "--hidden-units", "64", "--embedding-dim", "16", "--learning-rate", "0.01"],
        "prepare_captions_args": ["--min-count", "3"],
        "evaluate_args": ["--no-coco"],
    })
    bulk_overrides: dict = field(default_factory=lambda: {"search": "greedy", "caption_images_args": ["--batch-size", "8", "--images-per-partition", "16"]})


def example_input(name: str, overrides: dict | None = None) -> dict:
    """emr/examples/<name>.json with its placeholders filled for the rehearsal's buckets."""
    text = (EXAMPLES / f"{name}.json").read_text()
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    document = json.loads(text)
    leftover = [key for key, value in document.items() if "REPLACE" in json.dumps(value)]
    if leftover:
        raise InputError(f"emr/examples/{name}.json: placeholder(s) the rehearsal does not know in {', '.join(leftover)}")
    return {**document, **(overrides or {})}


def deployment():
    from captioning.aws.deployment import Deployment

    return Deployment(f"s3://{ARTIFACTS}/artifacts", f"s3://{LOGS}/emr/", "EMR_DefaultRole", "EMR_EC2_DefaultRole", "subnet-local", "captioning-rehearsal")


def rendered_definition(pipeline: str) -> dict:
    """The definition as the stack deploys it: generated, ``${...}`` filled from the deployment."""
    from captioning.aws import asl
    from captioning.aws.definition import build
    from captioning.aws.pipelines import pipelines

    document, _ = build(pipelines()[pipeline])
    return json.loads(asl.substitute(json.dumps(document), deployment().substitutions()))


@dataclass
class LocalCluster:
    cluster_id: str
    standalone: Any  # captioning.cluster.standalone.StandaloneCluster
    node_python: str
    defaults: dict[str, str]
    folder: Path
    steps: int = 0


class LocalAws:
    """Answers the Task states' calls locally (see the module docstring); ``close`` stops every cluster."""

    def __init__(self, config: RehearsalConfig, step_hook: Callable[[str, subprocess.Popen], None] | None = None):
        self.config = config
        self.root = Path(config.workdir).resolve()
        self.clusters: dict[str, LocalCluster] = {}
        self.created = 0
        self.terminated: list[str] = []
        self.steps: list[tuple[str, list[str]]] = []  # (cluster id, the step's EMR arguments) of every step added
        self.step_hook = step_hook  # called with (state name, process) when a step starts: failure injection in tests

    def __call__(self, state: str, resource: str, parameters: Any) -> Any:
        from captioning.aws.definition import ADD_STEP, CREATE, GET_OBJECT, TERMINATE

        if resource == CREATE:
            return self.create_cluster(parameters)
        if resource == ADD_STEP:
            return self.add_step(state, parameters)
        if resource == TERMINATE:
            return self.terminate_cluster(parameters)
        if resource == GET_OBJECT:
            return self.get_object(parameters)
        raise TaskError("States.TaskFailed", f"{state}: the rehearsal has no local handler for {resource}")

    # --- S3 -------------------------------------------------------------------------------
    def get_object(self, parameters: dict) -> dict:
        from captioning.store import storage

        bucket, key = parameters["Bucket"], parameters["Key"]
        client = storage.s3_client()
        try:
            response = client.get_object(Bucket=bucket, Key=key)
        except client.exceptions.NoSuchKey:
            raise TaskError("S3.NoSuchKeyException", f"The specified key does not exist. (Bucket {bucket}, Key {key})") from None
        except Exception as error:  # noqa: BLE001 - any other S3 answer is the task's failure, as in AWS
            raise TaskError("S3.S3Exception", str(error)) from None
        body = response["Body"].read().decode()
        return {"Body": body, "ContentLength": len(body), "ETag": response.get("ETag", "")}

    # --- EMR ------------------------------------------------------------------------------
    def node_environment(self, bootstrap_args: list[str]) -> str:
        """The bootstrap's environment for an artifacts version: the project wheel from S3 on this machine's dependencies.

        The dependencies are not downloaded from the artifacts' wheelhouse (several hundred
        MB): the node's virtual environment sees this installation's site-packages (a .pth
        line), pinned by the same constraints. The project itself comes only from the
        uploaded wheel, installed once per version like the bootstrap's last step.
        """
        from captioning.aws import layout
        from captioning.store import storage

        if "--artifacts" not in bootstrap_args:
            raise TaskError("States.TaskFailed", f"bootstrap action without --artifacts: {bootstrap_args}")
        artifacts = bootstrap_args[bootstrap_args.index("--artifacts") + 1].rstrip("/")
        manifest_uri = f"{artifacts}/{layout.MANIFEST}"
        if not storage.exists(manifest_uri):
            raise TaskError("States.TaskFailed", f"bootstrap action failed: {manifest_uri} does not exist (was the version deployed?)")
        manifest = json.loads(storage.read_text(manifest_uri))
        wheel_uri = f"{artifacts}/{manifest['wheel']}"
        sha = manifest["files"][manifest["wheel"]]["sha256"]
        venv = self.root / "nodes" / sha[:16] / "venv"
        python = venv / "bin" / "python"
        if (venv / ".installed").exists():
            return str(python)
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True).stdout.strip()
        Path(site, "node-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        wheel = venv.parent / os.path.basename(manifest["wheel"])
        wheel.write_bytes(storage.read_bytes(wheel_uri))
        installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--disable-pip-version-check", "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True)
        if installed.returncode != 0:
            raise TaskError("States.TaskFailed", f"bootstrap action failed installing {wheel_uri}: {installed.stderr.strip()[-2000:]}")
        (venv / ".installed").write_text(wheel_uri + "\n")
        return str(python)

    def create_cluster(self, request: dict) -> dict:
        from captioning.cluster.standalone import ClusterConfig, StandaloneCluster, WorkerSpec

        self.created += 1
        cluster_id = f"j-LOCAL{self.created:03d}"
        actions = request.get("BootstrapActions", [])
        node_python = self.node_environment(actions[0]["ScriptBootstrapAction"].get("Args", [])) if actions else sys.executable
        workers = max(1, min(core_nodes(request), self.config.max_workers))
        folder = self.root / "clusters" / cluster_id
        folder.mkdir(parents=True, exist_ok=True)
        standalone = StandaloneCluster(ClusterConfig(root=str(folder), workers=tuple(WorkerSpec(1, self.config.worker_memory) for _ in range(workers))))
        try:
            standalone.start()
        except Exception as error:
            standalone.stop()
            raise TaskError("States.TaskFailed", f"the cluster did not start: {error}") from None
        self.clusters[cluster_id] = LocalCluster(cluster_id, standalone, node_python, spark_defaults(request), folder)
        LOG.info("%s: %s with %d worker(s), node Python %s", cluster_id, standalone.master_url, workers, node_python)
        return {"ClusterId": cluster_id, "ClusterArn": f"arn:aws:elasticmapreduce:local:000000000000:cluster/{cluster_id}"}

    def add_step(self, state: str, parameters: dict) -> dict:
        from captioning.cluster.session import s3a_jars
        from captioning.cluster.standalone import spark_home, spark_submit
        from captioning.store import storage

        cluster = self.clusters.get(parameters["ClusterId"])
        if cluster is None:
            raise TaskError("EMR.AmazonElasticMapReduceException", f"cluster {parameters['ClusterId']} is not running")
        step = parameters["Step"]
        args = list(step["HadoopJarStep"]["Args"])
        self.steps.append((cluster.cluster_id, args))
        cluster.steps += 1
        step_id = f"s-LOCAL{cluster.steps:03d}"
        folder = cluster.folder / "steps" / step_id
        folder.mkdir(parents=True, exist_ok=True)
        script_uri = next((a for a in args if a.endswith(".py") and not a.startswith("-")), None)
        if script_uri is None or not storage.exists(script_uri):
            raise TaskError("States.TaskFailed", f"step {step['Name']} failed: its script {script_uri} does not exist")
        script = folder / os.path.basename(script_uri)
        script.write_bytes(storage.read_bytes(script_uri))
        command = local_argv(args, cluster.defaults, cluster.standalone.master_url, cluster.node_python, str(script), s3a_jars(), self.config.job_memory, spark_submit(),
                             {"spark.driver.extraJavaOptions": self.config.jvm_options, "spark.executor.extraJavaOptions": self.config.jvm_options})
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "SPARK_HOME", "SPARK_CONF_DIR", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
        env.update(SPARK_HOME=spark_home(), SPARK_CONF_DIR=cluster.standalone.path("conf"), PYSPARK_PYTHON=cluster.node_python, PYSPARK_DRIVER_PYTHON=cluster.node_python, SPARK_LOCAL_IP="127.0.0.1", PYTHONNOUSERSITE="1")
        (folder / "command.json").write_text(json.dumps({"emr": args, "local": command}, indent=1))
        LOG.info("%s %s: %s", cluster.cluster_id, step_id, step["Name"])
        with open(folder / "output.log", "w") as log:
            process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            if self.step_hook is not None:
                threading.Thread(target=self.step_hook, args=(state, process), daemon=True).start()
            try:
                code = process.wait(timeout=self.config.step_timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise TaskError("States.Timeout", f"step {step['Name']} ran longer than {self.config.step_timeout_s:.0f}s") from None
            finally:
                _kill_group(process.pid)
        if code != 0:
            raise TaskError("States.TaskFailed", failure_cause(step["Name"], code, (folder / "output.log").read_text(errors="replace")))
        return {"StepId": step_id}

    def terminate_cluster(self, parameters: dict) -> dict:
        cluster = self.clusters.pop(parameters["ClusterId"], None)
        if cluster is not None:
            cluster.standalone.stop()
            self.terminated.append(cluster.cluster_id)
        return {}

    def running(self) -> list[str]:
        return sorted(self.clusters)

    def close(self) -> None:
        for cluster_id in list(self.clusters):
            self.terminate_cluster({"ClusterId": cluster_id})


def _kill_group(pid: int) -> None:
    """The step's process group (spark-submit's JVM and the Python driver it started), if anything is left."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def deploy_project(workdir: Path) -> dict:
    """``make package`` (the project's files; no node wheel sets) and ``captioner deploy`` to the artifacts bucket."""
    from captioning.aws.deploy import deploy
    from captioning.aws.package import build_dist

    dist = build_dist(ROOT, workdir / "dist" / "emr", workdir / "dist" / "wheelhouse", kinds=())
    deployed = deploy(deployment().artifacts_uri, VERSION, dist.root, kinds=(), force=True)
    return deployed.uris()


def upload_sample(config: RehearsalConfig) -> dict[str, str]:
    """The sample dataset into the data bucket, and a folder of new images; their URIs."""
    from captioning.data.sample.config import SampleConfig
    from captioning.data.sample.generate import IMAGE_FOLDER, generate_sample_dataset
    from captioning.store.local_s3 import upload_folder

    work = Path(config.workdir).resolve()
    sample, new = work / "sample", work / "new-images"
    for folder, count, seed in ((sample, config.images, config.seed), (new, config.new_images, config.seed + 1000)):
        marker = folder / ".sample.json"
        wanted = json.dumps({"images": count, "seed": seed})
        if not (marker.exists() and marker.read_text() == wanted):
            shutil.rmtree(folder, ignore_errors=True)
            generate_sample_dataset(str(folder), SampleConfig(num_images=count, seed=seed, workers=1))
            marker.write_text(wanted)
    uris = {"dataset": f"s3://{DATA}/flickr8k", "photos": f"s3://{DATA}/photos/new/"}
    upload_folder(str(sample), uris["dataset"])
    upload_folder(str(new / IMAGE_FOLDER), uris["photos"])
    return uris


def training_input(config: RehearsalConfig, uris: dict[str, str], run: str = "rehearsal") -> dict:
    return example_input("training-input", {"dataset": uris["dataset"], "output": f"s3://{OUTPUT}/runs/{run}", "epochs": config.epochs, **config.training_overrides})


def bulk_input(config: RehearsalConfig, uris: dict[str, str], model: str) -> dict:
    return example_input("bulk-captioning-input", {"inputs": [uris["photos"]], "model": model, **config.bulk_overrides})


def execute(pipeline: str, execution_input: dict, aws: LocalAws, name: str) -> Execution:
    """One execution of a project state machine; refuses fields ``captioner launch`` refuses."""
    from captioning.aws.plan import check_input

    check_input(pipeline, execution_input)
    return run_execution(rendered_definition(pipeline), execution_input, aws, name=name)


def launch_plan(pipeline: str, execution_input: dict, workdir: Path) -> dict:
    """``captioner launch <pipeline> --input ... --dry-run`` against the rehearsal's deployment: its run_job_flow request."""
    import contextlib
    import io

    from captioning.aws import launch

    path = workdir / f"launch-{pipeline}.json"
    path.write_text(json.dumps(execution_input, indent=1))
    names = ("artifacts_uri", "log_uri", "service_role", "instance_profile", "subnet_ids", "security_configuration")
    options = [item for name, value in zip(names, (getattr(deployment(), name) for name in names)) for item in (f"--{name.replace('_', '-')}", value)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = launch.main([pipeline, "--input", str(path), "--dry-run", "--name", "rehearsal", *options])
    if code != 0:
        raise InputError(f"captioner launch {pipeline} --dry-run refused the input: {err.getvalue().strip()}")
    return json.loads(out.getvalue())


def launch_steps(request: dict) -> list[list[str]]:
    return [step["HadoopJarStep"]["Args"] for step in request.get("Steps", [])]


def describe(execution: Execution) -> str:
    lines = [f"{execution.name}: {execution.status}" + (f" ({execution.error}: {execution.cause})" if execution.status != "SUCCEEDED" else "")]
    for record in execution.history():
        lines.append(f"  {record.seconds:8.1f}s  {record.name:<34} {record.outcome}")
    return "\n".join(lines)


def report_launch(pipeline: str, execution_input: dict, executed: list[list[str]], work: Path) -> None:
    """Say whether ``captioner launch`` plans the steps the state machine just ran (it should: one source)."""
    planned = launch_steps(launch_plan(pipeline, execution_input, work))
    same = planned == executed[: len(planned)] and len(planned) == len(executed)
    print(f"  captioner launch {pipeline} --dry-run plans {'the same' if same else 'DIFFERENT'} {len(planned)} step(s) as the execution ran")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="captioner rehearse", description="Run both Step Functions state machines locally: a real ASL interpreter, a Spark standalone cluster and a local S3 server. Deploys nothing.")
    parser.add_argument("--workdir", default="rehearsal-output", help="folder for the node environment, cluster logs and the copy of the output bucket (default rehearsal-output)")
    parser.add_argument("--images", type=int, default=RehearsalConfig.images, help=f"sample dataset size (default {RehearsalConfig.images})")
    parser.add_argument("--new-images", type=int, default=RehearsalConfig.new_images, help=f"new images the bulk machine captions (default {RehearsalConfig.new_images})")
    parser.add_argument("--epochs", type=int, default=RehearsalConfig.epochs, help=f"training epochs (default {RehearsalConfig.epochs})")
    return parser


def rehearse(config: RehearsalConfig) -> int:
    from captioning.store.local_s3 import LocalS3, download_prefix

    work = Path(config.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with LocalS3(buckets=BUCKETS, start_timeout=120) as server:
        print(f"local S3 server at {server.endpoint} with buckets {', '.join(BUCKETS)}")
        uris = deploy_project(work)
        print(f"deployed version {VERSION}: {uris['prefix']}")
        data = upload_sample(config)
        aws = LocalAws(config)
        try:
            inputs = training_input(config, data)
            training = execute("training", inputs, aws, "rehearsal-training")
            print(describe(training))
            report_launch("training", inputs, [args for _, args in aws.steps], work)
            executions = [training]
            if training.status == "SUCCEEDED":
                inputs = bulk_input(config, data, f"s3://{OUTPUT}/runs/rehearsal/model")
                before = len(aws.steps)
                bulk = execute("bulk_captioning", inputs, aws, "rehearsal-bulk")
                print(describe(bulk))
                report_launch("bulk_captioning", inputs, [args for _, args in aws.steps[before:]], work)
                executions.append(bulk)
        finally:
            aws.close()
        copy = work / OUTPUT
        shutil.rmtree(copy, ignore_errors=True)
        download_prefix(f"s3://{OUTPUT}", str(copy))
    print()
    print(f"rehearsal finished in {time.time() - started:.0f}s; the output bucket {OUTPUT} is copied to {copy}")
    print(f"  model        s3://{OUTPUT}/runs/rehearsal/model")
    print(f"  evaluation   s3://{OUTPUT}/runs/rehearsal/evaluation/summary.md")
    print(f"  captions     s3://{OUTPUT}/captions")
    print(f"  gallery      {copy / 'captions' / 'gallery.html'}")
    print(f"  clusters     {work / 'clusters'} (each step's command and output)")
    return 0 if all(e.status == "SUCCEEDED" for e in executions) else 1


def main(argv: list[str] | None = None) -> int:
    from captioning.pipeline.runner import run_main

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("botocore", "aiobotocore", "s3fs", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = RehearsalConfig(workdir=args.workdir, images=args.images, new_images=args.new_images, epochs=args.epochs)
    return run_main(lambda: rehearse(config))


if __name__ == "__main__":
    raise SystemExit(main())
