"""``altbeam caption`` with a file deleted between listing and reading (a real race, forced).

    python -m tests.support.corpus.race_run --delete-after-listing PATH [...] -- CAPTION ARGS...

Another process deleting a photo while the pipeline runs is a race that a test cannot
time from outside. This driver forces its worst moment: the listing step stats the
file and emits its record, and the file is unlinked right then, before the read step
(which runs after the Reshuffle) opens it. Everything else is the real CLI and the
real in-process runner; the exit status is ``altbeam caption``'s.
"""
from __future__ import annotations

import argparse
import os
import sys

from altbeam.pipelines.caption import pipeline as caption
from altbeam.pipelines.caption import sources


def install_deleter(paths: set[str]) -> None:
    listed = sources.ExpandInput.process

    def process(self, spec):
        for item in listed(self, spec):
            uri = getattr(item, "uri", None)
            if uri in paths and os.path.lexists(uri):
                os.unlink(uri)
            yield item

    sources.ExpandInput.process = process


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--delete-after-listing", action="append", default=[])
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    install_deleter(set(args.delete_after_listing))
    return caption.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
