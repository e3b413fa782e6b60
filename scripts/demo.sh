#!/usr/bin/env bash
# README command 1: set up, caption the bundled sample photos with the bundled default
# model into a Parquet catalog, and print a few rows.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
CATALOG="${1:-out/demo-catalog}"
echo "[altbeam demo] altbeam caption samples/photos --catalog $CATALOG" >&2
.venv/bin/altbeam caption samples/photos --catalog "$CATALOG"
echo "[altbeam demo] altbeam query $CATALOG \"SELECT ...\"" >&2
.venv/bin/altbeam query "$CATALOG" \
    "SELECT regexp_extract(uri, '[^/]+$') AS file, caption_status AS status, caption,
            keywords
     FROM catalog ORDER BY file LIMIT 8"
echo "[altbeam demo] status: ok = the CNN's own concepts back the caption (only these are" \
     "written into photos by default); unsure / contradicted = not to be trusted" >&2
