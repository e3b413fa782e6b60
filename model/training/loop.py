"""The one training loop: epochs x batches, progress lines, validation, history.json,
TensorBoard and the best checkpoint, whatever is being optimised.

An objective plugs in as a small object (the way ImageCaptioning.pytorch runs
cross-entropy and SCST in one loop): `begin_epoch` returns the epoch's batches,
`step` trains on one and returns its figures (``{"loss": ...}``), `record` turns the
epoch means into the history record. The loop does everything else:

* a progress line every ``progress_every`` batches (the mean of ``shown`` over them,
  rate and time left), and one summary line per epoch (``*best`` when it improved);
* with ``validate``: val_cider / val_bleu4 in the record, the best checkpoint kept
  (``RunFolder.save_best``) and early stopping after ``patience`` epochs without a
  better validation CIDEr;
* with a `RunFolder`: TensorBoard scalars, the latest checkpoint and RUN/history.json
  (the list of records, rewritten after every epoch).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np
import tensorflow as tf


class Objective(Protocol):
    label: str                  # progress lines: "epoch", "scst epoch", ...
    unit: str                   # what a batch is called in them: "step", "batch"
    progress_every: int
    shown: tuple[str, str]      # (key of step's figures, its name in progress lines)
    seconds_key: str            # where the record keeps the epoch's training time

    def begin_epoch(self, epoch: int, rng: np.random.Generator) -> tuple[int, Iterable]:
        """(number of batches, the batches) of this epoch; sets per-epoch settings."""

    def step(self, batch) -> dict[str, float]:
        """Train on one batch; its figures (e.g. loss)."""

    def record(self, epoch: int, means: dict[str, float]) -> dict:
        """The epoch's history record from the means of the step figures."""

    def summary(self, record: dict) -> str:
        """The epoch's figures for its summary line."""


@dataclasses.dataclass
class RunFolder:
    """Where a run's epochs are written: RUN/history.json, RUN/tensorboard/, and the
    caller's checkpoints (best: the best validation CIDEr so far; latest: resumable)."""

    path: str
    tensorboard_keys: tuple[str, ...]
    save_best: Callable[[], None]
    save_latest: Callable[[int], None]

    def write_history(self, history: list[dict]) -> None:
        with open(os.path.join(self.path, "history.json"), "w") as f:
            json.dump(history, f, indent=2)


@dataclasses.dataclass
class LoopState:
    """What carries over between epochs (and from a resumed run)."""

    history: list[dict] = dataclasses.field(default_factory=list)
    best: float = float("-inf")     # best validation CIDEr
    stale: int = 0                  # epochs since it improved


def run_epochs(objective: Objective, epochs: Iterable[int], rng: np.random.Generator,
               state: LoopState | None = None, validate: Callable[[], dict] | None = None,
               folder: RunFolder | None = None, patience: int | None = None) -> LoopState:
    """Train ``objective`` for ``epochs`` (stopping early after ``patience`` epochs
    without improvement); returns the state with the new records appended."""
    state = state or LoopState()
    writer = (tf.summary.create_file_writer(os.path.join(folder.path, "tensorboard"))
              if folder else None)
    for epoch in epochs:
        if patience is not None and state.stale >= patience:
            break
        start = time.time()
        means = _train_one_epoch(objective, epoch, rng)
        record = objective.record(epoch, means)
        seconds = time.time() - start
        if validate:
            scores = validate()
            record.update(val_cider=scores["CIDEr"], val_bleu4=scores["BLEU-4"])
        record[objective.seconds_key] = round(seconds, 1)
        state.history.append(record)
        improved = bool(validate) and record["val_cider"] > state.best
        if folder:
            with writer.as_default():
                for key in folder.tensorboard_keys:
                    tf.summary.scalar(key, record[key], step=epoch)
        if improved:
            state.best = record["val_cider"]
            folder.save_best()
        state.stale = 0 if improved else state.stale + 1
        if folder:
            folder.save_latest(epoch)
            folder.write_history(state.history)
        print(f"{objective.label} {epoch}: {objective.summary(record)}  ({seconds:.0f} s)"
              f"{'  *best' if improved else ''}", flush=True)
    return state


def _train_one_epoch(objective: Objective, epoch: int, rng) -> dict[str, float]:
    """Every batch of one epoch, with progress lines; the means of the step figures."""
    n_batches, batches = objective.begin_epoch(epoch, rng)
    figures: dict[str, list[float]] = collections.defaultdict(list)
    key, name = objective.shown
    every = objective.progress_every
    start = time.time()
    for k, batch in enumerate(batches, 1):
        for fig, value in objective.step(batch).items():
            figures[fig].append(float(value))
        if k % every == 0:
            rate = k / (time.time() - start)
            print(f"  {objective.label} {epoch} {objective.unit} {k}/{n_batches} {name} "
                  f"{np.mean(figures[key][-every:]):.3f} ({rate:.2f} {objective.unit}s/s, "
                  f"~{(n_batches - k) / rate:.0f} s left)", flush=True)
    return {fig: float(np.mean(values)) for fig, values in figures.items()}
