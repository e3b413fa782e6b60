"""One command line, two parsers: a job's own flags and Beam's pipeline options.

`altbeam caption`, `writeback` and `features` take their own flags and any Beam or
Dataflow pipeline option (``--runner``, ``--project``, ``--max_num_workers`` ...), in
any order around their positional arguments. `split_flags` walks the words once and
sorts each into the job's or Beam's, knowing from both parsers' definitions which
flags take a value, so ``INPUT --runner DataflowRunner INPUT`` never hands ``INPUT`` to
``--runner``. A flag that neither knows is refused (`UnknownFlag`), with the closest
known spelling: Beam itself would only log "Discarding unparseable args" and run with
its defaults.
"""
from __future__ import annotations

import argparse
import difflib
import re

import apache_beam  # noqa: F401 - registers every PipelineOptions subclass Beam ships
from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

# argparse reads these as values, not flags (none of our parsers has numeric flags).
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


class FlagError(ValueError):
    """A word on the command line that neither the job nor Beam accepts as given."""


class UnknownFlag(FlagError):
    def __init__(self, flag: str, suggestion: str | None):
        self.flag, self.suggestion = flag, suggestion
        hint = f" (did you mean {suggestion}?)" if suggestion else ""
        super().__init__(f"unknown flag {flag}{hint}")


def _option_nargs(parser: argparse.ArgumentParser) -> dict[str, int | str | None]:
    """Each option string of ``parser`` -> its argparse ``nargs`` (0: takes no value)."""
    return {opt: action.nargs for action in parser._actions for opt in action.option_strings}


def beam_options() -> dict[str, int | str | None]:
    """Every Beam/Dataflow pipeline option -> its ``nargs``, from the argparse
    definitions of every registered PipelineOptions class (as Beam parses them).

    Each class gets a parser of its own: a subclass repeating an option of another
    would otherwise make argparse refuse the duplicate.
    """
    found: dict[str, int | str | None] = {}
    seen, todo = set(), list(PipelineOptions.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo += cls.__subclasses__()
        parser = _BeamArgumentParser(allow_abbrev=False, add_help=False)
        cls._add_argparse_args(parser)
        found.update(_option_nargs(parser))
    return found


def _looks_like_flag(word: str) -> bool:
    return word.startswith("-") and word != "-" and not _NEGATIVE_NUMBER.match(word)


def _values_taken(flag: str, nargs, following: list[str]) -> int:
    """How many of the ``following`` words are ``flag``'s values."""
    if nargs == 0:
        return 0
    if nargs is None or nargs == 1 or isinstance(nargs, int):
        count = 1 if nargs is None else nargs
        given = following[:count]
        if len(given) < count or any(_looks_like_flag(w) for w in given):
            raise FlagError(f"{flag} needs a value")
        return count
    taken = 0                       # "?", "*", "+": as many as do not look like flags
    while taken < len(following) and not _looks_like_flag(following[taken]):
        taken += 1
        if nargs == "?":
            break
    if nargs == "+" and not taken:
        raise FlagError(f"{flag} needs a value")
    return taken


def closest_flag(flag: str, known) -> str | None:
    """The known flag ``flag`` was probably meant to be (``-``/``_`` mixed up, a typo)."""
    by_spelling = {k.replace("-", "_"): k for k in known}
    if flag.replace("-", "_") in by_spelling:
        return by_spelling[flag.replace("-", "_")]
    match = difflib.get_close_matches(flag, list(known), n=1, cutoff=0.75)
    return match[0] if match else None


def split_flags(argv: list[str], parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """``argv`` -> (words for ``parser``, words for Beam's PipelineOptions).

    The job's words come back as its flags, then ``--`` and its positional arguments
    (so argparse keeps positionals that flags split apart together). Raises
    `UnknownFlag` for a flag neither knows and `FlagError` for a value left out.
    """
    own, beam = _option_nargs(parser), beam_options()
    own_words: list[str] = []
    positionals: list[str] = []
    beam_words: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--":
            positionals += argv[i:]
            break
        if not _looks_like_flag(word):
            positionals.append(word)
            continue
        flag, has_value = word.split("=", 1)[0], "=" in word
        if flag in own:
            # argparse judges our own flags' values; only keep them with their flag.
            taken = 0 if has_value else _own_values(own[flag], argv[i:])
            own_words += argv[i - 1:i + taken]
        elif flag in beam:
            taken = 0 if has_value else _values_taken(flag, beam[flag], argv[i:])
            beam_words += argv[i - 1:i + taken]
        else:
            raise UnknownFlag(flag, closest_flag(flag, [*own, *beam]))
        i += taken
    return own_words + (["--", *positionals] if positionals else []), beam_words


def _own_values(nargs, following: list[str]) -> int:
    try:
        return _values_taken("", nargs, following)
    except FlagError:
        return 0                    # the value is missing: argparse says so


def unknown_flags(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """The flags of ``argv`` that `split_flags` refuses (for checking documentation)."""
    refused = []
    while True:
        try:
            split_flags(argv, parser)
            return refused
        except UnknownFlag as e:
            refused.append(e.flag)
            argv = [w for w in argv if w.split("=", 1)[0] != e.flag]
        except FlagError:
            return refused


def parse_job_args(parser: argparse.ArgumentParser,
                   argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """(the job's parsed flags, Beam's flags); a refused word exits with status 2,
    naming it (``altbeam caption: unknown flag --x (did you mean --y?)``)."""
    try:
        own_words, beam_words = split_flags(argv, parser)
    except FlagError as e:
        parser.exit(2, f"{parser.prog}: {e}\n")
    return parser.parse_args(own_words), beam_words
