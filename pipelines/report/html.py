"""The report's HTML: one self-contained page (inline CSS, a little inline JS, data URIs).

Every string from the catalog (file names, captions, error messages, EXIF text) goes
through :func:`esc`, in text and in attributes alike; error messages and thumbnail
failure reasons also go through :func:`altbeam.pipelines.runtime.redact.redact` (catalogs written
before redaction existed, or by other tools, may hold credentials in them). A Content-Security-Policy allows
only this page's own style and script (by hash) and ``data:`` images, so even a
markup slip could not run injected script or fetch anything.

Caption statuses (catalog schema v2): each card names its status; ``unsure`` and
``contradicted`` captions are marked as not trusted (on the card and in the picture's
alt text), ``too_small`` and ``blank`` rows say why there is no caption. A row without
a status (captioned before the caption gate) shows as it always did.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import math

from altbeam.model.serving.caption_status import NO_CAPTION, OK, UNTRUSTED
from altbeam.pipelines.catalog.api import NOT_JUDGED, STATUS_MEANINGS
from altbeam.pipelines.report.thumbs import Thumbnail
from altbeam.pipelines.runtime.redact import redact

CSS = """
:root{font-family:system-ui,sans-serif;color:#1b1b1b;background:#fafafa}
body{margin:0 auto;max-width:1200px;padding:1rem}
h1{margin:.2rem 0}.muted{color:#555}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border-bottom:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
td.num{text-align:right}
.stats{display:flex;flex-wrap:wrap;gap:1rem;padding:0;list-style:none}
.stats li{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem}
.stats b{display:block;font-size:1.4rem}
.controls{display:flex;flex-wrap:wrap;gap:.75rem;align-items:center;margin:.5rem 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:.75rem;
 padding:0;list-style:none}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem;font-size:.85rem}
.card figure{margin:0}
.thumb{display:flex;align-items:center;justify-content:center;height:160px}
.thumb img{max-width:100%;max-height:160px}
.missing{background:#eee;color:#555;text-align:center;font-size:.75rem;padding:.5rem}
.best{font-weight:600;margin:.3rem 0}
.score{font-weight:400;color:#555}
.uri{word-break:break-all;color:#555;font-size:.75rem;margin:.2rem 0}
.alt{color:#0a5;font-size:.75rem}
.noalt{color:#a50;font-size:.75rem}
details ol{margin:.2rem 0;padding-left:1.2rem}
code{word-break:break-all}
.heat-strip{display:flex;flex-wrap:wrap;gap:4px}
.heat-strip figure{margin:0;text-align:center;font-size:.7rem}
.heat-strip img{display:block}
.heat-note{color:#a50;font-size:.75rem}
.status{font-size:.75rem;margin:.2rem 0;color:#555}
.badge{border-radius:4px;padding:0 .3rem;margin-right:.3rem;background:#ddd;color:#333;
 font-weight:600}
.st-ok .badge{background:#dfd;color:#060}
.status.st-untrusted{color:#900}.st-untrusted .badge{background:#900;color:#fff}
.card[data-untrusted],.stats li.st-untrusted{border-color:#c66}
.stats small{display:block;color:#555;max-width:14rem}
.card[data-untrusted] .best{font-weight:400;font-style:italic;color:#555}
.kw{font-size:.75rem;margin:.2rem 0}
"""

# Progressive enhancement: without JS every card shows (thumbnails lazy-load).
JS = """
(function(){
var grid=document.getElementById('grid');if(!grid)return;
var cards=Array.prototype.slice.call(grid.children);
var size=parseInt(grid.getAttribute('data-page-size'),10)||60;
var filter=document.getElementById('filter'),sort=document.getElementById('sort');
var status=document.getElementById('page-status');
var prev=document.getElementById('prev'),next=document.getElementById('next');
var page=0,shown=cards;
function key(c,k){return k==='uri'?c.getAttribute('data-uri'):
 parseFloat(c.getAttribute('data-score'))}
function apply(){
 var q=filter.value.trim().toLowerCase(),k=sort.value,order=cards.slice();
 if(k==='uri'){order.sort(function(a,b){return key(a,k)<key(b,k)?-1:1;});}
 else{var d=k==='score-desc'?-1:1;
  order.sort(function(a,b){return d*((key(a,k)||0)-(key(b,k)||0));});}
 if(k==='noalt'){order=cards.filter(function(c){return c.hasAttribute('data-noalt');})
  .concat(cards.filter(function(c){return !c.hasAttribute('data-noalt');}));}
 shown=order.filter(function(c){return !q||c.textContent.toLowerCase().indexOf(q)>=0;});
 order.forEach(function(c){grid.appendChild(c);});
 var pages=Math.max(1,Math.ceil(shown.length/size));page=Math.min(page,pages-1);
 cards.forEach(function(c){c.hidden=true;});
 shown.slice(page*size,(page+1)*size).forEach(function(c){c.hidden=false;});
 status.textContent='Page '+(page+1)+' of '+pages+' ('+shown.length+' images)';
 prev.disabled=page===0;next.disabled=page>=pages-1;
 document.documentElement.setAttribute('data-page',String(page+1));
}
filter.addEventListener('input',function(){page=0;apply();});
sort.addEventListener('change',function(){page=0;apply();});
prev.addEventListener('click',function(){page--;apply();});
next.addEventListener('click',function(){page++;apply();});
document.getElementById('controls').hidden=false;
apply();
document.documentElement.setAttribute('data-ready','1');
})();
"""


ATTENTION_FOOTER = ("Attention heatmaps (altbeam report --attention) tint where the model "
                    "looked for each word of its best caption, scaled to each word's peak.")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (f"default-src 'none'; img-src data:; style-src {_csp_hash(CSS)}; "
       f"script-src {_csp_hash(JS)}; base-uri 'none'; form-action 'none'")


def esc(value) -> str:
    """HTML-escape anything for text or a quoted attribute ("" for None)."""
    return "" if value is None else html.escape(str(value), quote=True)


def fmt_num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else esc(value)


@dataclasses.dataclass
class ReportData:
    catalog: str
    generated_at: str
    images: list[dict]             # latest catalog rows (uri, caption, score, captions …)
    thumbnails: list[Thumbnail]    # same order as images
    total_images: int              # before --max-images
    stats: dict                    # headline numbers (label -> value)
    runs: list[dict]               # per-run rows
    errors: list[dict]             # unresolved errors
    total_errors: int
    writeback: list[dict]          # action, count
    page_size: int = 60
    heatmaps: list[str] | None = None   # per image: heatmap HTML (report_attention), escaped
    attention_note: str | None = None   # which model made them, or why there are none
    statuses: list[dict] = dataclasses.field(default_factory=list)  # the `statuses` view


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(
        f'<td class="num">{fmt_num(v)}</td>' if i in numeric else f"<td>{esc(v)}</td>"
        for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _status_kind(status: str | None) -> str:
    """The badge's look: ok, untrusted, none (no caption), unknown; "" when not judged."""
    if status is None:
        return ""
    if status == OK:
        return "ok"
    if status in UNTRUSTED:
        return "untrusted"
    return "none" if status in NO_CAPTION else "unknown"


def _status_line(row: dict) -> str:
    """The card's status badge with what it means ("" for a row without a status)."""
    status = row.get("caption_status")
    kind = _status_kind(status)
    if not kind:
        return ""
    meaning = STATUS_MEANINGS.get(status, "unknown caption status")
    text = "" if kind == "ok" else f" {esc(meaning)}"
    named = row.get("objects") or []
    if kind == "untrusted" and named:
        text += f"; the caption names {esc(', '.join(named))}"
    return f'<p class="status st-{kind}"><span class="badge">{esc(status)}</span>{text}</p>'


def _keywords_line(row: dict) -> str:
    words = row.get("keywords") or []
    if not words:
        return ""
    scores = list(row.get("keyword_scores") or []) + [None] * len(words)
    items = ", ".join(f'{esc(w)} <span class="score">{fmt_num(s, 2)}</span>'
                      for w, s in zip(words, scores))
    return f'<p class="kw">keywords: {items}</p>'


def _alt_text(row: dict) -> str:
    """The picture's alt text: the caption, with the same warning a sighted reader sees."""
    caption, status = row.get("caption") or "", row.get("caption_status")
    kind = _status_kind(status)
    if kind == "untrusted" and caption:
        return f"{caption} (caption not trusted: {status})"
    if kind == "none" and not caption:
        return STATUS_MEANINGS[status]
    return caption or "image without a caption"


def _statuses_block(statuses: list[dict]) -> str:
    """The summary's images per caption status (the `statuses` view); a note instead when
    no image has a status (a catalog captioned before the caption gate)."""
    total = sum(s["images"] for s in statuses)
    judged = sum(s["images"] for s in statuses if s["status"] != NOT_JUDGED)
    if not total:
        return ""
    if not judged:
        return ('<p class="muted" id="statuses">Caption status: not judged (every image '
                "was captioned before the caption gate).</p>")
    items = "".join(
        f'<li class="st-{_status_kind(s["status"]) or "none"}"><b>{fmt_num(s["images"])}</b>'
        f'{esc(s["status"])}<small>{esc(s["meaning"])}</small></li>' for s in statuses)
    return f'<h3>Caption status</h3><ul class="stats" id="statuses">{items}</ul>'


def _card(row: dict, thumb: Thumbnail, heatmap: str = "") -> str:
    caption = row.get("caption") or ""
    alt_text = _alt_text(row)
    kind = _status_kind(row.get("caption_status"))
    if thumb.data_uri:
        picture = (f'<img src="{thumb.data_uri}" alt="{esc(alt_text)}" width="{thumb.width}" '
                   f'height="{thumb.height}" loading="lazy" decoding="async">')
    else:
        picture = (f'<div class="missing" role="img" aria-label="{esc(alt_text)} (no preview)">'
                   f"no preview<br>{esc(redact(thumb.reason))}</div>")
    alternatives = list(zip(row.get("captions") or [], row.get("scores") or []))[1:]
    alts = ""
    if alternatives:
        items = "".join(f'<li>{esc(c)} <span class="score">{fmt_num(s)}</span></li>'
                        for c, s in alternatives)
        alts = (f"<details><summary>{len(alternatives)} alternative"
                f"{'s' if len(alternatives) != 1 else ''}</summary><ol>{items}</ol></details>")
    existing = (row.get("existing_alt_text") or "").strip()
    alt_line = (f'<p class="alt">alt text in file: {esc(existing)}</p>' if existing
                else '<p class="noalt">no alt text in file</p>')
    camera = " ".join(x for x in (row.get("camera_make"), row.get("camera_model")) if x)
    meta = [camera, str(row.get("capture_time") or ""), row.get("model_version") or ""]
    score = row.get("score")
    attrs = (f'data-uri="{esc(row["uri"])}" data-score="{esc(fmt_num(score, 4))}"'
             f' data-status="{esc(row.get("caption_status") or NOT_JUDGED)}"'
             + (" data-untrusted=\"\"" if kind == "untrusted" else "")
             + ("" if existing else " data-noalt=\"\""))
    best = ""                    # too_small / blank: the status line says why there is none
    if caption or kind != "none":
        best = (f'<p class="best">{esc(caption) or "<em>no caption</em>"} '
                f'<span class="score">{fmt_num(score)}</span></p>')
    return (f'<li class="card" {attrs}><figure><div class="thumb">{picture}</div>'
            f'<figcaption>{best}{_status_line(row)}{_keywords_line(row)}{alts}{heatmap}'
            f'<p class="uri">{esc(row["uri"])}</p>{alt_line}'
            f'<p class="muted">{esc(" · ".join(m for m in meta if m))}</p>'
            f"</figcaption></figure></li>")


def render(data: ReportData) -> str:
    """The whole page as a string."""
    stats = "".join(f"<li><b>{fmt_num(v)}</b>{esc(k)}</li>" for k, v in data.stats.items())
    run_rows = [[r.get("run_id"), r.get("model_version"), r.get("images"), r.get("errors"),
                 r.get("seconds"), r.get("images_per_second"), r.get("finished")]
                for r in data.runs]
    runs = _table(["run", "model version", "images", "errors", "seconds", "images/s",
                   "last row at"], run_rows, numeric={2, 3, 4, 5}) if run_rows else \
        '<p class="muted">No runs recorded.</p>'
    shown_note = ""
    if data.total_images > len(data.images):
        shown_note = (f'<p class="muted">Showing the first {len(data.images):,} of '
                      f"{data.total_images:,} images (by file name; see --max-images).</p>")
    heatmaps = data.heatmaps or [""] * len(data.images)
    cards = "".join(_card(r, t, h) for r, t, h in zip(data.images, data.thumbnails, heatmaps))
    if data.attention_note:
        shown_note += f'<p class="muted" id="attention-note">{esc(data.attention_note)}</p>'
    if data.errors:
        errors = _table(["file", "stage", "error", "message", "run", "at"],
                        [[redact(e["uri"]), e["stage"], e["error_type"], redact(e["message"]),
                          e["run_id"], e["occurred_at"]] for e in data.errors])
        if data.total_errors > len(data.errors):
            errors += (f'<p class="muted">{len(data.errors):,} of {data.total_errors:,} '
                       "unresolved errors shown.</p>")
    else:
        errors = '<p class="muted">No unresolved errors.</p>'
    writeback = _table(["action", "files"], [[w["action"], w["n"]] for w in data.writeback],
                       numeric={1}) if data.writeback else \
        '<p class="muted">No writeback recorded.</p>'
    title = f"altbeam catalog report: {data.total_images:,} images"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{CSS}</style></head>
<body><header><h1>{esc(title)}</h1>
<p class="muted">Catalog <code>{esc(data.catalog)}</code>, generated {esc(data.generated_at)}.</p>
<nav aria-label="Sections"><a href="#summary">Summary</a> · <a href="#images">Images</a> ·
<a href="#errors">Errors</a> · <a href="#writeback">Writeback</a></nav></header>
<main>
<section id="summary" aria-labelledby="summary-h"><h2 id="summary-h">Run summary</h2>
<ul class="stats">{stats}</ul>{_statuses_block(data.statuses)}{runs}</section>
<section id="images" aria-labelledby="images-h"><h2 id="images-h">Images</h2>{shown_note}
<div class="controls" id="controls" hidden>
<label>Filter <input id="filter" type="search" placeholder="caption or file name"></label>
<label>Sort <select id="sort"><option value="uri">file name</option>
<option value="score">caption score, lowest first</option>
<option value="score-desc">caption score, highest first</option>
<option value="noalt">missing alt text first</option></select></label>
<button id="prev" type="button">Previous</button>
<span id="page-status" aria-live="polite"></span>
<button id="next" type="button">Next</button></div>
<ol class="grid" id="grid" data-page-size="{int(data.page_size)}">{cards}</ol></section>
<section id="errors" aria-labelledby="errors-h"><h2 id="errors-h">Errors</h2>{errors}</section>
<section id="writeback" aria-labelledby="writeback-h"><h2 id="writeback-h">Writeback</h2>
{writeback}</section></main>
<footer><p class="muted">Scores are the model's length-normalised log-probabilities (closer
to 0 is more confident). {ATTENTION_FOOTER}</p></footer>
<script>{JS}</script></body></html>
"""
