"""The caption pipeline on Dataflow, checked without the cloud (deploy/, docs/dataflow.md).

* The graph, built with DataflowRunner and the GPU flags, translates to the runner API
  proto, and every DoFn/CombineFn in it survives a pickle round trip.
* The Dataflow runner itself runs in template mode (``--template_location``): it
  stages the pipeline proto and writes the job request to a file instead of calling
  the service. With the GCS emulator standing in for Cloud Storage, that is the real
  job request Dataflow would receive: machine type, GPU service option, container,
  experiments and staged files are asserted on it, and the DoFns are unpickled from
  the staged ``pipeline.pb`` exactly as a worker would.
* deploy/launch_dataflow.sh is run for real (its altbeam command swapped for a shim
  that builds and submits in template mode instead of waiting for a job).
* The Dockerfiles copy only paths that exist and pin the versions constraints.txt pins.

The multi_processing DirectRunner run (DoFns crossing process boundaries) is
tests/pipelines/caption/test_caption.py::test_multi_processing_runner; it is not repeated here.
Building the images needs a Docker engine, which CI does not have.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

from altbeam.pipelines.caption import pipeline as caption
from tests.support.paths import REPO

pytest_plugins = ["tests.support.gcs_emulator"]

DEPLOY = REPO / "deploy"
IMAGE = "us-central1-docker.pkg.dev/altbeam-test/altbeam/worker:abc123"
GPU_OPTION = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
PROJECT = "altbeam-test"      # Beam validates the format: "p" would be refused


def load_flex_main():
    spec = importlib.util.spec_from_file_location("flex_main", DEPLOY / "flex_main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dataflow_flags(bucket: str, *extra: str) -> list[str]:
    return ["--runner=DataflowRunner", f"--project={PROJECT}", "--region=us-central1",
            f"--temp_location=gs://{bucket}/tmp", f"--staging_location=gs://{bucket}/staging",
            "--experiments=use_runner_v2", f"--sdk_container_image={IMAGE}",
            "--sdk_location=container", "--machine_type=g2-standard-4",
            f"--dataflow_service_options={GPU_OPTION}", *extra]


def pickled_fns(proto: beam_runner_api_pb2.Pipeline) -> dict[str, bytes]:
    """transform name -> pickled DoFn/CombineFn payload, for every one in the graph."""
    out = {}
    for transform in proto.components.transforms.values():
        spec = transform.spec
        if spec.urn == common_urns.primitives.PAR_DO.urn:
            fn = beam_runner_api_pb2.ParDoPayload.FromString(spec.payload).do_fn
        elif spec.urn == common_urns.composites.COMBINE_PER_KEY.urn:
            fn = beam_runner_api_pb2.CombinePayload.FromString(spec.payload).combine_fn
        else:
            continue
        if fn.urn.startswith("beam:dofn:pickled_python") or "pickled_python" in fn.urn:
            out[transform.unique_name] = fn.payload
    return out


def unpickle_all(payloads: dict[str, bytes]) -> dict[str, object]:
    """Unpickle each payload, pickle it again, unpickle that: the worker's round trip.

    DoFns run with exception handling come wrapped; the wrapped DoFn is returned.
    """
    fns = {}
    for name, payload in payloads.items():
        obj = pickler.loads(payload)
        fn = obj[0] if isinstance(obj, tuple) else obj
        again = pickler.loads(pickler.dumps(fn))
        assert type(again) is type(fn), name
        while "ExceptionHandling" in type(fn).__name__ and hasattr(fn, "_fn"):
            fn = fn._fn
        fns[name] = fn
    return fns


def expect_pipeline_fns(fns: dict[str, object]) -> None:
    kinds = {type(fn).__name__ for fn in fns.values()}
    # Our own DoFns and RunInference's, with their state, not just any DoFn.
    for expected in ("ExpandInput", "SkipUnchanged", "ReadAndDecode", "ToCatalogRows",
                     "_RunInferenceDoFn"):
        assert expected in kinds, (expected, sorted(kinds))
    decode = next(fn for fn in fns.values() if type(fn).__name__ == "ReadAndDecode")
    assert "32" in repr(vars(decode))                 # the model's image size travelled


@pytest.fixture
def gcs_model(gcs_emulator, gcs_bucket, contract_model):
    gcs_emulator.upload_dir(gcs_bucket, contract_model, "models/v1")
    return f"gs://{gcs_bucket.name}/models/v1"


def test_dataflow_graph_translates_and_every_fn_pickles(gcs_bucket, gcs_model):
    b = gcs_bucket.name
    argv = [f"gs://{b}/photos", "--catalog", f"gs://{b}/catalog", "--model", gcs_model,
            "--batch-size", "64", "--share-model", "--no-progress",
            *dataflow_flags(b, "--experiments=no_use_multiple_sdk_containers")]
    config, beam_argv, _ = caption.parse_args(argv)
    assert config.share_model and config.batch_size == 64 and config.model == gcs_model
    p = beam.Pipeline(options=PipelineOptions(flags=beam_argv))
    assert type(p.runner).__name__ == "DataflowRunner"
    caption.build(p, config)                          # built, never run

    proto = p.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    for step in ("ListImages", "ReadCatalogIndex", "SkipUnchanged", "ReadAndDecode",
                 "Caption/RunInference", "WriteCatalog", "WriteErrors", "WriteRunSummary"):
        assert step in names, step
    fns = unpickle_all(pickled_fns(proto))
    assert len(fns) >= 15
    expect_pipeline_fns(fns)
    handler = next(fn for fn in fns.values() if type(fn).__name__ == "_RunInferenceDoFn")
    inner = handler._model_handler._unkeyed                          # KeyedModelHandler
    assert inner.share_model_across_processes()                      # --share-model
    assert inner.batch_elements_kwargs() == {"min_batch_size": 64, "max_batch_size": 64}


def read_job(bucket, path: str) -> dict:
    return json.loads(bucket.blob(path).download_as_bytes())


def staged_pipeline(bucket, job: dict) -> beam_runner_api_pb2.Pipeline:
    url = job["environment"]["sdkPipelineOptions"]["options"]["pipelineUrl"]
    blob_name = url.split(f"gs://{bucket.name}/", 1)[1]
    return beam_runner_api_pb2.Pipeline.FromString(bucket.blob(blob_name).download_as_bytes())


def assert_gpu_job(job: dict, one_sdk_process: bool) -> None:
    env = job["environment"]
    assert env["serviceOptions"] == [GPU_OPTION]
    pool = env["workerPools"][0]
    assert pool["machineType"] == "g2-standard-4"
    assert [c["containerImage"] for c in pool["sdkHarnessContainerImages"]] == [IMAGE]
    assert "use_runner_v2" in env["experiments"]
    assert ("no_use_multiple_sdk_containers" in env["experiments"]) == one_sdk_process
    # Nothing for workers to pip-install: no sdist (no --setup_file), no SDK tarball.
    assert [pkg["name"] for pkg in pool["packages"]] == [
        "submission_environment_dependencies.txt"]


def test_flex_template_entry_writes_a_gpu_job(gcs_bucket, gcs_model):
    flex_main = load_flex_main()
    b = gcs_bucket.name
    params = [f"--inputs=gs://{b}/photos/2019,gs://{b}/photos/2020/*.jpg",
              f"--catalog=gs://{b}/catalog", f"--model={gcs_model}", "--batch_size=64",
              "--share_model=true", "--force=false", "--limit=", "--require_gpu=true"]
    caption_argv = flex_main.to_caption_argv(params + ["--machine_type=g2-standard-4"])
    assert caption_argv == [f"gs://{b}/photos/2019", f"gs://{b}/photos/2020/*.jpg",
                            "--catalog", f"gs://{b}/catalog", "--model", gcs_model,
                            "--batch-size", "64", "--share-model", "--require-gpu",
                            "--no-progress",
                            "--machine_type=g2-standard-4"]
    with pytest.raises(ValueError, match="parameter force: expected true or false"):
        flex_main.to_caption_argv(params[:3] + ["--force=maybe"])

    flex_main.main(params + dataflow_flags(b, f"--template_location=gs://{b}/t/job.json"))
    job = read_job(gcs_bucket, "t/job.json")
    assert_gpu_job(job, one_sdk_process=False)
    fns = unpickle_all(pickled_fns(staged_pipeline(gcs_bucket, job)))
    expect_pipeline_fns(fns)


def test_metadata_declares_what_flex_main_reads():
    flex_main = load_flex_main()
    meta = json.loads((DEPLOY / "metadata.json").read_text())
    params = {p["name"]: p for p in meta["parameters"]}
    assert set(params) == {"inputs"} | set(flex_main.VALUE_PARAMS) | set(flex_main.BOOL_PARAMS)
    required = {n for n, p in params.items() if not p.get("isOptional")}
    assert required == {"inputs"} | flex_main.REQUIRED_PARAMS
    for p in params.values():
        assert p["label"] and p["helpText"]
        for rx in p.get("regexes", []):
            re.compile(rx)
    assert re.fullmatch(params["inputs"]["regexes"][0], "gs://a/x,gs://a/y/*.jpg")
    assert re.fullmatch(params["max_file_size"]["regexes"][0], "200MB")
    assert not re.fullmatch(params["batch_size"]["regexes"][0], "0")


SHIM = textwrap.dedent("""\
    # Stands in for `altbeam`: same parser and graph, template-mode submit, no waiting.
    import sys
    sys.path.insert(0, {repo!r})
    from tests.support.gcs_emulator import _prime_beam_anonymous_credentials
    _prime_beam_anonymous_credentials()
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
    from altbeam.pipelines.caption import pipeline as caption
    assert sys.argv[1] == "caption", sys.argv
    config, beam_argv, _ = caption.parse_args(sys.argv[2:])
    options = PipelineOptions(flags=beam_argv)
    options.view_as(SetupOptions).save_main_session = False    # as caption.run does
    p = beam.Pipeline(options=options)
    caption.build(p, config)
    p.run()
