#!/usr/bin/env bash
# Out-of-core point-in-time join: fstore's DataFusion engine under a memory limit
# vs DuckDB under the same limit (and Polars, unlimited, where it fits), whole
# process, interleaved, outputs checked cell by cell.
#
#   bench/compare_scale.sh [L|XL|M|S|T]     (default L; data generated once, seeded)
#
# Environment: RUNS (default 1), MEMORY_LIMIT (ours, default 4GiB), DUCKDB_MEMORY
# (default 4GB), DUCKDB_MAX_TEMP (cap on DuckDB's spill files, e.g. 20GB; default:
# DuckDB's own, 90% of the free disk), PARTITIONS (ours, default 8), THREADS (DuckDB, default: cores),
# PEERS (default "duckdb"; "duckdb polars" adds Polars, which has no limit).
#
# Prints wall time and peak RSS (/usr/bin/time -v) per tool and run, with the
# machine's load average at the start of each run, then the ratios peer / ours.
# Spill directories live under bench/data/SHAPE/spill and are emptied after
# every run. XL is about 20 GB of Parquet, plus spill: check `df -h` first.
set -euo pipefail
SHAPE=${1:-L}
RUNS=${RUNS:-1}
MEMORY_LIMIT=${MEMORY_LIMIT:-4GiB}
DUCKDB_MEMORY=${DUCKDB_MEMORY:-4GB}
PARTITIONS=${PARTITIONS:-8}
THREADS=${THREADS:-$(nproc)}
PEERS=${PEERS:-duckdb}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/fstore-target}
VENV=bench/.venv
PY=$VENV/bin/python

if ! "$PY" -c 'import polars, duckdb, pyarrow' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q polars duckdb pyarrow
fi
if [ ! -x /usr/bin/time ]; then
    apt-get update -qq && apt-get install -y -qq time
fi

# Copies: the shared target directory's binaries can be rebuilt by another checkout mid-run.
# SKIP_BUILD=1 uses the copies already in bench/data/.bin.
BIN=bench/data/.bin
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q -p fstore-examples --features datafusion --example training_from_parquet --example gen_pit_data
    mkdir -p "$BIN"
    cp "$CARGO_TARGET_DIR/release/examples/training_from_parquet" "$CARGO_TARGET_DIR/release/examples/gen_pit_data" "$BIN/"
fi
DATA=bench/data/$SHAPE
if [ ! -f "$DATA/views.txt" ]; then
    df -h "$ROOT" | tail -n 1
    echo "generating shape $SHAPE into $DATA ..."
    "$BIN/gen_pit_data" "$SHAPE" "$DATA"
fi

ARGS=(--spine "$DATA/spine.parquet" --timestamp-column ts)
while read -r line; do ARGS+=(--view "$line"); done < "$DATA/views.txt"
OUT=$DATA/out
SPILL=$DATA/spill
mkdir -p "$OUT" "$SPILL"
RESULTS=$OUT/results.tsv
: > "$RESULTS"

run() { # tool run-number command...
    local tool=$1 i=$2
    shift 2
    local load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    /usr/bin/time -v -o "$OUT/$tool.$i.time" "$@" > "$OUT/$tool.$i.log" 2>&1 ||
        { echo "$tool failed:"; tail -n 30 "$OUT/$tool.$i.log"; cat "$OUT/$tool.$i.time"; exit 1; }
    local secs kb
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(j=1;j<=n;j++) s=s*60+a[j]; print s}' "$OUT/$tool.$i.time")
    kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$OUT/$tool.$i.time")
    printf '%s\t%s\t%s\n' "$tool" "$secs" "$kb" >> "$RESULTS"
    printf '  run %s %-7s %8ss %9s KB peak RSS   (load before: %s; spill left: %s)\n' \
        "$i" "$tool" "$secs" "$kb" "$load" "$(du -sh "$SPILL" | cut -f1)"
    rm -rf "${SPILL:?}"/*
}

echo "shape $SHAPE: ours = datafusion engine, --memory-limit $MEMORY_LIMIT, --partitions $PARTITIONS;"
echo "  duckdb: memory_limit='$DUCKDB_MEMORY', threads=$THREADS; $RUNS interleaved run(s) per tool"
for i in $(seq 1 "$RUNS"); do
    # DataFusion spills to the OS temporary directory: TMPDIR points it at $SPILL.
    run ours "$i" env TMPDIR="$SPILL" "$BIN/training_from_parquet" "${ARGS[@]}" \
        --engine datafusion --memory-limit "$MEMORY_LIMIT" --partitions "$PARTITIONS" \
        --out "$OUT/ours.parquet"
    for peer in $PEERS; do
        case $peer in
            duckdb) run duckdb "$i" "$PY" bench/peers_scale.py duckdb --memory-limit "$DUCKDB_MEMORY" \
                --temp-dir "$SPILL" --threads "$THREADS" ${DUCKDB_MAX_TEMP:+--max-temp "$DUCKDB_MAX_TEMP"} "${ARGS[@]}" --out "$OUT/duckdb.parquet" ;;
            polars) run polars "$i" "$PY" bench/peers_scale.py polars "${ARGS[@]}" --out "$OUT/polars.parquet" ;;
            *) echo "unknown peer $peer"; exit 2 ;;
        esac
    done
done
echo
echo "our last run:"
sed 's/^/  /' "$OUT/ours.$RUNS.log"
echo
OTHERS=()
for peer in $PEERS; do OTHERS+=("$OUT/$peer.parquet"); done
"$PY" bench/peers.py check "$OUT/ours.parquet" "${OTHERS[@]}"
echo
"$PY" bench/peers.py table "$RESULTS"
