#!/usr/bin/env bash
# Bootstrap action for every node of a captioning cluster (Amazon EMR 7.x, Amazon Linux 2023).
#
#   bootstrap.sh --artifacts s3://BUCKET/artifacts/VERSION [--venv /opt/captioning/venv]
#
# --artifacts is the version folder written by `captioner deploy` (an s3:// URI, or a
# local folder with the same layout, e.g. on a shared mount); the wheels of every version
# are next to it, in <artifacts>/../wheelhouse/<sha256>/<file>. The names are defined in
# lib/captioning/aws/layout.py. Nodes need no PyPI and no internet: only S3 (the VPC's
# gateway endpoint) and, for Python 3.11, the Amazon Linux repositories (also on S3).
#   1. decides whether this is a GPU node and, if so, checks the NVIDIA driver before
#      downloading anything,
#   2. mounts the cgroup v1 "devices" controller that YARN's GPU isolation needs on EMR 7,
#   3. downloads the node set (node-requirements-{cpu,gpu}.txt: every wheel pinned by
#      sha256) and only those wheels, and checks their hashes,
#   4. installs Python 3.11 if missing and creates the virtual environment that spark-env's
#      PYSPARK_PYTHON points at, with pip --no-index --no-deps --require-hashes, then the
#      project wheel; pyspark is not installed (EMR's Spark provides it),
#   5. installs the GPU discovery script Spark's resource scheduling runs.
# The environment and the script are root-owned and read-only for the users that run jobs.
# Bootstrap actions run as the hadoop user (with sudo) before EMR installs Hadoop and
# Spark; stdout and stderr end up under <LogUri>/<cluster id>/node/<instance id>/bootstrap-actions/1/.
set -euo pipefail

ARTIFACTS=""
VENV="/opt/captioning/venv"
DISCOVERY="/opt/captioning/gpu-discovery.sh"
PYTHON="python3.11"
CGROUP_ROOT="/spark-rapids-cgroup"
# TensorFlow's CUDA 12 wheels run on drivers from 525.60.13 on (CUDA minor-version
# compatibility); `make package` refuses a GPU set that needs another value.
MIN_NVIDIA_DRIVER="525.60.13"

log() { echo "[captioning-bootstrap $(date -u +%H:%M:%S)] $*"; }
die() { log "error: $*"; exit 1; }
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --artifacts) ARTIFACTS="${2:?--artifacts needs a value}"; shift 2 ;;
    --venv) VENV="${2:?--venv needs a value}"; shift 2 ;;
    --discovery-script) DISCOVERY="${2:?--discovery-script needs a value}"; shift 2 ;;
    *) die "unknown argument: $1 (usage: bootstrap.sh --artifacts s3://BUCKET/PREFIX/VERSION [--venv PATH] [--discovery-script PATH])" ;;
  esac
done
[[ -n "$ARTIFACTS" ]] || die "--artifacts s3://BUCKET/PREFIX/VERSION is required"
ARTIFACTS="${ARTIFACTS%/}"
WHEELHOUSE="${ARTIFACTS%/*}/wheelhouse"

