"""EMR requests as a local standalone cluster takes them: what the rehearsal rewrites.

A RunJobFlow request's core nodes and spark-defaults, an EMR step's ``spark-submit``
argument list rewritten for the local master (only what must differ on one machine), and
the cause a failed step reports to the state machine. Pure functions: no Spark, no AWS.
"""
from __future__ import annotations

STEP_TAIL = 40  # lines of a failed step's output kept in the task's cause

# cluster settings that only mean something on YARN or with GPUs, dropped on the local cluster
_DROPPED_CONF = ("resource.gpu", "memoryOverhead", "spark.yarn.", "spark.executor.cores", "spark.executor.instances")
_MEMORY_CONF = ("spark.driver.memory", "spark.executor.memory")


def spark_defaults(cluster_request: dict) -> dict[str, str]:
    """The spark-defaults classification of a RunJobFlow request."""
    for item in cluster_request.get("Configurations", []):
        if item.get("Classification") == "spark-defaults":
            return dict(item.get("Properties", {}))
    return {}


def core_nodes(cluster_request: dict) -> int:
    fleets = cluster_request.get("Instances", {}).get("InstanceFleets", [])
    return sum(int(f.get("TargetOnDemandCapacity", 0)) + int(f.get("TargetSpotCapacity", 0)) for f in fleets if f.get("InstanceFleetType") in ("CORE", "TASK"))


def local_conf(key: str, value: str, node_python: str, memory: str) -> str | None:
    """One Spark setting as the local cluster takes it; None when it has no local meaning."""
    if any(part in key for part in _DROPPED_CONF):
        return None
    if key in _MEMORY_CONF:
        return memory
    if key in ("spark.pyspark.python", "spark.pyspark.driver.python"):
        return node_python
    return value


def local_argv(args: list[str], defaults: dict[str, str], master: str, node_python: str, script: str, jars: list[str], memory: str, submit: str, local: dict[str, str] | None = None) -> list[str]:
    """An EMR step's ``spark-submit`` arguments for the local standalone cluster.

    Rewritten: the program (command-runner's ``spark-submit`` is the local one), ``--master``
    (the local master), ``--deploy-mode`` (client: a standalone cluster cannot run Python
    drivers in cluster mode), GPU, YARN and memory settings (no GPUs, small workers), the
    node Python, the entry script (downloaded from S3: spark-submit runs a local file),
    plus the S3A connector that EMRFS replaces on EMR. The job's own arguments are kept
    as they are.
    """
    if not args or args[0] != "spark-submit":
        raise ValueError(f"an EMR step here runs spark-submit through command-runner.jar, got {args[:1]}")
    settings = {k: v for k, v in ((k, local_conf(k, v, node_python, memory)) for k, v in defaults.items()) if v is not None}
    out = [submit]
    position, job_args = 1, None
    while position < len(args):
        arg = args[position]
        if arg == "--master" or arg == "--deploy-mode":
            position += 2
            continue
        if arg == "--conf":
            key, _, value = args[position + 1].partition("=")
            kept = local_conf(key, value, node_python, memory)
            if kept is None:
                settings.pop(key, None)
            else:
                settings[key] = kept
            position += 2
            continue
        if arg.endswith(".py") and not arg.startswith("-"):
            job_args = args[position + 1 :]
            break
        out.append(arg)
        position += 1
    if job_args is None:
        raise ValueError(f"no entry script (*.py) in the step's arguments {args}")
    out[1:1] = ["--master", master, "--deploy-mode", "client", "--jars", ",".join(jars)]
    for key, value in (local or {}).items():
        settings.setdefault(key, value)
    for key, value in settings.items():
        out += ["--conf", f"{key}={value}"]
    out += ["--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1", "--conf", "spark.ui.enabled=false"]
    return out + [script, *job_args]


def failure_cause(step: str, code: int, output: str) -> str:
    """The cause a failed step reports: its ``error:`` line when it printed one, and the output's tail."""
    lines = output.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    head = f"step {step} failed (spark-submit exit {code})" + (f": {errors[-1]}" if errors else "")
    return head + "\n" + "\n".join(lines[-STEP_TAIL:])
