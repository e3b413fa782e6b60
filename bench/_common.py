"""Helpers shared by the benchmark scripts: machine/version header, aligned tables,
JSON output, sample-photo copies with distinct bytes, model sources (trained run
folder, exported SavedModel, or the tiny random model for smoke runs).

Benchmarks print figures; they never assert on them (no timed tests).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shlex
import struct
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "photos"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# -- what ran, where --------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - a missing package is reported, not fatal
        return "not installed"


def environment() -> dict:
    """CPU, cores, OS, Python, TensorFlow, Keras, Beam: the line every table carries."""
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
        "apache_beam": _version("apache-beam"),
    }


def command_line(argv: list[str] | None = None) -> str:
    """The exact command as typed (relative to the repository root)."""
    argv = list(sys.argv if argv is None else argv)
    script = argv[0]
    try:
        script = os.path.relpath(script, REPO)
    except ValueError:
        pass
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", script, *argv[1:]])


def header(title: str, env: dict, command: str) -> str:
    return "\n".join([
        title,
        f"machine:  {env['cpu']}, {env['cores']} cores, {env['os']}",
        f"versions: Python {env['python']}, TensorFlow {env['tensorflow']}, "
        f"Keras {env['keras']}, Apache Beam {env['apache_beam']}",
        f"command:  {command}",
    ])


def table(columns: list[str], rows: list[list], aligns: str | None = None) -> str:
    """Plain aligned text table; floats get 2 decimals. aligns: 'l'/'r' per column."""
    def cell(v):
        if isinstance(v, float):
            return "n/a" if v != v else f"{v:,.2f}"
        return str(v)

    body = [[cell(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in body)) if body else len(c)
              for i, c in enumerate(columns)]
    aligns = aligns or "l" + "r" * (len(columns) - 1)

    def line(cells):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(cells, widths, aligns)).rstrip()

    return "\n".join([line(columns), "  ".join("-" * w for w in widths)]
                     + [line(r) for r in body])


def write_json(path: str | None, data: dict) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def int_list(text: str) -> list[int]:
    """argparse type: "1,8,32" -> [1, 8, 32] (sorted, distinct, positive)."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") \
            from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return values


def ratio(x: float) -> str:
    """A ratio readable at any scale: 1234, 12.34, 0.0123; 'n/a' for NaN."""
    if x != x:
        return "n/a"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.2f}" if abs(x) >= 1 else f"{x:.3g}"


class Stopwatch:
    """with Stopwatch() as t: ...; t.seconds"""

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._start


def interleaved_rounds(arms, rounds: int) -> dict:
    """{name: [seconds of each round]} for arms [(name, one_pass)]: every arm's pass timed
    in turn, ``rounds`` times, the order reversed every other round, so background load
    hits every arm alike (side-by-side ratios on a shared machine)."""
    timed = {name: [] for name, _ in arms}
    for r in range(rounds):
        for name, one_pass in (arms if r % 2 == 0 else arms[::-1]):
            with Stopwatch() as t:
                one_pass()
            timed[name].append(t.seconds)
    return timed


# -- images -------------------------------------------------------------------------------
def sample_photos() -> list[pathlib.Path]:
    photos = sorted(SAMPLES.glob("*.jpg"))
    if not photos:
        raise SystemExit(f"no bundled photos in {SAMPLES}")
    return photos


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a COM segment after SOI: distinct bytes (and sha256),
    identical pixels."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no SOI marker)")
    payload = text.encode("ascii")
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def make_images(dest: pathlib.Path, n: int) -> list[pathlib.Path]:
    """n JPEG files in dest: the bundled photos cycled, each copy with distinct bytes."""
    dest.mkdir(parents=True, exist_ok=True)
    photos = [(p.name, p.read_bytes()) for p in sample_photos()]
    out = []
    for i in range(n):
        name, data = photos[i % len(photos)]
        path = dest / f"{i:06d}_{name}"
        path.write_bytes(with_comment(data, f"altbeam bench copy {i}"))
        out.append(path)
    return out


def decode_files(files, size: int):
    """altbeam's own decoder (pipelines.decode) -> list of uint8 [S, S, 3] arrays."""
    from altbeam.pipelines.caption.decode import decode_image

    return [decode_image(pathlib.Path(f).read_bytes(), size, str(f)).pixels for f in files]


# -- model sources ------------------------------------------------------------------------
def default_model_dir() -> str:
    from altbeam.model import DEFAULT_MODEL_DIR

    return DEFAULT_MODEL_DIR


