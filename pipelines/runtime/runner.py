"""Running a Beam pipeline the same way in every job: which runner, and when it succeeded.

Locally (DirectRunner, the default, or any name in ``LOCAL_RUNNERS``) the job runs on
the in-process FnApiRunner (`local_runner`); other runners (Dataflow) are Beam's own.
`run_pipeline` waits for the job and raises unless it finished DONE, so a failed or
cancelled job is never reported as a run.
"""
from __future__ import annotations

import datetime as dt
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    SetupOptions,
    StandardOptions,
)

# --runner values (None: not given) that mean "run here": all get local_runner().
LOCAL_RUNNERS = (None, "DirectRunner", "direct", "SwitchingDirectRunner", "FnApiRunner")


def new_run_id() -> str:
    """Sortable, file-name-safe: 20261124T091630Z-3fa2c1."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def runs_locally(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in LOCAL_RUNNERS


def local_runner(options: PipelineOptions):
    """The FnApiRunner, as DirectRunner would pick it, minus the Prism detour.

    DirectRunner first tries the Prism runner, which downloads a binary at run time
    (no network on CI) and runs asynchronously; the FnApiRunner blocks in-process and
    honours --direct_running_mode / --direct_num_workers.
    """
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=info)


def new_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """An empty pipeline on `local_runner` for local runs, else on the runner named."""
    # Every DoFn lives in an importable module; the CLI's __main__ holds nothing a
    # worker needs, so its session is never pickled.
    options.view_as(SetupOptions).save_main_session = False
    return beam.Pipeline(runner=local_runner(options) if runs_locally(options) else None,
                         options=options)


def run_pipeline(p: beam.Pipeline) -> None:
    """Run ``p`` and wait for it; RuntimeError unless it ended DONE."""
    state = p.run().wait_until_finish()
    if state not in (None, "DONE", beam.runners.runner.PipelineState.DONE):
        raise RuntimeError(f"pipeline ended in state {state}")