""")


def run_launcher(env_extra: dict, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(["bash", str(DEPLOY / "launch_dataflow.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=240, cwd=REPO)


def test_launch_script_submits_a_gpu_job(gcs_bucket, gcs_model, tmp_path):
    b = gcs_bucket.name
    shim = tmp_path / "altbeam_shim.py"
    shim.write_text(SHIM.format(repo=str(REPO)))
    env = {"PROJECT": PROJECT, "REGION": "us-central1", "BUCKET": b, "IMAGE": IMAGE,
           "ALTBEAM": f"{sys.executable} {shim}"}
    caption_args = ("caption", f"gs://{b}/photos", "--catalog", f"gs://{b}/catalog",
                    "--model", gcs_model)

    done = run_launcher(env, *caption_args, f"--template_location=gs://{b}/t/job.json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--share-model" in done.stderr                     # the command is echoed
    assert "--require-gpu" in done.stderr                     # no silent CPU fallback
    job = read_job(gcs_bucket, "t/job.json")
    assert_gpu_job(job, one_sdk_process=False)
    assert job["environment"]["workerPools"][0]["diskSizeGb"] == 50   # room for the image

    # ONE_SDK_PROCESS=1: one SDK process per VM instead of a shared model process.
    dry = run_launcher({**env, "ONE_SDK_PROCESS": "1", "DRY_RUN": "1"}, *caption_args)
    assert dry.returncode == 0, dry.stderr
    assert "no_use_multiple_sdk_containers" in dry.stderr and "--share-model" not in dry.stderr
    cpu_ok = run_launcher({**env, "REQUIRE_GPU": "0", "DRY_RUN": "1"}, *caption_args)
    assert cpu_ok.returncode == 0 and "--require-gpu" not in cpu_ok.stderr

    # Usage errors name what is missing; nothing is launched.
    no_model = run_launcher(env, "caption", f"gs://{b}/photos", "--catalog", f"gs://{b}/c")
    assert no_model.returncode == 2 and "give --model gs://" in no_model.stderr
    no_env = run_launcher({"PROJECT": "", "IMAGE": ""}, *caption_args)
    assert no_env.returncode == 2 and "set PROJECT" in no_env.stderr and "IMAGE" in no_env.stderr

    # A launcher on another Python minor than the worker image's is refused before
    # anything is submitted (the job would fail only once the VMs unpickle it).
    other = f"{sys.version_info.major}.{sys.version_info.minor + 1}"
    wrong_py = run_launcher({**env, "WORKER_PYTHON": other}, *caption_args,
                            f"--template_location=gs://{b}/t/wrong.json")
    assert wrong_py.returncode == 2 and f"worker image runs Python {other}" in wrong_py.stderr
    assert not gcs_bucket.blob("t/wrong.json").exists()


# --- Dockerfiles against the repository and constraints.txt --------------------------------

def setup_pins() -> dict[str, str]:
    """The tested versions (constraints.txt) and the Python that pyproject.toml requires."""
    text = (REPO / "constraints.txt").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([0-9.]+)$", text, re.M))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    python = re.fullmatch(r">=\s*([0-9]+\.[0-9]+)", project["requires-python"]).group(1)
    return {"beam": pins["apache-beam"], "tf": pins["tensorflow"], "python": python}


def dockerfile_lines(name: str) -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / name).read_text())
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def args_of(lines) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", "\n".join(lines), re.M))


@pytest.mark.parametrize("name", ["worker.Dockerfile", "flex_template.Dockerfile"])
def test_dockerfile_copies_existing_paths_and_pins_setup_versions(name):
    pins = setup_pins()
    lines = dockerfile_lines(name)
    args = args_of(lines)
    assert args["BEAM_VERSION"] == pins["beam"] and args["TF_VERSION"] == pins["tf"]
    assert '"apache-beam[gcp]==${BEAM_VERSION}"' in " ".join(lines)
    # The dev environment runs what the image pins (else tests prove another stack).
    import apache_beam
    import tensorflow as tf
    assert (apache_beam.__version__, tf.__version__) == (pins["beam"], pins["tf"])
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == pins["python"]

    allowed = [ln[1:].rstrip("/*") for ln in
               (DEPLOY / f"{name}.dockerignore").read_text().splitlines()
               if ln.startswith("!")]
    copies = [ln.split()[1:] for ln in lines if ln.startswith("COPY ") and "--from=" not in ln]
    assert copies
    for *sources, _dest in copies:
        for src in sources:
            assert (REPO / src).exists(), f"{name}: COPY {src}: no such path in the repo"
            assert src.rstrip("/") in allowed, f"{name}: {src} is excluded by its .dockerignore"
    froms = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    py = pins["python"]
    if name == "worker.Dockerfile":
        assert froms == [f"apache/beam_python{py}_sdk:{pins['beam']}", f"python:{py}-slim-bookworm"]
        assert "COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam" in lines
        assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in lines
        assert '"tensorflow[and-cuda]==${TF_VERSION}"' in " ".join(lines)
        assert any("libimage-exiftool-perl" in ln for ln in lines)
        # Dataflow mounts the NVIDIA driver here; TensorFlow must find libcuda.so.
        env = next(ln for ln in lines if ln.startswith("ENV ") and "LD_LIBRARY_PATH" in ln)
        assert "LD_LIBRARY_PATH=/usr/local/nvidia/lib64" in env
    else:
        assert froms == [f"gcr.io/dataflow-templates-base/python{py.replace('.', '')}"
                         "-template-launcher-base"]
        env = next(ln for ln in lines if ln.startswith("ENV FLEX_TEMPLATE_PYTHON_PY_FILE="))
        assert env.endswith("/template/flex_main.py")
        assert ["deploy/flex_main.py", "./flex_main.py"] in copies
        assert "WORKDIR /template" in lines
