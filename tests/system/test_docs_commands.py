"""Every shell command the docs and deploy/ show is valid as written.

The shell blocks of README.md and docs/*.md, the scripts in deploy/ and scripts/, and
the RUN lines of the Dockerfiles are checked by bash itself (`bash -n`), then split into
words the way bash would and checked for the traps a reader would hit: an accelerator
option cut at its `;`, an `altbeam` subcommand or module that does not exist.
"""
from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess

import pytest

from altbeam.pipelines.cli import SUBCOMMANDS
from tests.support.paths import REPO

FENCE = re.compile(r"^```(bash|sh|shell|console)\n(.*?)^```", re.M | re.S)


def doc_blocks() -> list[tuple[str, str]]:
    blocks = []
    for md in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for n, m in enumerate(FENCE.finditer(md.read_text())):
            text = m.group(2)
            if m.group(1) == "console":      # keep the commands, drop their output
                text = "\n".join(ln[2:] for ln in text.splitlines() if ln.startswith("$ "))
            blocks.append((f"{md.relative_to(REPO)}#{n}", text))
    return blocks


def script_blocks() -> list[tuple[str, str]]:
    blocks = [(str(p.relative_to(REPO)), p.read_text())
              for p in sorted([*(REPO / "deploy").glob("*.sh"), *(REPO / "scripts").glob("*.sh"),
                               REPO / ".ci" / "run"])]
    for docker in sorted((REPO / "deploy").glob("*.Dockerfile")):
        joined = re.sub(r"\\\n", " ", docker.read_text())
        runs = [ln.strip()[4:] for ln in joined.splitlines() if ln.strip().startswith("RUN ")]
        blocks.append((str(docker.relative_to(REPO)), "\n".join(runs)))
    return blocks


BLOCKS = doc_blocks() + script_blocks()


def commands(text: str) -> list[list[str]]:
    """Simple commands of a block as bash splits them (continuations joined)."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
        lex.whitespace_split = True
        lex.commenters = "#"
        words: list[str] = []
        try:
            for tok in lex:
                if tok and set(tok) <= set(";&|()<>"):
                    if words:
                        out.append(words)
                    words = []
                else:
                    words.append(tok)
        except ValueError:      # a quote spanning lines (heredoc, python -c): bash -n judges
            continue
        if words:
            out.append(words)
    return out


def test_blocks_were_found():
    names = {name.split("#")[0] for name, _ in BLOCKS}
    assert {"README.md", "docs/dataflow.md", "deploy/launch_dataflow.sh",
            "deploy/worker.Dockerfile"} <= names
    assert len(BLOCKS) > 25


@pytest.mark.parametrize("name,text", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_bash_accepts_the_block(name, text):
    done = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    assert done.returncode == 0, f"{name}: {done.stderr}"


@pytest.mark.parametrize("name,text", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_accelerator_option_stays_one_argument(name, text):
    for words in commands(text):
        for word in words:
            if "worker_accelerator=" in word:
                assert "count:" in word and "install-nvidia-driver" in word, (
                    f"{name}: bash cuts the accelerator option at ';': {word!r}")
            assert not re.fullmatch(r"count:\S*", word), f"{name}: {word!r} runs as a command"


@pytest.mark.parametrize("name,text", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_altbeam_commands_and_modules_exist(name, text):
    for words in commands(text):
        for i, word in enumerate(words):
            if word.endswith("altbeam") and i + 1 < len(words) and i == 0:
                sub = words[i + 1]
                if not sub.startswith("-") and not sub.startswith("$"):
                    assert sub in SUBCOMMANDS, f"{name}: no command 'altbeam {sub}'"
            if word == "-m" and i + 1 < len(words) and words[i + 1].startswith("altbeam."):
                assert importlib.util.find_spec(words[i + 1]) is not None, (
                    f"{name}: no module {words[i + 1]}")


def test_the_checker_catches_the_classic_mistakes():
    cut = "gcloud x --parameters a=1~dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
    words = commands(cut)
    assert any("worker_accelerator=" in w and "count:" not in w for ws in words for w in ws)
    assert ["count:1"] in words
    quoted = "gcloud x --parameters 'a=1~worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver'"
    assert len(commands(quoted)) == 1


def test_documented_job_flags_are_known_flags():
    """Every flag of a documented `altbeam caption/writeback/features` command is the
    job's own or a Beam/Dataflow option, judged by the function the commands use."""
    from altbeam.pipelines.caption.options import make_parser as caption_parser
    from altbeam.pipelines.features.pipeline import make_parser as features_parser
    from altbeam.pipelines.runtime.flags import unknown_flags
    from altbeam.pipelines.writeback.pipeline import make_parser as writeback_parser

    parsers = {"caption": caption_parser, "writeback": writeback_parser,
               "features": features_parser}
    checked, refused = 0, []
    for name, text in BLOCKS:
        for words in commands(text):
            for i, word in enumerate(words[:-1]):
                launcher = word.endswith(("altbeam", "altbeam.pipelines.cli",
                                          "launch_dataflow.sh"))
                if launcher and words[i + 1] in parsers:
                    argv = [w for w in words[i + 2:] if w.startswith("--")]
                    refused += [(name, flag) for flag in unknown_flags(
                        words[i + 2:], parsers[words[i + 1]]())]
                    checked += len(argv)
    assert checked > 20, "the documented commands were not found"
    assert not refused, refused
