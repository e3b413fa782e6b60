# altbeam flex-template launcher image: runs deploy/flex_main.py, which builds the caption
# graph and submits it to Dataflow; the job itself runs in the worker image
# (deploy/worker.Dockerfile, passed as the sdk_container_image parameter).
#
# Build from the repository root:
#   docker build -f deploy/flex_template.Dockerfile -t REGION-docker.pkg.dev/PROJECT/altbeam/launcher:TAG .
# The launcher's Python (3.11) and Beam (2.77.0) must equal the worker image's:
# tests/system/test_dataflow.py checks both Dockerfiles against constraints.txt.

FROM gcr.io/dataflow-templates-base/python311-template-launcher-base

ARG BEAM_VERSION=2.77.0
ARG TF_VERSION=2.21.0

# The launcher only builds the graph (and reads model_card.json); CPU TensorFlow is
# enough, and is needed only when a model card lacks image_size/beam_width.
RUN pip install --no-cache-dir \
      "apache-beam[gcp]==${BEAM_VERSION}" \
      "tensorflow==${TF_VERSION}"

WORKDIR /template
COPY setup.py pyproject.toml constraints.txt README.md ./
COPY schemas ./schemas
COPY model ./model
COPY pipelines ./pipelines
COPY deploy/flex_main.py ./flex_main.py
RUN pip install --no-cache-dir -c constraints.txt . \
 && python -c "import apache_beam; assert apache_beam.__version__ == '${BEAM_VERSION}'"

# The package is installed in both images, so neither a requirements file nor a
# setup file is staged: workers must not pip-install anything at start-up.
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/flex_main.py

ENTRYPOINT ["/opt/google/dataflow/python_template_launcher"]
