#!/usr/bin/env bash
# Re-run every benchmark in bench/ and write each table to docs/benchmarks/<name>.txt
# (raw figures beside it as <name>.json where the script writes JSON).
#
#   bench/run_all.sh                        # the bundled model (model/default)
#   RUN_DIR=runs/sat1 bench/run_all.sh      # also compare beam widths exported from a run
#   MODEL=DIR OUT=/tmp/bench bench/run_all.sh
#   FULL=1 bench/run_all.sh                 # memory at 1k/5k images (adds ~10 min)
#   TINY=1 bench/run_all.sh                 # tiny random model: checks the scripts, ~3 min
#
# Settings are sized to finish in under 15 minutes on a 2-core CPU with the Lite0 model
# (FULL=1 excepted). Benchmarks print figures; nothing here passes or fails on speed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-docs/benchmarks}
MODEL=${MODEL:-$("$PY" -c 'from altbeam.model import DEFAULT_MODEL_DIR; print(DEFAULT_MODEL_DIR)')}
RUN_DIR=${RUN_DIR:-}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
mkdir -p "$OUT"

if [[ -n "${TINY:-}" ]]; then
  SOURCE=(--tiny)
  MEMORY_SOURCE=(--tiny)
  tiny_dir=$(mktemp -d)
  trap 'rm -rf "$tiny_dir"' EXIT
  "$PY" -c "import sys; from tests.support.tiny import export_tiny_model; export_tiny_model(sys.argv[1])" \
    "$tiny_dir/model" 2>/dev/null
  MODEL=$tiny_dir/model
  IMAGES=8; MEMORY_COUNTS=8,32
elif [[ -n "$RUN_DIR" ]]; then
  SOURCE=(--run "$RUN_DIR")
  MEMORY_SOURCE=(--model "$MODEL")
  IMAGES=64; MEMORY_COUNTS=250,1250
else
  SOURCE=(--model "$MODEL")
  MEMORY_SOURCE=(--model "$MODEL")
  IMAGES=64; MEMORY_COUNTS=250,1250
fi
[[ -n "${FULL:-}" ]] && MEMORY_COUNTS=1000,5000

# bench NAME CMD...: run CMD, print its table and save it (with the machine/versions
# header for scripts that do not print one themselves) to $OUT/NAME.txt.
bench() {
  local name=$1; shift
  echo "== $name: $*" >&2
  local start=$SECONDS
  {
    if [[ $name == decode || $name == pipeline_throughput ]]; then
      "$PY" bench/_common.py "$@"
    fi
    "$@" 2> >(grep -v -e 'cuda' -e 'absl::' -e 'cuInit' >&2)
  } | tee "$OUT/$name.txt"
  echo "== $name done in $((SECONDS - start)) s" >&2
}

bench decode "$PY" bench/decode.py --images 5 --model "$MODEL"
bench pipeline_throughput "$PY" bench/pipeline_throughput.py --images "$IMAGES" \
  --batch-size 16 --model "$MODEL"
bench model_throughput "$PY" bench/model_throughput.py "${SOURCE[@]}" \
  --images $((IMAGES / 2)) --json "$OUT/model_throughput.json"
bench decoder_width "$PY" bench/decoder_width.py --model "$MODEL" --attention 512,128 --rounds 2 \
  --images $((IMAGES / 2)) --json "$OUT/decoder_width.json"
bench vs_tutorial_loop "$PY" bench/vs_tutorial_loop.py "${SOURCE[@]}" \
  --images "$IMAGES" --batch-size $((IMAGES / 2)) --json "$OUT/vs_tutorial_loop.json"
bench memory "$PY" bench/memory.py "${MEMORY_SOURCE[@]}" --counts "$MEMORY_COUNTS" \
  --json "$OUT/memory.json"
JOIN_COUNTS=10000,100000
[[ -n "${FULL:-}" ]] && JOIN_COUNTS=10000,100000,1000000
[[ -n "${TINY:-}" ]] && JOIN_COUNTS=2000
bench incremental_join "$PY" bench/incremental_join.py --catalogued "$JOIN_COUNTS" \
  --json "$OUT/incremental_join.json"
echo "tables written to $OUT/" >&2
