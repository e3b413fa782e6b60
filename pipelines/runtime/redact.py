"""Strip credentials from text before it is logged, stored in the catalog or rendered.

Error messages come from libraries (google-cloud-storage, google-auth, Beam's
filesystems, exiftool) and from input URIs that users typed or listed; any of them
may carry a secret: ``https://user:pass@host/``, a signed URL's
``X-Goog-Signature=…``, an ``Authorization: Bearer …`` header echoed in an HTTP error,
an OAuth access token (``ya29.…``), or a service-account key (a PEM block, a JSON
``"private_key"`` field). :func:`redact` replaces the secret part with
``[REDACTED]`` and keeps everything else (file names, reasons, parameter names), so
a message still says which file failed and why.

:func:`install_log_redaction` applies it to every log record of the process; the
``altbeam`` CLI installs it, and also wraps stderr (:class:`RedactingStream`) so the
error lines each subcommand prints are redacted too.
"""
from __future__ import annotations

import io
import logging
import re

MARK = "[REDACTED]"

# Query parameters whose values are credentials (signed URLs of GCS, S3, Azure SAS,
# OAuth); matched case-insensitively, the name is kept and the value replaced.
SECRET_PARAMS = (
    "X-Goog-Signature", "X-Goog-Credential", "X-Goog-Security-Token", "X-Amz-Signature",
    "X-Amz-Credential", "X-Amz-Security-Token", "Signature", "GoogleAccessId", "Expires",
    "token", "access_token", "refresh_token", "id_token", "key", "api_key", "apikey",
    "sig", "client_secret", "password", "upload_id", "upload_token",
)
# Fields of JSON/Python dicts whose values are credentials.
SECRET_FIELDS = ("private_key", "private_key_id", "client_secret", "refresh_token",
                 "access_token", "id_token", "password", "token", "authorization")

_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----"
                  r"(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----|.*)", re.S)
_FIELD = re.compile(
    r"""(?P<head>(?P<q>["'])(?:""" + "|".join(SECRET_FIELDS)
    + r""")(?P=q)\s*:\s*(?P<v>["']))(?:\\.|(?!(?P=v)).)*""", re.I | re.S)
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@?#'\"<>]+@")
_PARAM = re.compile(r"(?P<head>[?&;](?:" + "|".join(map(re.escape, SECRET_PARAMS))
                    + r")=)[^&#\s'\"<>]*", re.I)
_AUTH_HEADER = re.compile(
    r"(?P<head>\b(?:Proxy-)?Authorization\b[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?:Bearer|Basic|Token|Digest|OAuth)\s+)?[^\s\"',}]+", re.I)
_BEARER = re.compile(r"\b(?P<head>Bearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.I)
_TOKENS = re.compile(
    r"\bya29\.[0-9A-Za-z_.\-]+"            # Google OAuth2 access token
    r"|\b1//0[0-9A-Za-z_\-]{20,}"           # Google OAuth2 refresh token
    r"|\bAIza[0-9A-Za-z_\-]{35}"            # Google API key
    r"|\bgh[pousr]_[0-9A-Za-z]{30,}"        # GitHub token
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")      # AWS access key id
_ENV = re.compile(r"\b(?P<head>[A-Z0-9_]*(?:SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|"
                  r"ACCESS_KEY)[A-Z0-9_]*=)\S+")


def redact(text: str) -> str:
    """``text`` with every credential found replaced by ``[REDACTED]``."""
    if not text or not isinstance(text, str):
        return text
    text = _PEM.sub(MARK, text)
    text = _FIELD.sub(lambda m: m.group("head") + MARK, text)
    text = _USERINFO.sub(lambda m: m.group("scheme") + MARK + "@", text)
    text = _PARAM.sub(lambda m: m.group("head") + MARK, text)
    text = _AUTH_HEADER.sub(lambda m: m.group("head") + MARK, text)
    text = _BEARER.sub(lambda m: m.group("head") + MARK, text)
    text = _TOKENS.sub(MARK, text)
    return _ENV.sub(lambda m: m.group("head") + MARK, text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's message (and its exception text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    if getattr(record, "_altbeam_redacted", False):
        return record
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record is logged as it stands
        message = str(record.msg)
    record.msg, record.args = redact(message), ()
    if record.exc_info and record.exc_info[0] is not None:
        # Format the traceback now, redacted; handlers reuse exc_text.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    record._altbeam_redacted = True
    return record


_installed = False


def install_log_redaction() -> None:
    """Redact every log record of this process, whichever logger or handler it takes.

    A filter on the root logger alone would miss records of child loggers (filters
    are not inherited when records propagate), so the record factory redacts each
    record as it is created, and the filter sits on the root logger and its handlers
    as well. Idempotent.
    """
    global _installed
    root = logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for f in root.filters):
        root.addFilter(RedactingFilter())
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        return redact_record(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    _installed = True


class RedactingStream(io.TextIOBase):
    """A text stream that redacts each line before passing it to ``stream``.

    Text is held until a line ends (``\\n`` or ``\\r``, so progress lines still show)
    or :meth:`flush`, so a secret split over two ``write`` calls is still caught.
    """

    def __init__(self, stream):
        super().__init__()
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        cut = max(self._pending.rfind("\n"), self._pending.rfind("\r"))
        if cut >= 0:
            done, self._pending = self._pending[:cut + 1], self._pending[cut + 1:]
            self._stream.write(redact(done))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, ""
            self._stream.write(redact(pending))
        self._stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", "utf-8")

    @property
    def wrapped(self):
        return self._stream

    def __getattr__(self, name):   # anything else (errors, buffer, …): the real stream
        return getattr(self._stream, name)
