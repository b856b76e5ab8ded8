#!/usr/bin/env bash
# Bootstrap action for every node of a captioning cluster (Amazon EMR 7.x, Amazon Linux 2023).
#
#   bootstrap.sh --artifacts s3://BUCKET/artifacts/VERSION [--venv /opt/captioning/venv]
#
# --artifacts is the version folder written by `captioner deploy`; this script reads
# constraints.txt, node-requirements-{cpu,gpu}.txt and wheels/*.whl from it (the names
# are defined in lib/captioning/aws/layout.py). It
#   1. mounts the cgroup v1 "devices" controller that YARN's GPU isolation needs on EMR 7,
#   2. installs Python 3.11 from the Amazon Linux 2023 repositories,
#   3. creates the virtual environment that spark-env's PYSPARK_PYTHON points at,
#   4. installs the pinned dependencies: tensorflow[and-cuda] on nodes with an NVIDIA GPU,
#      tensorflow-cpu elsewhere (same version, from constraints.txt), then the project wheel.
# Bootstrap actions run as the hadoop user before EMR installs Hadoop and Spark; stdout and
# stderr end up under <LogUri>/<cluster id>/node/<instance id>/bootstrap-actions/1/.
set -euo pipefail

ARTIFACTS=""
VENV="/opt/captioning/venv"
PYTHON="python3.11"
CGROUP_ROOT="/spark-rapids-cgroup"

log() { echo "[captioning-bootstrap $(date -u +%H:%M:%S)] $*"; }
die() { log "error: $*"; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --artifacts) ARTIFACTS="${2:?--artifacts needs a value}"; shift 2 ;;
    --venv) VENV="${2:?--venv needs a value}"; shift 2 ;;
    *) die "unknown argument: $1 (usage: bootstrap.sh --artifacts s3://BUCKET/PREFIX/VERSION [--venv PATH])" ;;
  esac
done
[[ -n "$ARTIFACTS" ]] || die "--artifacts s3://BUCKET/PREFIX/VERSION is required"
ARTIFACTS="${ARTIFACTS%/}"

# --- 1. cgroup v1 devices controller for YARN GPU isolation ---------------------------
# Source: the Amazon EMR Release Guide, "Use the Nvidia RAPIDS Accelerator for Apache
# Spark", bootstrap-action example for Amazon EMR 7.x: Amazon Linux 2023 boots with the
# unified cgroup v2 hierarchy, while YARN's GPU plugin (LinuxContainerExecutor with
# cgroups) restricts a container to its GPUs through the cgroup v1 "devices" controller,
# which must therefore be mounted by hand before the NodeManager starts. The mount point
# must match yarn-site yarn.nodemanager.linux-container-executor.cgroups.mount-path and
# container-executor cgroups.root (both CGROUP_ROOT; set in lib/captioning/aws/cluster.py).
# On EMR 6.x (Amazon Linux 2, cgroup v1) the same guide instead opens the permissions of
# /sys/fs/cgroup/devices and /sys/fs/cgroup/cpu,cpuacct; this script assumes EMR 7.x.
# Done on every node (harmless where no NodeManager runs), and skipped when already mounted.
if mountpoint -q "$CGROUP_ROOT/devices"; then
  log "$CGROUP_ROOT/devices is already mounted"
else
  log "mounting the cgroup v1 devices controller at $CGROUP_ROOT/devices"
  sudo mkdir -p "$CGROUP_ROOT/devices"
  sudo mount -t cgroup -o devices cgroupv1-devices "$CGROUP_ROOT/devices"
fi
sudo chmod a+rwx -R "$CGROUP_ROOT"

# --- 2. GPU or not --------------------------------------------------------------------
# nvidia-smi (the driver's tool) when present; otherwise an NVIDIA PCI device (vendor
# 0x10de) seen in sysfs, which needs no extra package (lspci is not always installed).
has_nvidia_gpu() {
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "^GPU "; then
    return 0
  fi
  local vendor
  for vendor in /sys/bus/pci/devices/*/vendor; do
    [[ -r "$vendor" ]] && [[ "$(cat "$vendor")" == "0x10de" ]] && return 0
  done
  return 1
}
if has_nvidia_gpu; then
  KIND="gpu"
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    log "warning: NVIDIA hardware found but no nvidia-smi: without the driver TensorFlow will not see the GPU"
  fi
else
  KIND="cpu"
fi
log "node kind: $KIND"

# --- 3. inputs from the artifacts folder ------------------------------------------------
# Large downloads and pip's unpacking go to /mnt (EMR's data volume) when it exists:
# /tmp is a RAM-backed tmpfs on Amazon Linux 2023 and the CUDA wheels are several GB.
if [[ -d /mnt ]]; then
  SCRATCH_PARENT="/mnt"
else
  SCRATCH_PARENT="/tmp"
fi
WORK="$(sudo mktemp -d "$SCRATCH_PARENT/captioning-bootstrap.XXXXXX")"
sudo chown "$(id -u):$(id -g)" "$WORK"
export TMPDIR="$WORK"
trap 'rm -rf "$WORK"' EXIT

log "downloading from $ARTIFACTS"
aws s3 cp --only-show-errors "$ARTIFACTS/constraints.txt" "$WORK/constraints.txt"
aws s3 cp --only-show-errors "$ARTIFACTS/node-requirements-$KIND.txt" "$WORK/requirements.txt"
aws s3 cp --only-show-errors --recursive "$ARTIFACTS/wheels/" "$WORK/wheels/"
shopt -s nullglob
WHEELS=("$WORK"/wheels/*.whl)
shopt -u nullglob
[[ ${#WHEELS[@]} -eq 1 ]] || die "expected exactly one wheel under $ARTIFACTS/wheels/, found ${#WHEELS[@]}"

# --- 4. Python 3.11 and the virtual environment --------------------------------------
log "installing $PYTHON"
sudo dnf install -y -q python3.11 python3.11-pip
if [[ ! -x "$VENV/bin/python" ]]; then
  sudo mkdir -p "$(dirname "$VENV")"
  sudo "$PYTHON" -m venv "$VENV"
fi

log "installing the pinned dependencies for a $KIND node"
sudo TMPDIR="$TMPDIR" "$VENV/bin/python" -m pip install --quiet --no-cache-dir \
  -c "$WORK/constraints.txt" -r "$WORK/requirements.txt"
log "installing $(basename "${WHEELS[0]}")"
sudo TMPDIR="$TMPDIR" "$VENV/bin/python" -m pip install --quiet --no-cache-dir --no-deps "${WHEELS[0]}"
sudo "$VENV/bin/python" -m pip check
sudo chmod -R a+rX "$VENV"

"$VENV/bin/python" -c "import captioning, numpy; print('captioning importable from', captioning.__file__)"
log "done: $VENV ($KIND)"