# --- 1. GPU or not; a GPU node needs a driver new enough for the CUDA wheels ------------
# An NVIDIA PCI device (vendor 0x10de) in sysfs needs no extra package (lspci is not
# always installed); nvidia-smi comes with the driver.
has_nvidia_device() {
  local vendor
  for vendor in /sys/bus/pci/devices/*/vendor; do
    [[ -r "$vendor" ]] && [[ "$(cat "$vendor")" == "0x10de" ]] && return 0
  done
  return 1
}
version_at_least() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" == "$2" ]]; }

if has_nvidia_device || command -v nvidia-smi >/dev/null 2>&1; then
  KIND="gpu"
  command -v nvidia-smi >/dev/null 2>&1 \
    || die "GPU node without nvidia-smi: the NVIDIA driver is missing (TensorFlow's CUDA wheels need driver >= $MIN_NVIDIA_DRIVER); use an EMR release whose image for this instance type ships it"
  DRIVER="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' ')" \
    || die "nvidia-smi cannot query the driver version: the NVIDIA driver is not working on this node"
  [[ "$DRIVER" =~ ^[0-9]+(\.[0-9]+)*$ ]] || die "nvidia-smi reported no driver version (got '$DRIVER'): the NVIDIA driver is not working on this node"
  version_at_least "$DRIVER" "$MIN_NVIDIA_DRIVER" \
    || die "NVIDIA driver $DRIVER is older than $MIN_NVIDIA_DRIVER, which TensorFlow's CUDA 12 wheels need; use a newer EMR release or AMI"
  log "node kind: gpu (driver $DRIVER)"
else
  KIND="cpu"
  log "node kind: cpu"
fi

# --- 2. cgroup v1 devices controller for YARN GPU isolation ------------------------------
# Source: the Amazon EMR Release Guide, "Use the Nvidia RAPIDS Accelerator for Apache
# Spark", bootstrap-action example for Amazon EMR 7.x: Amazon Linux 2023 boots with the
# unified cgroup v2 hierarchy, while YARN's GPU plugin (LinuxContainerExecutor with
# cgroups) restricts a container to its GPUs through the cgroup v1 "devices" controller,
# which must therefore be mounted by hand before the NodeManager starts. The mount point
# must match yarn-site yarn.nodemanager.linux-container-executor.cgroups.mount-path and
# container-executor cgroups.root (both CGROUP_ROOT; set in lib/captioning/aws/cluster.py).
# Only GPU nodes run GPU containers (every core and task node has a GPU; the primary runs
# no NodeManager). This script assumes EMR 7.x (EMR 6 differs, see the same guide).
if [[ "$KIND" == "gpu" ]]; then
  if mountpoint -q "$CGROUP_ROOT/devices"; then
    log "$CGROUP_ROOT/devices is already mounted"
  else
    log "mounting the cgroup v1 devices controller at $CGROUP_ROOT/devices"
    as_root mkdir -p "$CGROUP_ROOT/devices"
    as_root mount -t cgroup -o devices cgroupv1-devices "$CGROUP_ROOT/devices"
  fi
  as_root chmod a+rwx -R "$CGROUP_ROOT"
fi

# --- 3. the node set, from the artifacts -----------------------------------------------
# Downloads and pip's unpacking go to /mnt (EMR's data volume) when it exists: /tmp is
# a RAM-backed tmpfs on Amazon Linux 2023 and the CUDA wheels are several GB.
if [[ -d /mnt ]]; then
  SCRATCH_PARENT="/mnt"
else
  SCRATCH_PARENT="${TMPDIR:-/tmp}"
fi
WORK="$(as_root mktemp -d "$SCRATCH_PARENT/captioning-bootstrap.XXXXXX")"
as_root chown "$(id -u):$(id -g)" "$WORK"
export TMPDIR="$WORK"
trap 'as_root rm -rf "$WORK"' EXIT

# fetch SOURCE DESTINATION: one file, from S3 or a local folder
fetch() {
  if [[ "$1" == s3://* ]]; then
    aws s3 cp --only-show-errors "$1" "$2"
  else
    cp "$1" "$2"
  fi
}

log "downloading the $KIND node set from $ARTIFACTS"
LOCK="$WORK/node-requirements.txt"
fetch "$ARTIFACTS/node-requirements-$KIND.txt" "$LOCK" || die "cannot read $ARTIFACTS/node-requirements-$KIND.txt: was this version deployed with 'captioner deploy' after 'make package'?"
mkdir -p "$WORK/project"
fetch "$ARTIFACTS/gpu-discovery.sh" "$WORK/gpu-discovery.sh"
if [[ "$ARTIFACTS" == s3://* ]]; then
  aws s3 cp --only-show-errors --recursive "$ARTIFACTS/wheels/" "$WORK/project/"
else
  cp "$ARTIFACTS"/wheels/*.whl "$WORK/project/"
fi
shopt -s nullglob
PROJECT_WHEELS=("$WORK"/project/*.whl)
shopt -u nullglob
[[ ${#PROJECT_WHEELS[@]} -eq 1 ]] || die "expected exactly one wheel under $ARTIFACTS/wheels/, found ${#PROJECT_WHEELS[@]}"

# Every lock line is "name==version --hash=sha256:HEX"; the wheel is <wheelhouse>/HEX/<file>.
mapfile -t HASHES < <(sed -n 's/.*--hash=sha256:\([0-9a-f]\{64\}\).*/\1/p' "$LOCK")
[[ ${#HASHES[@]} -gt 0 ]] || die "$ARTIFACTS/node-requirements-$KIND.txt lists no wheels"
mkdir -p "$WORK/wheelhouse" "$WORK/wheels"
if [[ "$WHEELHOUSE" == s3://* ]]; then
  INCLUDES=()
  for hash in "${HASHES[@]}"; do INCLUDES+=(--include "$hash/*"); done
  aws s3 cp --only-show-errors --recursive "$WHEELHOUSE/" "$WORK/wheelhouse/" --exclude "*" "${INCLUDES[@]}"
else
  for hash in "${HASHES[@]}"; do cp -r "$WHEELHOUSE/$hash" "$WORK/wheelhouse/"; done
fi
: >"$WORK/sha256sums"
for hash in "${HASHES[@]}"; do
  shopt -s nullglob
  files=("$WORK/wheelhouse/$hash"/*.whl)
  shopt -u nullglob
  [[ ${#files[@]} -eq 1 ]] || die "wheel $hash is missing from $WHEELHOUSE: deploy this version again with 'captioner deploy'"
  mv "${files[0]}" "$WORK/wheels/"
  echo "$hash  $WORK/wheels/$(basename "${files[0]}")" >>"$WORK/sha256sums"
done
sha256sum --check --quiet "$WORK/sha256sums" || die "a downloaded wheel does not match its sha256: the upload to $WHEELHOUSE is damaged; deploy again"
log "downloaded ${#HASHES[@]} wheels ($(du -sh "$WORK/wheels" | cut -f1))"

# --- 4. Python 3.11 and the virtual environment ------------------------------------------
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  log "installing $PYTHON"
  as_root dnf install -y -q python3.11 python3.11-pip
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  as_root mkdir -p "$(dirname "$VENV")"
  as_root "$PYTHON" -m venv "$VENV"
fi

log "installing the $KIND node set"
as_root env TMPDIR="$TMPDIR" PIP_CONFIG_FILE=/dev/null "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-index --find-links "$WORK/wheels" --no-deps --require-hashes -r "$LOCK"
log "installing $(basename "${PROJECT_WHEELS[0]}")"
as_root env TMPDIR="$TMPDIR" PIP_CONFIG_FILE=/dev/null "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-index --no-deps "${PROJECT_WHEELS[0]}"
# Everything the set needs is in it, except what the cluster provides (the lock's header).
PROVIDED="$(sed -n 's/^# provided by the cluster: //p' "$LOCK" | tr ' ' '|')"
if ! CHECK="$(as_root "$VENV/bin/python" -m pip check --disable-pip-version-check 2>&1)"; then
  UNMET="$(grep -v -E " requires (${PROVIDED:-.^}), which is not installed" <<<"$CHECK" || true)"
  [[ -z "$UNMET" ]] || die "the node environment is incomplete: $(tr '\n' ';' <<<"$UNMET")"
fi
as_root chmod -R a+rX,go-w "$VENV"

# --- 5. Spark's GPU discovery script -------------------------------------------------------
as_root install -D -m 0755 "$WORK/gpu-discovery.sh" "$DISCOVERY"

"$VENV/bin/python" -c "import captioning, numpy; print('captioning importable from', captioning.__file__)"
log "done: $VENV ($KIND)"
