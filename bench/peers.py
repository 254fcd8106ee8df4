"""Peer implementations of fstore's point-in-time join, and the output checker.

    peers.py polars|duckdb --spine S.parquet --timestamp-column ts \
        --view name=V,path=P.parquet,keys=k1+k2,event=e[,created=c][,ttl=SECONDS] ... \
        [--full-feature-names] --out OUT.parquet
    peers.py check OURS.parquet OTHER.parquet [OTHER.parquet ...]
    peers.py table RESULTS.tsv

Same semantics as fstore (DESIGN.md section 5), without the created cutoff: per view,
sort the feature rows by (event, created) keeping write order, keep the last row
per (key, event) - the greatest created, then the last written - and take the latest
event <= t (backward as-of join by key); a ttl is a tolerance: the chosen event
must be >= t - ttl (inclusive). Output is in spine order.
"""

import sys
import time

import pyarrow.parquet as pq


def parse_args(argv):
    args = {"views": [], "full": False}
    it = iter(argv)
    for a in it:
        if a == "--spine":
            args["spine"] = next(it)
        elif a == "--timestamp-column":
            args["ts"] = next(it)
        elif a == "--out":
            args["out"] = next(it)
        elif a == "--full-feature-names":
            args["full"] = True
        elif a == "--view":
            spec = dict(p.split("=", 1) for p in next(it).split(","))
            v = {
                "name": spec["name"],
                "path": spec["path"],
                "keys": spec["keys"].split("+"),
                "event": spec["event"],
                "created": spec.get("created"),
                "ttl": float(spec["ttl"]) if "ttl" in spec else None,
            }
            skip = set(v["keys"]) | {v["event"], v["created"]}
            v["features"] = [n for n in pq.read_schema(v["path"]).names if n not in skip]
            args["views"].append(v)
        else:
            raise SystemExit(f"unknown argument {a}")
    return args


def out_name(args, v, f):
    return f"{v['name']}__{f}" if args["full"] else f


def run_polars(args):
    import polars as pl

    ts = args["ts"]
    res = pl.read_parquet(args["spine"]).with_row_index("__rid").sort(ts)
    for i, v in enumerate(args["views"]):
        ev = f"__ev{i}"
        order = [v["event"]] + ([v["created"]] if v["created"] else [])
        f = (
            pl.read_parquet(v["path"], columns=v["keys"] + order + v["features"])
            .sort(order, maintain_order=True)
            .unique(subset=v["keys"] + [v["event"]], keep="last", maintain_order=True)
            .select(
                v["keys"]
                + [pl.col(v["event"]).alias(ev)]
                + [pl.col(c).alias(out_name(args, v, c)) for c in v["features"]]
            )
            .sort(ev, maintain_order=True)
        )
        tol = f"{int(v['ttl'] * 1_000_000)}us" if v["ttl"] is not None else None
        res = res.join_asof(
            f, left_on=ts, right_on=ev, by=v["keys"], strategy="backward", tolerance=tol
        )
        if ev in res.columns:
            res = res.drop(ev)
    res.sort("__rid").drop("__rid").write_parquet(args["out"])


def run_duckdb(args):
    import duckdb

    con = duckdb.connect()
    ts = args["ts"]
    q = lambda s: '"' + s.replace('"', '""') + '"'  # noqa: E731
    lit = lambda s: "'" + s.replace("'", "''") + "'"  # noqa: E731
    con.execute(
        f"CREATE TEMP TABLE spine AS SELECT * FROM read_parquet({lit(args['spine'])}, file_row_number=true)"
    )
    selects, joins = [], []
    for i, v in enumerate(args["views"]):
        keys = ", ".join(q(k) for k in v["keys"])
        order = f"{q(v['created'])} DESC, " if v["created"] else ""
        feats = ", ".join(q(c) for c in v["features"])
        con.execute(
            f"""CREATE TEMP TABLE f{i} AS
            SELECT {keys}, {q(v['event'])} AS __ev, {feats}
            FROM read_parquet({lit(v['path'])}, file_row_number=true)
            QUALIFY row_number() OVER (PARTITION BY {keys}, {q(v['event'])}
                                       ORDER BY {order}file_row_number DESC) = 1"""
        )
        on = " AND ".join(f"s.{q(k)} = f{i}.{q(k)}" for k in v["keys"])
        joins.append(f"ASOF LEFT JOIN f{i} ON {on} AND s.{q(ts)} >= f{i}.__ev")
        for c in v["features"]:
            col = f"f{i}.{q(c)}"
            if v["ttl"] is not None:
                micros = int(v["ttl"] * 1_000_000)
                col = (
                    f"CASE WHEN f{i}.__ev >= s.{q(ts)} - to_microseconds({micros}) "
                    f"THEN {col} END"
                )
            selects.append(f"{col} AS {q(out_name(args, v, c))}")
    sql = (
        f"SELECT s.* EXCLUDE (file_row_number), {', '.join(selects)} FROM spine s "
        + " ".join(joins)
        + " ORDER BY s.file_row_number"
    )
    con.execute(f"COPY ({sql}) TO {lit(args['out'])} (FORMAT parquet)")


def check(ours_path, others):
    import polars as pl

    ours = pl.read_parquet(ours_path)
    ok = True
    for path in others:
        other = pl.read_parquet(path)
        if other.columns != ours.columns or other.height != ours.height:
            print(f"MISMATCH {path}: shape/columns {other.shape} {other.columns} vs {ours.shape} {ours.columns}")
            ok = False
            continue
        bad = []
        for c in ours.columns:
            a = ours[c]
            b = other[c].cast(a.dtype)
            same = (a == b) | (a.is_null() & b.is_null())
            same = same.fill_null(False)
            n = same.len() - same.sum()
            if n:
                first = same.arg_min()
                bad.append(f"{c}: {n} cells differ, first at row {first}: {a[first]!r} vs {b[first]!r}")
        if bad:
            ok = False
            print(f"MISMATCH {path}:\n  " + "\n  ".join(bad))
        else:
            print(f"OK {path}: {ours.height} rows x {ours.width} columns agree cell by cell")
    return ok


def table(path):
    rows = [line.rstrip("\n").split("\t") for line in open(path) if line.strip()]
    by = {}
    for tool, secs, kb in rows:
        by.setdefault(tool, []).append((float(secs), int(kb)))
    med = {}
    for tool, xs in by.items():
        t = sorted(x[0] for x in xs)
        m = sorted(x[1] for x in xs)
        med[tool] = (t[len(t) // 2], m[len(m) // 2], len(xs))
    ours = med.get("ours")
    print(f"{'tool':<8} {'runs':>4} {'median wall s':>14} {'median peak RSS MB':>19} {'time / ours':>12} {'RSS / ours':>11}")
    for tool in ["ours", "polars", "duckdb"]:
        if tool not in med:
            continue
        t, kb, n = med[tool]
        rt = f"{t / ours[0]:.2f}x" if ours else "-"
        rm = f"{kb / ours[1]:.2f}x" if ours else "-"
        print(f"{tool:<8} {n:>4} {t:>14.3f} {kb / 1024:>19.1f} {rt:>12} {rm:>11}")


def main():
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "check":
        sys.exit(0 if check(rest[0], rest[1:]) else 1)
    if cmd == "table":
        table(rest[0])
        return
    args = parse_args(rest)
    t0 = time.perf_counter()
    {"polars": run_polars, "duckdb": run_duckdb}[cmd](args)
    print(f"{cmd}: {time.perf_counter() - t0:.3f} s")


if __name__ == "__main__":
    main()
