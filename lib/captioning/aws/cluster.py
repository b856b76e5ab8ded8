"""The EMR cluster: instance fleets, GPU scheduling in YARN and Spark, the bootstrap action.

``cluster_parameters`` returns a ``RunJobFlow`` request. Fields given as ``Ref`` become
``Key.$`` JSONPath fields, which is how the state machines' createCluster Parameters
take values from the execution; with plain values it is the request ``run_job_flow``
takes. Both the state machines and ``captioner launch`` (through ``plan``) use it.

GPU scheduling follows the Amazon EMR Release Guide's example for EMR 7.x ("Use the
Nvidia RAPIDS Accelerator for Apache Spark"), without the RAPIDS SQL plugin itself:
YARN's GPU resource plugin with the LinuxContainerExecutor and a cgroup v1 devices mount
(made by emr/bootstrap.sh at ``cgroup_root``), the DominantResourceCalculator so GPUs
count in scheduling, and Spark's resource scheduling (one GPU per executor, the task's
share per step, and the project's own GPU discovery script, which the bootstrap installs
from the artifacts). Every core and task instance type must have an NVIDIA GPU: the
NodeManager's GPU plugin is configured on every node.

The memory settings are sized for the 16 GiB "xlarge" GPU instances (g4dn.xlarge,
g5.xlarge), of which YARN gets roughly 12 GiB: executor 4g + 3g overhead (TensorFlow runs
in the Python workers, outside the JVM heap), a 2g + 1g driver, so a driver and an
executor fit on one node. Change them together with the instance types.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from captioning.aws.steps import Ref

Field = Union[str, int, Ref, list]

MANAGED_POLICY_TAG = ("for-use-with-amazon-emr-managed-policies", "true")  # AmazonEMRServicePolicy_v2 acts only on tagged resources
# Every cluster carries this tag; the template lets the state machine role create only
# clusters tagged with it and add steps to or terminate only clusters that have it.
PROJECT_TAG = ("project", "captioning")


@dataclass(frozen=True)
class ClusterConfig:
    """Cluster shape and node settings; the defaults are the documented, reviewed setup."""

    release_label: str = "emr-7.5.0"
    applications: tuple[str, ...] = ("Hadoop", "Spark")
    primary_types: tuple[str, ...] = ("m5.xlarge",)
    core_types: tuple[str, ...] = ("g4dn.xlarge", "g5.xlarge")
    core_on_demand: int = 2  # GPUs (one per node with these types): a driver GPU and executors
    core_spot: int = 0
    task_types: tuple[str, ...] = ("g4dn.xlarge", "g5.xlarge")
    task_spot: int = 0  # 0: no task fleet
    spot_timeout_minutes: int = 20  # then on-demand instead
    ebs_root_volume_gb: int = 40  # the CUDA wheels of tensorflow[and-cuda] need several GB in /opt
    idle_timeout_s: int = 3600  # EMR ends a cluster idle this long: the net under every failure path
    venv: str = "/opt/captioning/venv"  # created by emr/bootstrap.sh (its --venv default)
    cgroup_root: str = "/spark-rapids-cgroup"  # mounted by emr/bootstrap.sh (its CGROUP_ROOT)
    gpu_discovery_script: str = "/opt/captioning/gpu-discovery.sh"  # installed by emr/bootstrap.sh (its DISCOVERY default)
    executor_cores: int = 2
    executor_memory: str = "4g"
    executor_memory_overhead: str = "3g"
    driver_memory: str = "2g"
    driver_memory_overhead: str = "1g"

    @property
    def python(self) -> str:
        return f"{self.venv}/bin/python"


def configurations(config: ClusterConfig) -> list[dict]:
    """The cluster's application configurations (classifications)."""
    return [
        {
            "Classification": "yarn-site",
            "Properties": {
                "yarn.nodemanager.resource-plugins": "yarn.io/gpu",
                "yarn.resource-types": "yarn.io/gpu",
                "yarn.nodemanager.resource-plugins.gpu.allowed-gpu-devices": "auto",
                "yarn.nodemanager.resource-plugins.gpu.path-to-discovery-executables": "/usr/bin",
                "yarn.nodemanager.linux-container-executor.cgroups.mount": "true",
                "yarn.nodemanager.linux-container-executor.cgroups.mount-path": config.cgroup_root,
                "yarn.nodemanager.linux-container-executor.cgroups.hierarchy": "yarn",
                "yarn.nodemanager.container-executor.class": "org.apache.hadoop.yarn.server.nodemanager.LinuxContainerExecutor",
            },
        },
        {
            "Classification": "container-executor",
            "Properties": {},
            "Configurations": [
                {"Classification": "gpu", "Properties": {"module.enabled": "true"}},
                {"Classification": "cgroups", "Properties": {"root": config.cgroup_root, "yarn-hierarchy": "yarn"}},
            ],
        },
        {
            "Classification": "capacity-scheduler",
            "Properties": {"yarn.scheduler.capacity.resource-calculator": "org.apache.hadoop.yarn.util.resource.DominantResourceCalculator"},
        },
        {
            "Classification": "spark-defaults",
            "Properties": {
                "spark.executor.resource.gpu.amount": "1",
                "spark.executor.resource.gpu.discoveryScript": config.gpu_discovery_script,
                "spark.task.resource.gpu.amount": "1",  # steps that do not run TensorFlow on executors lower it
                "spark.executor.cores": str(config.executor_cores),
                "spark.executor.memory": config.executor_memory,
                "spark.executor.memoryOverhead": config.executor_memory_overhead,
                "spark.driver.memory": config.driver_memory,
                "spark.driver.memoryOverhead": config.driver_memory_overhead,
                "spark.pyspark.python": config.python,
                "spark.pyspark.driver.python": config.python,
                "spark.yarn.maxAppAttempts": "1",  # reruns are the state machine's Retry, not YARN's
            },
        },
        {
            "Classification": "spark-env",
            "Properties": {},
            "Configurations": [
                {"Classification": "export", "Properties": {"PYSPARK_PYTHON": config.python, "PYSPARK_DRIVER_PYTHON": config.python}},
            ],
        },
    ]


