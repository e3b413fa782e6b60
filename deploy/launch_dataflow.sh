#!/usr/bin/env bash
# Launch `altbeam caption` (or `altbeam writeback`) on Dataflow with GPU workers.
#
#   PROJECT=my-proj REGION=us-central1 BUCKET=my-bucket \
#   IMAGE=us-central1-docker.pkg.dev/my-proj/altbeam/worker:$(git rev-parse --short HEAD) \
#   deploy/launch_dataflow.sh caption gs://my-bucket/photos --catalog gs://my-bucket/catalog \
#       --model gs://my-bucket/models/v3 [--batch-size 64] [any Beam/Dataflow flag ...]
#
#   deploy/launch_dataflow.sh writeback gs://my-bucket/catalog [--dry-run] [...]
#
# Environment (required): PROJECT, REGION, BUCKET (temp/staging go to gs://$BUCKET/dataflow/),
# IMAGE (the worker image built from deploy/worker.Dockerfile at the SAME commit as the
# code launching it: the graph is pickled here and unpickled there).
# Optional: SERVICE_ACCOUNT (worker service account email), MAX_WORKERS (default 4),
# MACHINE_TYPE (caption: g2-standard-4, 1 NVIDIA L4, 4 vCPU, 16 GB; writeback: n2-standard-4), GPU_TYPE (nvidia-l4),
# GPU_COUNT (1), DISK_SIZE_GB (50), ONE_SDK_PROCESS=1 (see below), REQUIRE_GPU=0 (see below),
# DRY_RUN=1 (print the command only),
# WORKER_PYTHON (the worker image's Python minor version; default: read from deploy/worker.Dockerfile),
# ALTBEAM (the command to run; default `altbeam`, or `python -m altbeam.pipelines.cli` from a checkout).
#
# What the flags do, and why:
# * --dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver
#   attaches one L4 per worker and has Dataflow install the NVIDIA driver on the VM; the
#   CUDA/cuDNN user-space libraries come from the image (tensorflow[and-cuda]).
# * --machine_type g2-standard-4: the G2 family is the one L4 GPUs attach to.
# * --experiments=use_runner_v2 and --sdk_container_image: custom containers need runner v2.
# * --sdk_location=container: use the Beam SDK already in the image; stage nothing.
# * No --setup_file: altbeam is pip-installed in the image, so workers start without
#   building and installing an sdist (which would also need PyPI from the workers).
# * One model per GPU. Dataflow starts one SDK process per vCPU by default (4 on
#   g2-standard-4); four processes each loading the model would share one GPU's memory and
#   contend for it. Default here: --share-model (Beam RunInference large_model: one model
#   process per VM that the SDK processes call into), so decoding still runs on all vCPUs.
#   ONE_SDK_PROCESS=1 instead passes --experiments=no_use_multiple_sdk_containers: one
#   SDK process (many threads) per VM, one model, but decoding shares one interpreter.
# * --disk_size_gb 50: the worker image is ~5 GB compressed (TensorFlow + CUDA wheels) and
#   more unpacked; Dataflow's default boot disk with Shuffle (25 GB) can run out pulling it.
# * The launcher's Python must be the image's minor version (the graph is pickled here and
#   unpickled there): this script refuses to submit otherwise, before any VM starts.
# * --require-gpu (caption; REQUIRE_GPU=0 leaves it out): a worker whose TensorFlow sees
#   no GPU (driver install failed, CUDA libraries missing from the image) fails the job at
#   start-up instead of captioning the archive at CPU speed on GPU-priced machines.
# * --no-progress: the local progress line reads files the workers cannot write; watch the
#   job's altbeam/* counters in the Dataflow console instead (docs/dataflow.md).
#
# `altbeam caption` waits for the job to finish, then prints the run summary (read from
# CATALOG/runs/<run_id>.json); Ctrl-C stops the waiting, not the job.
set -euo pipefail

usage() { sed -n '2,10p' "$0" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
command_name=$1; shift
case "$command_name" in
  caption|writeback) ;;
  -h|--help) usage ;;
  *) echo "launch_dataflow.sh: unknown command '$command_name' (caption or writeback)" >&2; exit 2 ;;
esac

