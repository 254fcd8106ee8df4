#!/usr/bin/env bash
# Window-aggregation benchmark, shape S-agg: 1M events over 10k users, 100k
# spine rows, 4 functions (count, sum, mean, max) x 3 windows (1h, 1d, 7d).
# fstore's training_from_parquet --agg vs DuckDB (range join + FILTER) and
# Polars (join + filter + group_by) computing the same sawtooth windows
# floor_r(t - W) <= event_ts <= t, whole process, interleaved, median of RUNS.
#
#   bench/compare_agg.sh              (data generated once, seeded, in bench/data/S-agg)
#   FSTORE_BIN=/path/to/training_from_parquet RUNS=9 bench/compare_agg.sh
#
# Prints wall time and peak RSS (from /usr/bin/time) per tool and the ratios
# peer / ours, after checking the three outputs cell by cell (floats within
# the relative 1e-9 of semantics §11). All three write the same columns
# (user_id, ts, the 12 aggregations): a view named by an --agg is not
# point-in-time joined unless its --view asks for plain features.
set -euo pipefail
RUNS=${RUNS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/fstore-target}
VENV=bench/.venv-agg
PY=$VENV/bin/python

# Pinned peers (PyPI).
PEERS=(polars==2.1.0 duckdb==2.0.1 pyarrow==26.0.1 numpy==2.4.6)
if ! "$PY" -c 'import polars, duckdb, pyarrow, numpy' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "${PEERS[@]}"
fi
if [ ! -x /usr/bin/time ]; then
    apt-get update -qq && apt-get install -y -qq time
fi

# FSTORE_BIN=path: a training_from_parquet already built (e.g. a kept copy); else
# the release build of this checkout.
if [ -n "${FSTORE_BIN:-}" ]; then
    BIN=$FSTORE_BIN
else
    cargo build --release -q -p fstore-examples --example training_from_parquet
    BIN=$CARGO_TARGET_DIR/release/examples/training_from_parquet
fi
DATA=bench/data/S-agg
if [ ! -f "$DATA/spine.parquet" ]; then
    echo "generating S-agg into $DATA ..."
    "$PY" bench/agg_peers.py gen "$DATA"
fi
read -r -a AGGS <<< "$("$PY" bench/agg_peers.py args)"
ARGS=(--spine "$DATA/spine.parquet" --timestamp-column ts
    --view "name=txn,path=$DATA/events.parquet,keys=user_id,event=event_ts" "${AGGS[@]}")
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
    printf '  run %s %-7s %6ss %8s KB   (load %s)\n' "$i" "$tool" "$secs" "$kb" "$(cut -d' ' -f1-3 /proc/loadavg)"
}

echo "S-agg: $RUNS interleaved runs per tool on $(nproc) cores; load before: $(uptime)"
for i in $(seq 1 "$RUNS"); do
    run ours "$i" "$BIN" "${ARGS[@]}" --out "$OUT/ours.parquet"
    run duckdb "$i" "$PY" bench/agg_peers.py duckdb "$DATA" "$OUT/duckdb.parquet"
    run polars "$i" "$PY" bench/agg_peers.py polars "$DATA" "$OUT/polars.parquet"
done
echo
echo "our last run:"
sed 's/^/  /' "$OUT/ours.$RUNS.log"
echo
"$PY" bench/agg_peers.py check "$OUT/ours.parquet" "$OUT/duckdb.parquet" "$OUT/polars.parquet"
echo
"$PY" bench/agg_peers.py table "$RESULTS"
echo "load after: $(uptime)"