def read_card(model_dir: str) -> dict:
    path = os.path.join(model_dir, "model_card.json")
    if not os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        raise SystemExit(f"no SavedModel at {model_dir} (saved_model.pb missing): "
                         "pass --model DIR, --run RUN_DIR or --tiny")
    if not os.path.exists(path):
        raise SystemExit(f"{model_dir}: model_card.json missing (benchmarks read the config there)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def make_tiny_run(run_dir: str) -> str:
    """A training run folder (config, vocab, best checkpoint) holding the tiny random
    model, so smoke runs go through exactly the --run code path."""
    import tensorflow as tf

    from altbeam.model.data.vocab import SPECIALS, Vocabulary
    from altbeam.model.nets.decoder import CaptionDecoder
    from tests.support.tiny import TINY_WORDS, tiny_config

    os.makedirs(run_dir, exist_ok=True)
    config = tiny_config()
    with open(os.path.join(run_dir, "config.json"), "w", encoding="utf-8") as f:
        f.write(config.to_json())
    Vocabulary(list(SPECIALS) + TINY_WORDS).save(os.path.join(run_dir, "vocab.json"))
    tf.train.Checkpoint(decoder=CaptionDecoder(config)).write(
        os.path.join(run_dir, "best", "ckpt"))
    return run_dir


def export_widths(run_dir: str, widths, out_dir: str | None = None) -> dict[int, str]:
    """Export one SavedModel per beam width from the same run folder -> {width: path}."""
    from altbeam.model.serving.export import export

    out_dir = out_dir or tempfile.mkdtemp(prefix="altbeam-bench-models-")
    paths = {}
    for k in widths:
        paths[k] = export(run_dir, os.path.join(out_dir, f"beam{k}"), beam_width=k,
                          overwrite=True)
    return paths


def encoder_for(config, weights: str | None = "imagenet"):
    """The encoder the export put in the SavedModel (Keras model, or TinyEncoder)."""
    from altbeam.model.serving.export import build_encoder_for

    return build_encoder_for(config, weights)


def config_from_card(card: dict):
    from altbeam.model.config import ModelConfig

    if "config" not in card:
        raise SystemExit("model_card.json has no 'config': export it with `altbeam export`")
    return ModelConfig.from_json(json.dumps(card["config"]))


# -- the caption pipeline as a user runs it ------------------------------------------------
def _tree_rss_kb(root: int) -> int:
    """Summed VmRSS of a process and all its descendants (Linux /proc), in KiB."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as f:
                kb = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = kb
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def run_caption(inputs: str, catalog: str, model_dir: str, batch_size: int,
                beam_flags: list[str] = (), poll_seconds: float = 0.0) -> dict:
    """`altbeam caption` in a fresh interpreter (as a user runs it; DirectRunner unless
    beam_flags say otherwise).

    Returns wall seconds (interpreter start to exit), the run summary
    (CATALOG/runs/<id>.json), the peak RSS of the largest single process
    (wait4's ru_maxrss, which covers waited-for descendants) and, when poll_seconds > 0,
    the peak of the summed RSS of the whole process tree sampled at that interval.
    """
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    cmd = [sys.executable, "-m", "altbeam.pipelines.cli", "caption", inputs, "--catalog", catalog,
           "--model", model_dir, "--batch-size", str(batch_size), "--no-progress",
           *beam_flags]
    start = time.perf_counter()
    # An unnamed temporary file: the log goes when the run is read, on every exit path.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        peak_tree = 0
        status, usage = None, None
        while status is None:
            pid, code, ru = os.wait4(proc.pid, os.WNOHANG if poll_seconds else 0)
            if pid:
                status, usage = code, ru
                break
            peak_tree = max(peak_tree, _tree_rss_kb(proc.pid))
            time.sleep(poll_seconds)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        log.seek(0)
        output = log.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise SystemExit(f"caption pipeline failed (exit {proc.returncode}): "
                         f"{' '.join(cmd)}\n{output[-3000:]}")
    runs = sorted(pathlib.Path(catalog, "runs").glob("*.json"), key=os.path.getmtime)
    if not runs:
        raise SystemExit(f"caption run wrote no run summary under {catalog}/runs\n{output[-3000:]}")
    summary = json.loads(runs[-1].read_text(encoding="utf-8"))
    return {"wall_seconds": wall, "summary": summary, "command": " ".join(cmd),
            "max_rss_kb": usage.ru_maxrss, "peak_tree_rss_kb": peak_tree or None}


if __name__ == "__main__":  # `python bench/_common.py CMD...`: the header for any command
    print(header("", environment(), " ".join(shlex.quote(a) for a in sys.argv[1:])).lstrip("\n"))