missing=()
for var in PROJECT REGION BUCKET IMAGE; do
  [[ -n "${!var:-}" ]] || missing+=("$var")
done
if (( ${#missing[@]} )); then
  echo "launch_dataflow.sh: set ${missing[*]} (see the top of $0)" >&2
  exit 2
fi

if [[ $command_name == caption ]]; then
  MACHINE_TYPE=${MACHINE_TYPE:-g2-standard-4}
else
  # Writeback is exiftool work: CPU machines suffice, no GPU is attached.
  MACHINE_TYPE=${MACHINE_TYPE:-n2-standard-4}
fi
GPU_TYPE=${GPU_TYPE:-nvidia-l4}
GPU_COUNT=${GPU_COUNT:-1}
MAX_WORKERS=${MAX_WORKERS:-4}
DISK_SIZE_GB=${DISK_SIZE_GB:-50}
read -r -a altbeam_cmd <<< "${ALTBEAM:-altbeam}"

# The Python that will pickle the job: the command's own interpreter when it is one,
# else the python beside the altbeam executable (its virtualenv), else python3.
launcher_python() {
  local first=${altbeam_cmd[0]} bin
  if [[ $(basename "$first") == python* ]]; then echo "$first"; return; fi
  bin=$(command -v "$first" || true)
  if [[ -n $bin && -x $(dirname "$bin")/python ]]; then echo "$(dirname "$bin")/python"; else echo python3; fi
}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORKER_PYTHON=${WORKER_PYTHON:-$(sed -nE 's/^FROM python:([0-9]+\.[0-9]+)-.*/\1/p' "$here/worker.Dockerfile")}
launcher_py_version=$("$(launcher_python)" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ $launcher_py_version != "$WORKER_PYTHON" ]]; then
  echo "launch_dataflow.sh: this launcher runs Python $launcher_py_version but the worker image runs Python $WORKER_PYTHON;" \
       "the job would fail only after the workers start (pickled on $launcher_py_version, unpickled on $WORKER_PYTHON)." \
       "Launch from a Python $WORKER_PYTHON environment, or build the image for $launcher_py_version." >&2
  exit 2
fi

beam_flags=(
  --runner DataflowRunner
  --project "$PROJECT"
  --region "$REGION"
  --temp_location "gs://$BUCKET/dataflow/temp"
  --staging_location "gs://$BUCKET/dataflow/staging"
  --job_name "altbeam-$command_name-$(date -u +%Y%m%d-%H%M%S)"
  --experiments=use_runner_v2
  --sdk_container_image "$IMAGE"
  --sdk_location=container
  --machine_type "$MACHINE_TYPE"
  --max_num_workers "$MAX_WORKERS"
  --disk_size_gb "$DISK_SIZE_GB"
)
if [[ -n "${SERVICE_ACCOUNT:-}" ]]; then
  beam_flags+=(--service_account_email "$SERVICE_ACCOUNT")
fi

app_flags=()
if [[ $command_name == caption ]]; then
  # Without --model, altbeam uses the model bundled in the LOCAL install, a path that
  # need not exist in the worker image: name the model explicitly.
  has_model=0
  for arg in "$@"; do [[ $arg == --model || $arg == --model=* ]] && has_model=1; done
  if (( ! has_model )); then
    echo "launch_dataflow.sh: give --model gs://BUCKET/models/NAME (a SavedModel folder)" >&2
    exit 2
  fi
  beam_flags+=("--dataflow_service_options=worker_accelerator=type:$GPU_TYPE;count:$GPU_COUNT;install-nvidia-driver")
  app_flags+=(--no-progress)
  if [[ "${REQUIRE_GPU:-1}" != 0 ]]; then
    app_flags+=(--require-gpu)
  fi
  if [[ "${ONE_SDK_PROCESS:-0}" == 1 ]]; then
    beam_flags+=(--experiments=no_use_multiple_sdk_containers)
  else
    app_flags+=(--share-model)
  fi
fi

cmd=("${altbeam_cmd[@]}" "$command_name" "$@" "${app_flags[@]}" "${beam_flags[@]}")
printf '%q ' "${cmd[@]}" >&2; echo >&2
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  exit 0
fi
exec "${cmd[@]}"
