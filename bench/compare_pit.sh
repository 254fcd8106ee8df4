#!/usr/bin/env bash
# Point-in-time join benchmark: fstore's training_from_parquet vs Polars join_asof vs
# DuckDB ASOF JOIN, same semantics, whole process, interleaved, median of 3 runs.
#
#   bench/compare_pit.sh [S|M|T]      (default S; data is generated once, seeded)
#
# Prints wall time and peak RSS (from /usr/bin/time) per tool and the ratios
# peer / ours, after checking that the three outputs agree cell by cell.
set -euo pipefail
SHAPE=${1:-S}
RUNS=${RUNS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/fstore-target}
VENV=bench/.venv
PY=$VENV/bin/python

# Peer versions measured in issue 14 (2026-11-30): pinned so figures reproduce.
PEERS=(polars==2.1.0 duckdb==2.0.1 pyarrow==26.0.1)
if ! "$PY" -c 'import polars, duckdb, pyarrow, sys
want = dict(a.split("==") for a in sys.argv[1:])
got = {"polars": polars.__version__, "duckdb": duckdb.__version__, "pyarrow": pyarrow.__version__}
sys.exit(0 if all(got[k] == v for k, v in want.items()) else 1)' "${PEERS[@]}" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "${PEERS[@]}"
fi
"$PY" -c 'import polars, duckdb, pyarrow; print(f"peers: polars {polars.__version__}, duckdb {duckdb.__version__}, pyarrow {pyarrow.__version__}")'
if [ ! -x /usr/bin/time ]; then
    apt-get update -qq && apt-get install -y -qq time
fi

cargo build --release -q -p fstore-examples --example training_from_parquet --example gen_pit_data
BIN=$CARGO_TARGET_DIR/release/examples
DATA=bench/data/$SHAPE
if [ ! -f "$DATA/views.txt" ]; then
    echo "generating shape $SHAPE into $DATA ..."
    "$BIN/gen_pit_data" "$SHAPE" "$DATA"
fi

ARGS=(--spine "$DATA/spine.parquet" --timestamp-column ts)
while read -r line; do ARGS+=(--view "$line"); done < "$DATA/views.txt"
OUT=$DATA/out
mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
: > "$RESULTS"

run() { # tool run-number command...
    local tool=$1 i=$2
    shift 2
    /usr/bin/time -f "%e %M" -o "$OUT/$tool.time" "$@" > "$OUT/$tool.$i.log" 2>&1 ||
        { echo "$tool failed:"; cat "$OUT/$tool.$i.log"; exit 1; }
    read -r secs kb < <(tail -n 1 "$OUT/$tool.time")
    printf '%s\t%s\t%s\n' "$tool" "$secs" "$kb" >> "$RESULTS"
    printf '  run %s %-7s %6ss %8s KB\n' "$i" "$tool" "$secs" "$kb"
}

echo "shape $SHAPE: $RUNS interleaved runs per tool"
for i in $(seq 1 "$RUNS"); do
    echo "  load: $(uptime | sed 's/.*load average: //')"
    run ours "$i" "$BIN/training_from_parquet" "${ARGS[@]}" --out "$OUT/ours.parquet"
    run polars "$i" "$PY" bench/peers.py polars "${ARGS[@]}" --out "$OUT/polars.parquet"
    run duckdb "$i" "$PY" bench/peers.py duckdb "${ARGS[@]}" --out "$OUT/duckdb.parquet"
done
echo "  load: $(uptime | sed 's/.*load average: //')"
echo
echo "our last run:"
sed 's/^/  /' "$OUT/ours.$RUNS.log"
echo
"$PY" bench/peers.py check "$OUT/ours.parquet" "$OUT/polars.parquet" "$OUT/duckdb.parquet"
echo
"$PY" bench/peers.py table "$RESULTS"