def driver_gpu_conf(config: ClusterConfig) -> tuple[tuple[str, str], ...]:
    """spark-submit settings giving the driver (YARN cluster mode) a GPU and more memory.

    For steps whose TensorFlow work runs in the driver: training and evaluation.
    """
    return (
        ("spark.driver.resource.gpu.amount", "1"),
        ("spark.driver.resource.gpu.discoveryScript", config.gpu_discovery_script),
        ("spark.driver.memory", config.executor_memory),
        ("spark.driver.memoryOverhead", config.executor_memory_overhead),
    )


def _put(target: dict, key: str, value: Field) -> None:
    if isinstance(value, Ref):
        target[f"{key}.$"] = value.path
    else:
        target[key] = value


def _fleet(name: str, role: str, types: tuple[str, ...], on_demand: Field, spot: Field, config: ClusterConfig) -> dict:
    fleet: dict = {"Name": name, "InstanceFleetType": role}
    _put(fleet, "TargetOnDemandCapacity", on_demand)
    if role != "MASTER":
        _put(fleet, "TargetSpotCapacity", spot)
    fleet["InstanceTypeConfigs"] = [{"InstanceType": t, "WeightedCapacity": 1} for t in types]
    if role != "MASTER":
        fleet["LaunchSpecifications"] = {
            "OnDemandSpecification": {"AllocationStrategy": "lowest-price"},
            "SpotSpecification": {
                "TimeoutDurationMinutes": config.spot_timeout_minutes,
                "TimeoutAction": "SWITCH_TO_ON_DEMAND",
                "AllocationStrategy": "capacity-optimized",
            },
        }
    return fleet


def cluster_parameters(
    config: ClusterConfig,
    *,
    name: Field,
    release_label: Field,
    bootstrap_path: Field,
    bootstrap_args: Field,
    log_uri: Field,
    service_role: Field,
    instance_profile: Field,
    subnet_ids: Field,
    security_configuration: Field,
    core_on_demand: Field,
    core_spot: Field,
    tags: tuple[tuple[str, str], ...] = (),
) -> dict:
    """A RunJobFlow request (``Key.$`` fields where a value is a ``Ref``).

    The cluster stays up between steps (KeepJobFlowAliveWhenNoSteps) because steps are
    added one at a time; whoever creates it must terminate it, and the idle timeout ends
    it if nobody does.
    """
    fleets = [
        _fleet("Primary", "MASTER", config.primary_types, 1, 0, config),
        _fleet("Core GPU", "CORE", config.core_types, core_on_demand, core_spot, config),
    ]
    if config.task_spot:
        fleets.append(_fleet("Task GPU", "TASK", config.task_types, 0, config.task_spot, config))
    instances: dict = {"KeepJobFlowAliveWhenNoSteps": True, "TerminationProtected": False, "InstanceFleets": fleets}
    _put(instances, "Ec2SubnetIds", subnet_ids)  # instance fleets: EMR picks the subnet (zone) with capacity
    bootstrap: dict = {}
    _put(bootstrap, "Path", bootstrap_path)
    _put(bootstrap, "Args", bootstrap_args)
    request: dict = {}
    _put(request, "Name", name)
    _put(request, "ReleaseLabel", release_label)
    request["Applications"] = [{"Name": a} for a in config.applications]
    _put(request, "LogUri", log_uri)
    _put(request, "ServiceRole", service_role)
    _put(request, "JobFlowRole", instance_profile)
    _put(request, "SecurityConfiguration", security_configuration)
    request["VisibleToAllUsers"] = True
    request["EbsRootVolumeSize"] = config.ebs_root_volume_gb
    request["AutoTerminationPolicy"] = {"IdleTimeout": config.idle_timeout_s}
    request["Instances"] = instances
    request["BootstrapActions"] = [{"Name": "captioning environment", "ScriptBootstrapAction": bootstrap}]
    request["Configurations"] = configurations(config)
    request["Tags"] = [{"Key": k, "Value": v} for k, v in (MANAGED_POLICY_TAG, *tags)]
    return request
