# altbeam Dataflow worker image: Python 3.11 + Beam SDK 2.77.0 harness + TensorFlow 2.21.0
# with CUDA libraries from PyPI + exiftool + altbeam itself.
#
# Build from the repository root (the build context must hold setup.py):
#   docker build -f deploy/worker.Dockerfile -t REGION-docker.pkg.dev/PROJECT/altbeam/worker:TAG .
# or with Cloud Build: gcloud builds submit --config deploy/cloudbuild.yaml (docs/dataflow.md).
#
# Base: the official python:3.11 image rather than tensorflow/tensorflow:2.21.0-gpu.
# The TF GPU images ship Ubuntu's system Python, which need not be the 3.11 that the
# Beam SDK harness below is built for (a worker's Python minor version must match the
# launcher's); `tensorflow[and-cuda]` brings CUDA 12 and cuDNN 9 as pip wheels, and
# Dataflow mounts the NVIDIA driver itself (worker_accelerator=...;install-nvidia-driver).
# Versions below must match constraints.txt: tests/system/test_dataflow.py checks them.

FROM apache/beam_python3.11_sdk:2.77.0 AS beam_sdk

FROM python:3.11-slim-bookworm

ARG BEAM_VERSION=2.77.0
ARG TF_VERSION=2.21.0

# exiftool for `altbeam writeback` (Debian's libimage-exiftool-perl, as on dev machines).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libimage-exiftool-perl \
 && rm -rf /var/lib/apt/lists/*

# The Beam SDK harness entrypoint (boot) and its files, from the matching SDK image.
COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam

# Heavy, slow-changing dependencies first so code edits rebuild only the last layers.
RUN pip install --no-cache-dir \
      "apache-beam[gcp]==${BEAM_VERSION}" \
      "tensorflow[and-cuda]==${TF_VERSION}"

WORKDIR /opt/altbeam
COPY setup.py pyproject.toml constraints.txt README.md ./
COPY schemas ./schemas
COPY model ./model
COPY pipelines ./pipelines
# Installs the remaining dependencies (pyarrow, pillow, duckdb, ...) at the tested
# versions (constraints.txt);
# Beam and TensorFlow are already satisfied at the pinned versions above.
RUN pip install --no-cache-dir -c constraints.txt . \
 && python -c "import apache_beam, tensorflow as tf; \
assert apache_beam.__version__ == '${BEAM_VERSION}', apache_beam.__version__; \
assert tf.__version__ == '${TF_VERSION}', tf.__version__; \
import altbeam.pipelines.caption.pipeline, altbeam.pipelines.writeback.pipeline" \
 && exiftool -ver

# Run the workers from outside the source folder so they import the installed package.
WORKDIR /
# TensorFlow: take GPU memory as needed instead of all of it up front.
# Dataflow's install-nvidia-driver mounts the driver's libraries (libcuda.so) at
# /usr/local/nvidia/lib64 on GPU VMs; python:slim does not search there, and without it
# TensorFlow finds no GPU and quietly runs on the CPU (the caption job logs the device
# of its first batch; --require-gpu turns a missing GPU into an error).
ENV TF_FORCE_GPU_ALLOW_GROWTH=true \
    TF_CPP_MIN_LOG_LEVEL=2 \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib \
    PATH=/usr/local/nvidia/bin:$PATH

ENTRYPOINT ["/opt/apache/beam/boot"]
