"""One photo's writeback: its state while a batch is written, a decision not to write
(:class:`Skip`), and the decision's row in the writeback log.

Shared by :mod:`altbeam.pipelines.writeback.files` (the batch) and
:mod:`altbeam.pipelines.writeback.recovery` (after a killed run), which both read items.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

from altbeam.pipelines.runtime.redact import redact
from altbeam.pipelines.writeback.gcs import RemoteObject
from altbeam.pipelines.writeback.rules import CAPTION_FIELDS, FIELDS, keywords_to_add


class Skip(Exception):
    """A decision made before writing: (action, reason)."""

    def __init__(self, reason: str, action: str = "skipped"):
        super().__init__(reason)
        self.action, self.reason = action, reason


@dataclasses.dataclass
class Item:
    row: dict
    path: str                         # local file exiftool reads (the image or its copy)
    original: bytes
    sidecar_local: str                # local path of the sidecar (may not exist)
    sidecar_uri: str
    use_sidecar: bool
    remote: RemoteObject | None = None
    remote_sidecar: RemoteObject | None = None
    sidecar_before: bytes | None = None
    tags: dict | None = None
    sidecar_tags: dict | None = None
    fields: list[str] = dataclasses.field(default_factory=list)
    # --keywords: keyword field -> the row's keywords added to it (rules.keywords_to_add)
    keywords: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    new_sidecar_tmp: str | None = None
    changed: str | None = None        # the changed_since_catalogued reason, if the hash differs
    # (atime_ns, mtime_ns) of the target before writing; None if it is new or remote.
    target_times: tuple[int, int] | None = None

    @property
    def target_path(self) -> str:
        return self.sidecar_local if self.use_sidecar else self.path

    @property
    def target_tags(self) -> dict:
        """The tags of the file written, as read before writing ({}: a new sidecar,
        which exiftool makes from the tags written alone)."""
        return (self.sidecar_tags or {}) if self.use_sidecar else self.tags

    def plan_keywords(self) -> None:
        """--keywords: which of the row's keywords each keyword field of ``fields`` gets;
        a keyword field with none to add is not written. Said in the reason."""
        self.keywords, notes = keywords_to_add(self.row.get("keywords"), self.target_tags,
                                               self.fields)
        self.fields = [f for f in self.fields if f in CAPTION_FIELDS or f in self.keywords]
        self.notes += notes + [f"keywords added to {FIELDS[f][0]}: {', '.join(added)}"
                               for f, added in self.keywords.items()]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decision_row(row: dict, action: str, reason: str, run_id: str, item: Item | None = None,
                 sha_after: str | None = None, mtime_after_ns: int | None = None) -> dict:
    """One WRITEBACK_SCHEMA row (the reason may quote library errors: redacted)."""
    use_sidecar = bool(item and item.use_sidecar)
    mtime_before_ns = item.target_times[1] if item and item.target_times else None
    return {
        "uri": row["uri"], "action": action, "reason": redact(reason),
        "fields": [FIELDS[f][0] for f in item.fields] if item and item.fields else [],
        "target": item.sidecar_uri if use_sidecar else row["uri"],
        "caption": row.get("caption"), "score": row.get("score"),
        "model_version": row.get("model_version"),
        "sha256_before": sha256_hex(item.original) if item else None,
        "sha256_after": sha_after, "run_id": run_id,
        "at": dt.datetime.now(dt.UTC),
        "mtime_before": _utc_time(mtime_before_ns), "mtime_after": _utc_time(mtime_after_ns),
    }


def _utc_time(ns: int | None) -> dt.datetime | None:
    """Nanoseconds since the epoch as the log's timestamp[us, UTC] (cut to microseconds)."""
    if ns is None:
        return None
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ns // 1000)
