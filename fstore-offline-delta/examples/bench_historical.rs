//! End-to-end `get_historical_features` benchmark on local Delta tables, side
//! by side with DuckDB's ASOF JOIN over the same Parquet files.
//!
//! ```text
//! cargo run --release -p fstore-offline-delta --example bench_historical -- [ROWS_PER_VIEW] [SPINE_ROWS] [RUNS]
//! ```
//!
//! With `RUNS` > 1, fstore's and DuckDB's runs are interleaved and medians
//! printed with their ratio.
//!
//! Defaults: 1,000,000 rows per view, 3 views, 100,000 spine rows, 10,000
//! entities, one year of history written in 10 commits per view, spine times
//! in the last 60 days, ttl 7 days. Prints time, peak RSS (VmHWM, reset before
//! each phase) and rows scanned vs rows in the tables. When
//! `fstore-offline-delta/bench/.venv/bin/python` exists (a venv with `duckdb`),
//! runs `bench/duckdb_asof.py` on the same live Parquet files.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use fstore_core::{
    Definitions, Entity, FeatureSelection, FeatureStore, FeatureView, HistoricalRequest,
    InMemoryOnlineStore, ValueType,
};
use fstore_offline_delta::DeltaOfflineStoreBuilder;

const DAY: i64 = 86_400_000_000;
const VIEWS: usize = 3;
const ENTITIES: i64 = 10_000;
const COMMITS: usize = 10;
const YEAR0: i64 = 1_700_000_000_000_000;

