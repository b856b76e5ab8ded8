#!/usr/bin/env bash
# Spark's GPU discovery script on the captioning clusters (spark.{driver,executor}.resource.gpu.discoveryScript).
#
# Spark runs it when a driver or executor starts and reads one JSON object from stdout:
#   {"name": "gpu", "addresses": ["0", "1"]}
# the indexes of the GPUs this process may use. Under YARN's GPU isolation a container's
# cgroup only lets it open the devices YARN gave it, and nvidia-smi lists only those, so
# the indexes are the container's. emr/bootstrap.sh installs this file on every node
# (ClusterConfig.gpu_discovery_script), so the clusters do not depend on a script that
# only some EMR images carry.
set -euo pipefail

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu-discovery: nvidia-smi not found, so no GPU can be reported" >&2
  exit 1
fi
indexes="$(nvidia-smi --query-gpu=index --format=csv,noheader)" || { echo "gpu-discovery: nvidia-smi failed" >&2; exit 1; }
addresses=""
while read -r index; do
  [[ -z "$index" ]] && continue
  [[ "$index" =~ ^[0-9]+$ ]] || { echo "gpu-discovery: unexpected nvidia-smi output: $index" >&2; exit 1; }
  addresses+="${addresses:+, }\"$index\""
done <<<"$indexes"
echo "{\"name\": \"gpu\", \"addresses\": [$addresses]}"
