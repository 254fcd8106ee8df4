"""Peers of bench/compare_agg.sh: the S-agg data, DuckDB and Polars computing
fstore's sawtooth windows, and the cell-by-cell check.

    agg_peers.py gen DIR                      # events.parquet + spine.parquet (seeded)
    agg_peers.py duckdb|polars DIR OUT        # the 12 aggregation columns, spine order
    agg_peers.py check OURS DUCKDB POLARS     # cell by cell (floats: relative 1e-9)
    agg_peers.py table RESULTS.tsv            # medians and ratios

Window at spine time t (semantics §11): events of the spine row's user with
floor_r(t - W) <= event_ts <= t, r the default hop of W (1h -> 5m, 1d -> 1h,
7d -> 1h). Functions: count, sum, mean, max of `amount` (nulls ignored; over
no value count 0, the rest null).
"""

import statistics
import sys
import time

US = 1_000_000
H = 3600 * US
D = 24 * H
# (name, W µs, hop µs)
WINDOWS = [("1h", H, 5 * 60 * US), ("1d", D, H), ("7d", 7 * D, H)]
FUNCS = ["count", "sum", "mean", "max"]
USERS, EVENTS, SPINE = 10_000, 1_000_000, 100_000
T0 = 1_767_225_600 * US  # 2026-01-01T00:00:00Z


def agg_args():
    return [f"txn:amount:{f}:{w}" for w, _, _ in WINDOWS for f in FUNCS]


def columns():
    return [f"amount_{f}_{w}" for w, _, _ in WINDOWS for f in FUNCS]


