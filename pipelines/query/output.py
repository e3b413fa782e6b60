"""Write a query result (an Arrow table) as an aligned text table, CSV, JSON or Parquet."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import sys
import unicodedata

import pyarrow as pa
import pyarrow.parquet as pq

FORMATS = ("table", "csv", "json", "parquet")
MAX_CELL = 60


def _plain(value):
    """A JSON-friendly Python value (timestamps as ISO text, NaN/inf as null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def _printable(text: str) -> str:
    # Captions and file names reach a terminal: show control characters (ANSI escapes,
    # newlines) as \x.. escapes instead of letting them act.
    return "".join(ch if unicodedata.category(ch) != "Cc" else repr(ch)[1:-1] for ch in text)


def _rounded(value):
    """Floats inside lists as the table shows single floats: 4 decimals (float32 scores
    would otherwise print as 0.7699999809265137)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        text = f"{value:.4f}".rstrip("0").rstrip(".") if math.isfinite(value) else str(value)
    elif isinstance(value, list | dict):
        text = json.dumps(_rounded(_plain(value)), ensure_ascii=False)
    else:
        text = str(_plain(value))
    text = _printable(text)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def render_table(table: pa.Table, max_rows: int | None = None) -> str:
    """An aligned, plain-text table; numbers right-aligned; long cells truncated."""
    names = table.column_names
    rows = table.slice(0, max_rows).to_pylist() if max_rows is not None else table.to_pylist()
    cells = [[_cell(r[n]) for n in names] for r in rows]
    numeric = [pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
               or pa.types.is_decimal(f.type) for f in table.schema]
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(names), "  ".join("-" * w for w in widths)]
    out += [line(c) for c in cells]
    shown = len(rows)
    note = f"({table.num_rows} row{'s' if table.num_rows != 1 else ''}"
    if shown < table.num_rows:
        note += f", first {shown} shown; use --format csv|json|parquet for all"
    out.append(note + ")")
    return "\n".join(out) + "\n"


def to_csv(table: pa.Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow("" if v is None else json.dumps(_plain(v), ensure_ascii=False)
                        if isinstance(v, list | dict) else _plain(v) for v in row.values())
    return buf.getvalue()


def to_json(table: pa.Table) -> str:
    rows = [{k: _plain(v) for k, v in r.items()} for r in table.to_pylist()]
    return json.dumps(rows, ensure_ascii=False, indent=1) + "\n"


def write_result(table: pa.Table, fmt: str, out: str | None, max_rows: int | None = None,
                 ) -> None:
    """Write ``table`` in ``fmt`` to the file ``out`` or, when ``out`` is None, stdout."""
    if fmt == "parquet":
        if out is None:
            if sys.stdout.isatty():
                raise ValueError("--format parquet is binary: give --out FILE "
                                 "(or redirect stdout)")
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            sys.stdout.buffer.write(sink.getvalue().to_pybytes())
            sys.stdout.buffer.flush()
        else:
            pq.write_table(table, out)
        return
    if fmt == "table":
        text = render_table(table, max_rows if out is None else None)
    elif fmt == "csv":
        text = to_csv(table)
    elif fmt == "json":
        text = to_json(table)
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        with open(out, "w", encoding="utf-8", newline="") as f:
            f.write(text)
