"""Caption metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D, as the COCO caption tooling computes them.

The scorers are the `pycocoevalcap` package's own (BLEU, ROUGE-L, CIDEr-D in pure
Python; METEOR 1.5 and the Stanford PTBTokenizer as the jars it ships), so numbers are
comparable with published Flickr8k/Flickr30k/COCO results when `tokenizer="ptb"` and
all four scorers run.

The two Java tools are driven here rather than through pycocoevalcap's wrappers,
which are known to hang or die with "could not convert string to float" (a
long-lived METEOR process read line by line, an unread stderr pipe, newlines or
"|||" inside captions shifting the answers, a temp file written into site-packages):
each call starts one JVM, writes all its input, closes stdin and reads everything
back with a timeout (`subprocess.run`), so there is no shared process, no lock, and
nothing left running if the call fails or times out. Inputs are sanitised (line
breaks, the "|||" field separator) and the answer is checked line for line.

Without Java, `tokenizer="ptb"` and the "meteor" scorer raise `JavaNotFoundError`;
the caller may opt into `tokenizer="simple"` (model.text.tokenize) and leave out
"meteor" — never a silent fallback. Those numbers are close to, not equal to, the
PTB ones.

CIDEr-D's document frequencies come from the references being scored, so a score
depends on the whole evaluation set (as in coco-caption): score a split at once.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence

from altbeam.model.data import text as _text

METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
SCORERS = ("bleu", "meteor", "rouge", "cider")
TOKENIZERS = ("ptb", "simple")

# What coco-caption removes from the PTBTokenizer's output.
PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
     ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
# Java readers split lines on these as well as on "\n".
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+")
# Java flags for stable I/O whatever the machine's locale.
_JAVA_IO_FLAGS = ["-Dfile.encoding=UTF-8", "-Duser.language=en", "-Duser.country=US"]


class MetricError(RuntimeError):
    """A scorer could not produce a number (bad input, a Java tool failed or timed out)."""


class JavaNotFoundError(MetricError):
    """METEOR or the PTB tokenizer was asked for, but no `java` executable was found."""


def _package_dir() -> pathlib.Path:
    import pycocoevalcap  # namespace package: no __file__

    return pathlib.Path(next(iter(pycocoevalcap.__path__)))


def meteor_jar() -> pathlib.Path:
    return _package_dir() / "meteor" / "meteor-1.5.jar"


def ptb_jar() -> pathlib.Path:
    return _package_dir() / "tokenizer" / "stanford-corenlp-3.4.1.jar"


def find_java(java: str | None = None) -> str | None:
    """The java executable: `java` if given, else $ALTBEAM_JAVA, $JAVA_HOME/bin/java, PATH."""
    candidates = [java] if java else [
        os.environ.get("ALTBEAM_JAVA"),
        os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else None,
        shutil.which("java"),
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _require_java(java: str | None, what: str) -> str:
    found = find_java(java)
    if found is None:
        where = f"{java!r} is not an executable file" if java else "no `java` on PATH, $JAVA_HOME or $ALTBEAM_JAVA"
        raise JavaNotFoundError(
            f"{what} needs Java (8 or newer): {where}. Install a JRE (Debian: "
            "apt-get install default-jre-headless), or score without Java explicitly with "
            "tokenizer='simple' and scorers without 'meteor' (numbers then differ slightly "
            "from the published COCO-tool ones)."
        )
    return found


def _single_line(text: str) -> str:
    return " ".join(_LINE_BREAKS.sub(" ", text).split())


def _run_java(cmd: list[str], stdin: str, timeout_s: float, what: str) -> str:
    """Run a Java tool to completion; its stdout, or MetricError naming what went wrong."""
    try:
        done = subprocess.run(
            cmd, input=stdin.encode("utf-8"), capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:  # run() has already killed and reaped it
        raise MetricError(f"{what} did not finish within {timeout_s:.0f} s and was stopped") from exc
    except OSError as exc:
        raise MetricError(f"{what} could not start ({cmd[0]}): {exc}") from exc
    if done.returncode != 0:
        raise MetricError(
            f"{what} failed with exit code {done.returncode}: "
            f"{_tail(done.stderr.decode('utf-8', 'replace'))}"
        )
    return done.stdout.decode("utf-8", "replace")


def _tail(stderr: str, lines: int = 8) -> str:
    return " | ".join(stderr.strip().splitlines()[-lines:]) or "(no stderr)"


def ptb_tokenize(
    captions: Mapping[str, Sequence[str]], java: str | None = None, timeout_s: float = 300.0
) -> dict[str, list[str]]:
    """coco-caption's tokenisation: Stanford PTBTokenizer, lower-cased, punctuation dropped."""
    java_bin = _require_java(java, "The PTB tokenizer")
    keys = [key for key, caps in captions.items() for _ in caps]
    lines = [_single_line(cap) for caps in captions.values() for cap in caps]
    out: dict[str, list[str]] = {key: [] for key in captions}
    if not lines:
        return out
    cmd = [java_bin, *_JAVA_IO_FLAGS, "-cp", str(ptb_jar()),
           "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase",
           "-encoding", "utf-8"]
    stdout = _run_java(cmd, "\n".join(lines) + "\n", timeout_s, "The PTB tokenizer")
    tokenized = stdout.split("\n")
    if tokenized and tokenized[-1] == "":
        tokenized.pop()
    # Trailing empty captions may produce no line at all: pad, but only for those.
    missing = len(lines) - len(tokenized)
    if missing > 0 and all(not line for line in lines[len(tokenized):]):
        tokenized += [""] * missing
    if len(tokenized) != len(lines):
        raise MetricError(
            f"The PTB tokenizer returned {len(tokenized)} lines for {len(lines)} captions"
        )
    for key, line in zip(keys, tokenized):
        out[key].append(" ".join(w for w in line.split() if w not in PTB_PUNCTUATION))
    return out


