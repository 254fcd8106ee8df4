"""DuckDB ASOF JOIN over the same Parquet files the Delta benchmark read.

Usage: duckdb_asof.py manifest.json
The manifest (written by `examples/bench_historical.rs`) lists the spine file and,
per view, its live data files, join key, event-time column, features and ttl.
Prints one line: seconds, peak RSS (MiB) of this process, output rows, non-null counts.
"""
import json
import resource
import sys
import time

import duckdb


def main() -> None:
    m = json.load(open(sys.argv[1]))
    con = duckdb.connect()
    con.execute(f"SET threads TO {m.get('threads', 2)}")
    t0 = time.perf_counter()
    sql = "SELECT s.*"
    joins = ""
    for i, v in enumerate(m["views"]):
        files = ", ".join("'" + f + "'" for f in v["files"])
        ttl = int(v["ttl_seconds"])
        for f in v["features"]:
            sql += (
                f", CASE WHEN v{i}.{v['event_col']} >= s.{m['spine_ts']} - INTERVAL {ttl} SECOND "
                f"THEN v{i}.{f} END AS {v['name']}__{f}"
            )
        joins += (
            f" ASOF LEFT JOIN (SELECT {v['key']}, {v['event_col']}, {', '.join(v['features'])} "
            f"FROM read_parquet([{files}]) "
            # The same event-time window fstore pushes down: [min(t) - ttl, max(t)].
            f"WHERE {v['event_col']} BETWEEN make_timestamp({int(m['spine_min_us']) - ttl * 1000000}) "
            f"AND make_timestamp({m['spine_max_us']})) v{i} "
            f"ON s.{v['key']} = v{i}.{v['key']} AND s.{m['spine_ts']} >= v{i}.{v['event_col']}"
        )
    sql += f" FROM read_parquet('{m['spine']}') s" + joins
    first = f"{m['views'][0]['name']}__{m['views'][0]['features'][0]}"
    out, non_null = con.execute(f"SELECT count(*), count({first}) FROM ({sql})").fetchone()
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": round(secs, 3), "peak_rss_mib": round(peak, 1), "rows": out, "view0_f0_non_null": non_null}))


if __name__ == "__main__":
    main()
