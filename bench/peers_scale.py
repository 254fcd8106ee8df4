"""DuckDB (and Polars) under a memory limit, for bench/compare_scale.sh.

    peers_scale.py duckdb --memory-limit 4GB --temp-dir DIR [--threads N] [--max-temp SIZE] <peers.py args>
    peers_scale.py polars <peers.py args>

The query is bench/peers.py's, unchanged (same semantics as fstore, checked cell
by cell there): this wrapper only gives DuckDB a memory limit, a spill directory
and a thread count (and, with --max-temp, a cap on its spill files: DuckDB's default
is 90% of the free disk, which at shape XL would starve everything else on the
machine), so the comparison with fstore's DataFusion engine under
`--memory-limit` is like for like. Polars has no memory limit; it runs as in
peers.py (use it only where the data fits in memory).
"""

import sys
import time

import peers


def main():
    cmd, rest = sys.argv[1], sys.argv[2:]
    opts = {"--memory-limit": None, "--temp-dir": None, "--threads": None, "--max-temp": None}
    args = []
    it = iter(rest)
    for a in it:
        if a in opts:
            opts[a] = next(it)
        else:
            args.append(a)
    parsed = peers.parse_args(args)
    t0 = time.perf_counter()
    if cmd == "duckdb":
        import duckdb

        if not opts["--memory-limit"] or not opts["--temp-dir"]:
            raise SystemExit("duckdb needs --memory-limit and --temp-dir")
        connect = duckdb.connect

        def limited(*a, **k):
            con = connect(*a, **k)
            con.execute(f"SET memory_limit='{opts['--memory-limit']}'")
            con.execute(f"SET temp_directory='{opts['--temp-dir']}'")
            # keep the spine's order only where peers.py asks for it (ORDER BY)
            con.execute("SET preserve_insertion_order=false")
            if opts["--max-temp"]:
                con.execute(f"SET max_temp_directory_size='{opts['--max-temp']}'")
            if opts["--threads"]:
                con.execute(f"SET threads={int(opts['--threads'])}")
            return con

        duckdb.connect = limited
        peers.run_duckdb(parsed)
    elif cmd == "polars":
        peers.run_polars(parsed)
    else:
        raise SystemExit(f"unknown peer {cmd}")
    print(f"{cmd}: {time.perf_counter() - t0:.3f} s")


if __name__ == "__main__":
    main()