def simple_tokenize(captions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The Java-free tokenisation: model.text.clean_caption on every caption."""
    return {key: [_text.clean_caption(cap) for cap in caps] for key, caps in captions.items()}


def meteor(
    references: Mapping[str, Sequence[str]],
    hypotheses: Mapping[str, str],
    java: str | None = None,
    timeout_s: float = 600.0,
    java_heap: str = "2G",
) -> tuple[float, dict[str, float]]:
    """METEOR 1.5 (`-l en -norm`) over tokenised captions: (corpus score, per-image scores).

    The corpus score is METEOR's own aggregate over all segment statistics (as
    coco-caption reports it), not the mean of the per-image scores.
    """
    java_bin = _require_java(java, "METEOR")
    _check_inputs(references, hypotheses)
    ids = list(hypotheses)

    def field(caption: str) -> str:  # "|||" separates fields in METEOR's protocol
        return _single_line(caption.replace("|||", " "))

    score_lines = [
        " ||| ".join(["SCORE", *(field(r) for r in references[i]), field(hypotheses[i])])
        for i in ids
    ]
    cmd = [java_bin, *_JAVA_IO_FLAGS, f"-Xmx{java_heap}", "-jar", str(meteor_jar()),
           "-", "-", "-stdio", "-l", "en", "-norm"]
    values = _meteor_session(cmd, score_lines, timeout_s)
    return values[-1], dict(zip(ids, values[:-1]))


def _meteor_session(cmd: list[str], score_lines: list[str], timeout_s: float) -> list[float]:
    """One METEOR process: SCORE lines -> statistics, then one EVAL line -> scores.

    A writer thread feeds the SCORE lines while this thread reads the answers (so
    neither pipe can fill up and block both sides), stderr goes to a file (never an
    unread pipe), and a watchdog kills the JVM at the deadline, which ends any
    blocked read. The process is always gone when this returns or raises.
    """
    n = len(score_lines)
    with tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        except OSError as exc:
            raise MetricError(f"METEOR could not start ({cmd[0]}): {exc}") from exc
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            proc.kill()

        watchdog = threading.Timer(timeout_s, stop)
        watchdog.daemon = True
        writer = threading.Thread(target=_write_lines, args=(proc.stdin, score_lines), daemon=True)
        watchdog.start()
        writer.start()
        try:
            stats = [proc.stdout.readline().decode("utf-8", "replace").strip() for _ in range(n)]
            writer.join()
            answers: list[str] = []
            if all(_is_stats(line) for line in stats):
                _write_lines(proc.stdin, ["EVAL ||| " + " ||| ".join(stats)])
                _close_quietly(proc.stdin)  # end of input: METEOR answers, then exits
                answers = proc.stdout.read().decode("utf-8", "replace").split()
            else:  # the JVM or METEOR complained: give it a moment to finish saying why
                _close_quietly(proc.stdin)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                stats += proc.stdout.read().decode("utf-8", "replace").splitlines()
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            _close_quietly(proc.stdin)
            _close_quietly(proc.stdout)
        stderr.seek(0)
        err = _tail(stderr.read().decode("utf-8", "replace"))
    if timed_out.is_set():
        raise MetricError(f"METEOR did not finish within {timeout_s:.0f} s and was stopped")
    bad = next((i for i, line in enumerate(stats[:n]) if not _is_stats(line)), None)
    if bad is not None:
        said = " | ".join(line for line in stats[bad:] if line and not _is_stats(line))[:1000]
        raise MetricError(
            f"METEOR returned no statistics for segment {bad} (exit code {proc.returncode}; "
            f"stdout: {said or '(nothing)'}; stderr: {err})"
        )
    if len(answers) != n + 1 or not all(_is_float(v) for v in answers):
        raise MetricError(
            f"METEOR returned {len(answers)} scores for {n} segments "
            f"(expected {n + 1} numbers; exit code {proc.returncode}): {err}"
        )
    return [float(v) for v in answers]


def _write_lines(pipe, lines: list[str]) -> None:
    try:
        for line in lines:
            pipe.write((line + "\n").encode("utf-8"))
        pipe.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass  # the process died or was killed; the reader reports why


def _close_quietly(pipe) -> None:
    try:
        pipe.close()
    except OSError:  # a broken pipe to a dead process: nothing left to flush
        pass


def _is_stats(line: str) -> bool:
    values = line.split()
    return len(values) > 1 and all(_is_float(v) for v in values)


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _check_inputs(references: Mapping[str, Sequence[str]], hypotheses: Mapping[str, str]) -> None:
    if not hypotheses:
        raise MetricError("no hypotheses to score")
    missing_refs = [k for k in hypotheses if k not in references]
    missing_hyps = [k for k in references if k not in hypotheses]
    if missing_refs or missing_hyps:
        raise MetricError(
            "references and hypotheses must cover the same images: "
            f"{len(missing_refs)} hypotheses have no references (e.g. {missing_refs[:3]}), "
            f"{len(missing_hyps)} references have no hypothesis (e.g. {missing_hyps[:3]})"
        )
    for key, refs in references.items():
        if isinstance(refs, str) or not refs:
            raise MetricError(f"image {key!r}: references must be a non-empty list of strings")
        if not all(isinstance(r, str) for r in refs):
            raise MetricError(f"image {key!r}: every reference must be a string, got {refs!r}")
    for key, hyp in hypotheses.items():
        if not isinstance(hyp, str):
            raise MetricError(f"image {key!r}: the hypothesis must be one string, got {hyp!r}")


def score_captions_per_image(
    references: Mapping[str, Sequence[str]],
    hypotheses: Mapping[str, str],
    scorers: Iterable[str] = SCORERS,
    tokenizer: str = "ptb",
    java: str | None = None,
    timeout_s: float = 600.0,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Like `score_captions`, plus each image's own scores: (corpus, {image_id: {metric: v}})."""
    scorers = tuple(scorers)
    unknown = [s for s in scorers if s not in SCORERS]
    if unknown or not scorers:
        raise ValueError(f"scorers must be a non-empty subset of {SCORERS}, got {scorers}")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
    # Find Java up front so a missing JRE fails before minutes of work.
    if tokenizer == "ptb":
        _require_java(java, "The PTB tokenizer (tokenizer='ptb')")
    if "meteor" in scorers:
        _require_java(java, "METEOR")
    references = {str(k): list(v) if not isinstance(v, str) else v for k, v in references.items()}
    hypotheses = {str(k): v for k, v in hypotheses.items()}
    _check_inputs(references, hypotheses)

    ids = list(references)
    both = {**{("r", k): references[k] for k in ids}, **{("h", k): [hypotheses[k]] for k in ids}}
    if tokenizer == "ptb":
        tokenized = ptb_tokenize(both, java=java, timeout_s=timeout_s)
    else:
        tokenized = simple_tokenize(both)
    gts = {k: tokenized[("r", k)] for k in ids}
    res = {k: tokenized[("h", k)] for k in ids}

    corpus: dict[str, float] = {}
    per_image: dict[str, dict[str, float]] = {k: {} for k in ids}

    def record(name: str, total: float, each: Iterable[float]) -> None:
        corpus[name] = float(total)
        for key, value in zip(ids, each):
            per_image[key][name] = float(value)

    if "bleu" in scorers:
        from pycocoevalcap.bleu.bleu import Bleu

        totals, each = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            record(f"BLEU-{n + 1}", totals[n], each[n])
    if "meteor" in scorers:
        total, each_meteor = meteor(
            gts, {k: v[0] for k, v in res.items()}, java=java, timeout_s=timeout_s
        )
        record("METEOR", total, (each_meteor[k] for k in ids))
    if "rouge" in scorers:
        from pycocoevalcap.rouge.rouge import Rouge

        total, each = Rouge().compute_score(gts, res)
        record("ROUGE-L", total, each)
    if "cider" in scorers:
        from pycocoevalcap.cider.cider import Cider

        total, each = Cider().compute_score(gts, res)
        record("CIDEr", total, each)
    order = [m for m in METRIC_NAMES if m in corpus]
    return {m: corpus[m] for m in order}, per_image


def score_captions(
    references: Mapping[str, Sequence[str]],
    hypotheses: Mapping[str, str],
    scorers: Iterable[str] = SCORERS,
    tokenizer: str = "ptb",
    java: str | None = None,
    timeout_s: float = 600.0,
) -> dict[str, float]:
    """Corpus scores of one hypothesis per image against its reference captions.

    references: image id -> its human captions (raw text); hypotheses: image id -> the
    model's caption (raw text); both must cover the same image ids. Returns a subset of
    {"BLEU-1".."BLEU-4", "METEOR", "ROUGE-L", "CIDEr"} (CIDEr is CIDEr-D, as in
    coco-caption) for the chosen `scorers`. tokenizer="ptb" (needs Java) matches
    published numbers; "simple" is model.text.clean_caption, for machines without Java.
    """
    corpus, _ = score_captions_per_image(references, hypotheses, scorers, tokenizer, java, timeout_s)
    return corpus