/// xorshift: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: i64) -> i64 {
        (self.next() % n as u64) as i64
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU time (user + system) of this process so far, in seconds (Linux;
/// `/proc/self/stat` counts clock ticks of 10 ms).
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn reset_peak() {
    // Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[tokio::main]
async fn main() -> fstore_core::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.replace('_', "").parse().ok())
        .collect();
    let rows_per_view = args.first().copied().unwrap_or(1_000_000);
    let spine_rows = args.get(1).copied().unwrap_or(100_000);
    let root = std::env::temp_dir().join(format!("fstore-bench-delta-{}", std::process::id()));
    let delta = DeltaOfflineStoreBuilder::new().with_root(root.to_string_lossy());
    let store = FeatureStore::builder()
        .with_offline(Arc::new(delta.clone().build()?))
        .with_registry(Arc::new(delta.build_registry()?))
        .with_online(Arc::new(InMemoryOnlineStore::new()))
        .build()?;
    let mut defs =
        Definitions::new().with_entity(Entity::new("driver", "driver_id", ValueType::Int64));
    let names: Vec<String> = (0..VIEWS).map(|i| format!("view{i}")).collect();
    for n in &names {
        defs = defs.with_feature_view(
            FeatureView::new(n, ["driver"])
                .with_feature("f0", ValueType::Float64)
                .with_feature("f1", ValueType::Int64)
                .with_ttl(Duration::from_secs(7 * 86_400)),
        );
    }
    store.apply(&defs, Default::default()).await?;

    // Write: each commit covers the next slice of the year, rows in time order.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let t0 = Instant::now();
    let span = 365 * DAY;
    for n in &names {
        let per = rows_per_view / COMMITS;
        for c in 0..COMMITS {
            let base = YEAR0 + span * c as i64 / COMMITS as i64;
            let step = span / COMMITS as i64 / per.max(1) as i64;
            let times: Vec<i64> = (0..per as i64).map(|i| base + i * step).collect();
            let batch = RecordBatch::try_new(
                Arc::new(Schema::new(vec![
                    Field::new("driver_id", DataType::Int64, false),
                    Field::new("event_timestamp", ts(), false),
                    Field::new("f0", DataType::Float64, true),
                    Field::new("f1", DataType::Int64, true),
                ])),
                vec![
                    Arc::new(Int64Array::from(
                        (0..per).map(|_| rng.below(ENTITIES)).collect::<Vec<_>>(),
                    )),
                    Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
                    Arc::new(Float64Array::from(
                        (0..per)
                            .map(|_| (rng.next() % 1000) as f64 / 1000.0)
                            .collect::<Vec<_>>(),
                    )),
                    Arc::new(Int64Array::from(
                        (0..per).map(|_| rng.below(100)).collect::<Vec<_>>(),
                    )),
                ],
            )
            .expect("valid batch");
            store.write_history(n, &batch).await?;
        }
    }
    let write_s = t0.elapsed().as_secs_f64();
    println!(
        "setup: {VIEWS} views x {rows_per_view} rows ({COMMITS} commits each) written in {write_s:.1}s under {}",
        root.display()
    );

    // Spine: the last 60 days of the year.
    let spine_start = YEAR0 + span - 60 * DAY;
    let spine = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("ts", ts(), false),
        ])),
        vec![
            Arc::new(Int64Array::from(
                (0..spine_rows)
                    .map(|_| rng.below(ENTITIES))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(
                    (0..spine_rows)
                        .map(|_| spine_start + rng.below(60 * DAY))
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
        ],
    )
    .expect("valid spine");
    let refs: Vec<String> = names
        .iter()
        .flat_map(|n| [format!("{n}:f0"), format!("{n}:f1")])
        .collect();
    let req = HistoricalRequest::new(vec![spine.clone()], "ts", FeatureSelection::refs(refs)?)
        .with_full_feature_names(true);

    // Runs of each tool, interleaved with DuckDB's below; medians reported.
    let runs = args.get(2).copied().unwrap_or(1).max(1);
    reset_peak();
    let base_rss = peak_rss_mib();
    let (t0, c0) = (Instant::now(), cpu_secs());
    let res = store.get_historical_features(&req).await?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - c0;
    let peak = peak_rss_mib();
    let scanned: u64 = res.rows_scanned.values().sum();
    let total = (rows_per_view * VIEWS) as u64;
    let non_null = res
        .batch
        .column_by_name("view0__f0")
        .map_or(0, |c| c.len() - c.null_count());
    println!(
        "fstore/delta get_historical_features: {secs:.3}s (CPU {cpu:.2}s), peak RSS {peak:.0} MiB (+{:.0} over {base_rss:.0} before), \
         rows scanned {scanned} of {total} ({:.1}%), output {} rows, view0.f0 non-null {non_null}",
        peak - base_rss,
        100.0 * scanned as f64 / total as f64,
        res.batch.num_rows()
    );

    // DuckDB on the same live Parquet files.
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/.venv/bin/python");
    if std::env::var_os("FSTORE_BENCH_NO_PEER").is_some() {
        // fstore alone (for profilers): the remaining runs back to back.
        let mut ours = vec![secs];
        for _ in 1..runs {
            let (t0, c0) = (Instant::now(), cpu_secs());
            store.get_historical_features(&req).await?;
            let wall = t0.elapsed().as_secs_f64();
            println!("fstore/delta: {wall:.3}s, CPU {:.2}s", cpu_secs() - c0);
            ours.push(wall);
        }
        println!(
            "fstore/delta median {:.3}s (runs {ours:.3?})",
            median(&mut ours)
        );
        let _ = std::fs::remove_dir_all(&root);
        return Ok(());
    }
    if !python.exists() {
        println!(
            "duckdb: skipped ({} missing; python3 -m venv bench/.venv && bench/.venv/bin/pip install duckdb)",
            python.display()
        );
        let _ = std::fs::remove_dir_all(&root);
        return Ok(());
    }
    let spine_path = root.join("spine.parquet");
    {
        let f = std::fs::File::create(&spine_path).expect("spine file");
        let mut w = parquet::arrow::ArrowWriter::try_new(f, spine.schema(), None).expect("writer");
        w.write(&spine).expect("write spine");
        w.close().expect("close spine");
    }
    let mut views = Vec::new();
    for n in &names {
        let dir = root.join(n);
        let files: Vec<String> = std::fs::read_dir(&dir)
            .expect("table dir")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        views.push(serde_json::json!({
            "name": n, "files": files, "key": "driver_id", "event_col": "event_timestamp",
            "features": ["f0", "f1"], "ttl_seconds": 7 * 86_400,
        }));
    }
    let spine_ts = spine
        .column(1)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .expect("timestamp spine");
    let spine_min = spine_ts.values().iter().min().copied().unwrap_or(0);
    let spine_max = spine_ts.values().iter().max().copied().unwrap_or(0);
    let manifest = serde_json::json!({
        "spine": spine_path, "spine_ts": "ts", "views": views, "threads": 2,
        "spine_min_us": spine_min, "spine_max_us": spine_max,
    });
    let mpath = root.join("manifest.json");
    std::fs::write(&mpath, manifest.to_string()).expect("manifest");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/duckdb_asof.py");
    // Interleaved: DuckDB, fstore, DuckDB, ... (fstore's first run was above).
    let mut duck = Vec::new();
    let mut ours = vec![secs];
    for i in 0..runs {
        if i > 0 {
            let (t0, c0) = (Instant::now(), cpu_secs());
            store.get_historical_features(&req).await?;
            let wall = t0.elapsed().as_secs_f64();
            println!("fstore/delta: {wall:.3}s, CPU {:.2}s", cpu_secs() - c0);
            ours.push(wall);
        }
        let out = std::process::Command::new(&python)
            .arg(&script)
            .arg(&mpath)
            .output()
            .expect("run duckdb");
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        println!(
            "duckdb ASOF JOIN (same parquet files, read_parquet, same time window, 2 threads): {line}{}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        if let Some(s) = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["seconds"].as_f64())
        {
            duck.push(s);
        }
    }
    if !duck.is_empty() {
        let (d, o) = (median(&mut duck), median(&mut ours));
        println!(
            "interleaved medians: fstore/delta {o:.3}s (runs {ours:.3?}), duckdb {d:.3}s (runs {duck:.3?}): duckdb / fstore = {:.2}x",
            d / o
        );
    }
    // The Parquet path on the same rows: each view's live files as one file,
    // `training_from_parquet` (whole process) when FSTORE_BENCH_PARQUET_BIN
    // names its binary.
    if let Ok(bin) = std::env::var("FSTORE_BENCH_PARQUET_BIN") {
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("--spine").arg(&spine_path).args([
            "--timestamp-column",
            "ts",
            "--full-feature-names",
        ]);
        for v in &views {
            let name = v["name"].as_str().expect("name");
            let path = root.join(format!("{name}.parquet"));
            let mut w: Option<parquet::arrow::ArrowWriter<std::fs::File>> = None;
            let mut files: Vec<&str> = v["files"]
                .as_array()
                .expect("files")
                .iter()
                .filter_map(|f| f.as_str())
                .collect();
            // (no ties on (key, event) in this data: file order does not matter)
            files.sort_unstable();
            for f in files {
                let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                    std::fs::File::open(f).expect("data file"),
                )
                .expect("parquet")
                .build()
                .expect("reader");
                for b in r {
                    let b = b.expect("batch");
                    let w = w.get_or_insert_with(|| {
                        parquet::arrow::ArrowWriter::try_new(
                            std::fs::File::create(&path).expect("view file"),
                            b.schema(),
                            None,
                        )
                        .expect("writer")
                    });
                    w.write(&b).expect("write");
                }
            }
            if let Some(w) = w {
                w.close().expect("close");
            }
            cmd.arg("--view").arg(format!(
                "name={name},path={},keys=driver_id,event=event_timestamp,ttl={}",
                path.display(),
                7 * 86_400
            ));
        }
        cmd.arg("--out").arg(root.join("parquet_path_out.parquet"));
        let mut wall = Vec::new();
        for _ in 0..runs {
            let t0 = Instant::now();
            let out = cmd.output().expect("run training_from_parquet");
            wall.push(t0.elapsed().as_secs_f64());
            if !out.status.success() {
                println!(
                    "training_from_parquet failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let o = median(&mut ours);
        println!(
            "parquet path (training_from_parquet, whole process, same rows, no time pruning): median {:.3}s (runs {wall:.3?}); fstore/delta {o:.3}s",
            median(&mut wall)
        );
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