def gen(d):
    import os

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(42)
    ts_type = pa.timestamp("us", tz="UTC")
    # 30 days of events, unsorted; whole minutes half of the time (hop boundaries)
    ev_ts = T0 + rng.integers(0, 30 * D, EVENTS)
    ev_ts = np.where(rng.random(EVENTS) < 0.5, ev_ts // (60 * US) * (60 * US), ev_ts)
    amount = np.round(rng.lognormal(3.0, 1.0, EVENTS), 2)
    mask = rng.random(EVENTS) < 0.05
    events = pa.table(
        {
            "user_id": pa.array(rng.integers(0, USERS, EVENTS), pa.int64()),
            "event_ts": pa.array(ev_ts, ts_type),
            "amount": pa.array(amount, pa.float64(), mask=mask),
        }
    )
    pq.write_table(events, f"{d}/events.parquet", row_group_size=128 * 1024)
    sp_ts = T0 + D + rng.integers(0, 30 * D, SPINE)
    spine = pa.table(
        {
            "user_id": pa.array(rng.integers(0, USERS, SPINE), pa.int64()),
            "ts": pa.array(sp_ts, ts_type),
        }
    )
    pq.write_table(spine, f"{d}/spine.parquet", row_group_size=128 * 1024)


def duckdb_run(d, out):
    import duckdb

    con = duckdb.connect()
    lo = ", ".join(f"(t - {w}) // {r} * {r} AS lo_{n}" for n, w, r in WINDOWS)
    con.execute(
        f"CREATE TABLE s AS SELECT file_row_number AS rn, user_id, ts, epoch_us(ts) AS t, {lo} "
        f"FROM read_parquet('{d}/spine.parquet', file_row_number = true)"
    )
    con.execute(
        "CREATE TABLE e AS SELECT user_id, epoch_us(event_ts) AS et, amount "
        f"FROM read_parquet('{d}/events.parquet')"
    )
    sql_f = {"count": "count", "sum": "sum", "mean": "avg", "max": "max"}
    aggs = ", ".join(
        f"{sql_f[f]}(e.amount) FILTER (WHERE e.et >= s.lo_{n}) AS amount_{f}_{n}"
        for n, _, _ in WINDOWS
        for f in FUNCS
    )
    widest = max(WINDOWS, key=lambda x: x[1])[0]
    con.execute(
        f"COPY (SELECT any_value(s.user_id) AS user_id, any_value(s.ts) AS ts, {aggs} "
        f"FROM s LEFT JOIN e ON e.user_id = s.user_id AND e.et >= s.lo_{widest} AND e.et <= s.t "
        f"GROUP BY s.rn ORDER BY s.rn) TO '{out}' (FORMAT parquet)"
    )


def polars_run(d, out):
    import polars as pl

    s = pl.scan_parquet(f"{d}/spine.parquet").with_row_index("rn")
    s = s.with_columns(t=pl.col("ts").dt.epoch("us"))
    s = s.with_columns(
        [((pl.col("t") - w) // r * r).alias(f"lo_{n}") for n, w, r in WINDOWS]
    )
    e = pl.scan_parquet(f"{d}/events.parquet").select(
        "user_id", pl.col("event_ts").dt.epoch("us").alias("et"), "amount"
    )
    widest = max(WINDOWS, key=lambda x: x[1])[0]
    j = s.join(e, on="user_id", how="inner").filter(
        (pl.col("et") >= pl.col(f"lo_{widest}")) & (pl.col("et") <= pl.col("t"))
    )
    exprs = []
    for n, _, _ in WINDOWS:
        v = pl.col("amount").filter(pl.col("et") >= pl.col(f"lo_{n}"))
        exprs += [
            v.count().alias(f"amount_count_{n}"),
            pl.when(v.count() > 0).then(v.sum()).alias(f"amount_sum_{n}"),
            v.mean().alias(f"amount_mean_{n}"),
            v.max().alias(f"amount_max_{n}"),
        ]
    g = j.group_by("rn").agg(exprs)
    res = (
        s.select("rn", "user_id", "ts")
        .join(g, on="rn", how="left")
        .sort("rn")
        .with_columns([pl.col(f"amount_count_{n}").fill_null(0).cast(pl.Int64) for n, _, _ in WINDOWS])
        .select(["user_id", "ts"] + columns())
    )
    res.sink_parquet(out)


def check(ours, *peers):
    import numpy as np
    import pyarrow.parquet as pq

    o = pq.read_table(ours)
    for p in peers:
        t = pq.read_table(p)
        assert t.num_rows == o.num_rows, f"{p}: {t.num_rows} rows, ours {o.num_rows}"
        assert t.column_names == o.column_names, f"{p}: columns {t.column_names}, ours {o.column_names}"
        for c in ["user_id", "ts"]:
            a = o[c].cast("int64").to_numpy()
            b = t[c].cast("int64").to_numpy()
            assert np.array_equal(a, b), f"{p}: column {c} differs (spine order)"
        cells = 0
        for c in columns():
            a, b = o[c].combine_chunks(), t[c].combine_chunks()
            an, bn = a.is_null().to_numpy(zero_copy_only=False), b.is_null().to_numpy(zero_copy_only=False)
            bad = np.nonzero(an != bn)[0]
            assert len(bad) == 0, f"{p}: {c} null mismatch at row {bad[0]}: ours {a[bad[0]]} peer {b[bad[0]]}"
            av = a.cast("float64").fill_null(0).to_numpy()
            bv = b.cast("float64").fill_null(0).to_numpy()
            if c.startswith("amount_count") or c.startswith("amount_max"):
                bad = np.nonzero(av != bv)[0]
            else:
                bad = np.nonzero(np.abs(av - bv) > 1e-9 * np.maximum(np.abs(av), np.abs(bv)))[0]
            assert len(bad) == 0, f"{p}: {c} differs at row {bad[0]}: ours {av[bad[0]]!r} peer {bv[bad[0]]!r}"
            cells += len(a)
        print(f"check: {ours} == {p}: {cells} aggregation cells ({o.num_rows} rows x {len(columns())})")


def table(path):
    runs = {}
    for line in open(path):
        tool, secs, kb = line.split("\t")
        runs.setdefault(tool, []).append((float(secs), int(kb)))
    med = {t: statistics.median(s for s, _ in r) for t, r in runs.items()}
    print(f"{'tool':<8} {'median s':>9} {'runs':>24} {'peak RSS MB':>12} {'vs ours':>8}")
    for t, r in runs.items():
        rs = " ".join(f"{s:.2f}" for s, _ in r)
        print(
            f"{t:<8} {med[t]:>9.2f} {rs:>24} {max(k for _, k in r) / 1024:>12.0f} {med[t] / med['ours']:>7.2f}x"
        )


if __name__ == "__main__":
    cmd = sys.argv[1]
    t = time.perf_counter()
    if cmd == "gen":
        gen(sys.argv[2])
    elif cmd == "args":
        print(" ".join(f"--agg {a}" for a in agg_args()))
    elif cmd == "duckdb":
        duckdb_run(sys.argv[2], sys.argv[3])
    elif cmd == "polars":
        polars_run(sys.argv[2], sys.argv[3])
    elif cmd == "check":
        check(sys.argv[2], *sys.argv[3:])
    elif cmd == "table":
        table(sys.argv[2])
    else:
        sys.exit(f"unknown command {cmd}")
    if cmd in ("duckdb", "polars"):
        print(f"{cmd}: {time.perf_counter() - t:.3f} s")
