"""altbeam.pipelines.runtime.redact: credentials out of messages, log records and stderr; the rest kept."""
from __future__ import annotations

import io
import json
import logging

import pytest

from altbeam.pipelines.runtime.redact import MARK, RedactingStream, install_log_redaction, redact

SIG = "5a1f0c9e" * 8
TOKEN = "ya29.a0AfB_byC9" + "x" * 40
PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "-----END PRIVATE KEY-----\n")

CASES = [
    # (text, secrets that must go, parts that must stay)
    ("cannot read https://alice:hunter2@example.com/photos/a.jpg: 404",
     ["alice", "hunter2"], ["https://", "@example.com/photos/a.jpg: 404"]),
    ("https://storage.googleapis.com/b/o.jpg?X-Goog-Algorithm=GOOG4-RSA-SHA256"
     f"&X-Goog-Credential=svc%40p.iam.gserviceaccount.com%2F20260101&X-Goog-Signature={SIG}"
     "&X-Goog-Expires=900",
     [SIG, "svc%40p.iam"], ["storage.googleapis.com/b/o.jpg", "X-Goog-Algorithm=GOOG4",
                            "X-Goog-Signature=" + MARK]),
    (f"https://s.example/o?GoogleAccessId=svc@p.iam&Expires=1700000000&Signature={SIG}",
     [SIG, "svc@p.iam", "1700000000"], ["https://s.example/o?GoogleAccessId="]),
    (f"GET /b/o?token={SIG};key=AIzaSecretKeyValue&access_token={TOKEN}&alt=media",
     [SIG, "AIzaSecretKeyValue", TOKEN], ["alt=media"]),
    (f"401 Unauthorized: request headers {{'Authorization': 'Bearer {TOKEN}', 'X-Y': 'z'}}",
     [TOKEN, "a0AfB"], ["401 Unauthorized", "'X-Y': 'z'"]),
    ("Authorization: Basic dXNlcjpwYXNz\nnext line", ["dXNlcjpwYXNz"], ["next line"]),
    (f"refresh failed for token {TOKEN}, giving up", [TOKEN], ["refresh failed", "giving up"]),
    (f"key file:\n{PEM}done", ["MIIEvQIBADAN"], ["key file:", "done"]),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEtruncated", ["MIIEtruncated"], []),
    (json.dumps({"type": "service_account", "private_key_id": "abc123def",
                 "private_key": PEM, "client_email": "svc@p.iam.gserviceaccount.com"}),
     ["abc123def", "MIIEvQIBADAN"], ['"client_email": "svc@p.iam.gserviceaccount.com"']),
    (str({"refresh_token": "1//0gSecretRefresh", "client_secret": "GOCSPX-s3cr3t"}),
     ["1//0gSecretRefresh", "GOCSPX-s3cr3t"], ["'refresh_token': '"]),
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG and AKIAIOSFODNN7EXAMPLE",
     ["wJalrXUtnFEMI", "AKIAIOSFODNN7EXAMPLE"], ["AWS_SECRET_ACCESS_KEY="]),
]


@pytest.mark.parametrize("text,secrets,kept", CASES)
def test_secrets_go_and_the_rest_stays(text, secrets, kept):
    out = redact(text)
    for secret in secrets:
        assert secret not in out, out
    for part in kept:
        assert part in out, out
    assert MARK in out
    assert redact(out) == out                    # idempotent


@pytest.mark.parametrize("text", [
    "/photos/2019/<img src=x onerror=alert(1)>.jpg: cannot identify image file",
    "gs://archive/2019/a@b.jpg: file is 300,000,000 bytes, over the --max-file-size limit",
    "/data/tokens/keys.jpg: not an image; key=value pairs in a caption stay",
    "a dog with a key on the beach; the password is in the caption text",
    "exiftool_failed: /p/-@ x.jpg: Error: Not a valid JPEG",
    "",
])
def test_ordinary_messages_are_unchanged(text):
    assert redact(text) == text


def test_log_records_of_any_logger_are_redacted(caplog):
    install_log_redaction()
    install_log_redaction()                      # idempotent
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("google.auth.transport.requests").warning(
            "refreshing %s for %s", TOKEN, f"https://u:pw@h/o?X-Goog-Signature={SIG}")
        try:
            raise PermissionError(f"403 for Bearer {TOKEN}")
        except PermissionError:
            logging.getLogger("apache_beam.io.gcp").exception("upload failed")
    text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in text and SIG not in text and ":pw@" not in text
    assert "refreshing" in text and "upload failed" in text and "PermissionError" in text


def test_stderr_stream_redacts_whole_lines():
    sink = io.StringIO()
    stream = RedactingStream(sink)
    stream.write(f"altbeam caption: pipeline failed: https://h/o?X-Goog-Signature={SIG[:10]}")
    assert sink.getvalue() == ""                 # held until the line ends
    stream.write(f"{SIG[10:]} and more\nprogress 3/9\r")
    stream.write("partial")
    stream.flush()
    assert SIG not in sink.getvalue() and SIG[10:] not in sink.getvalue()
    assert sink.getvalue().endswith(" and more\nprogress 3/9\rpartial")
