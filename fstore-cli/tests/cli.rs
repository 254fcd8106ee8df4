//! End-to-end tests of the `fstore` binary, run as a process against the
//! embedded defaults: a file registry and local Delta tables in a temp dir,
//! and Redis (scripts/servers/redis.sh) where an online store must outlive
//! one process.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use fstore_core::arrow_array::{
    Array, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use fstore_core::arrow_schema::{DataType, Field, Schema, TimeUnit};
use fstore_core::{FeatureSelection, FeatureStore, FileRegistry, HistoricalRequest};
use fstore_offline_delta::DeltaOfflineStoreBuilder;

const DEFS_V1: &str = r#"
[entities.driver]
join_keys = [{ name = "driver_id", type = "int64" }]

[feature_views.driver_stats]
entities = ["driver"]
ttl_seconds = 86400
features = [
  { name = "conv_rate", type = "float64" },
]
"#;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new(online: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "[registry]\nbackend = \"file\"\npath = \"{}\"\n\n[offline]\nbackend = \"delta\"\nroot = \"{}\"\n\n{online}\n",
            dir.path().join("registry").display(),
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("fstore.toml"), cfg).unwrap();
        std::fs::create_dir_all(dir.path().join("defs")).unwrap();
        Self { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn write_defs(&self, text: &str) {
        std::fs::write(self.path("defs/features.toml"), text).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_fstore"))
            .arg("--config")
            .arg(self.path("fstore.toml"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        eprintln!(
            "$ fstore {}\n-> {:?}\nstdout:\n{}stderr:\n{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn code(&self, args: &[&str]) -> i32 {
        self.run(args).status.code().unwrap()
    }

    /// The same stores, in this process, through the library.
    fn library(&self) -> FeatureStore {
        FeatureStore::builder()
            .with_registry(Arc::new(FileRegistry::open(self.path("registry")).unwrap()))
            .with_offline(Arc::new(
                DeltaOfflineStoreBuilder::new()
                    .with_root(self.path("data").to_string_lossy())
                    .build()
                    .unwrap(),
            ))
            .build()
            .unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// History: driver 1 at base+1s (0.1) and base+3s (0.3); driver 2 at base+2s (0.2).
async fn write_history(store: &FeatureStore, base_us: i64) {
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("event_timestamp", ts_type(), false),
            Field::new("conv_rate", DataType::Float64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 1])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    base_us + 1_000_000,
                    base_us + 2_000_000,
                    base_us + 3_000_000,
                ])
                .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(vec![0.1, 0.2, 0.3])),
        ],
    )
    .unwrap();
    store.write_history("driver_stats", &batch).await.unwrap();
}

#[test]
fn plan_and_apply_exit_codes_and_breaking_change_refused() {
    let env = Env::new("");
    env.write_defs(DEFS_V1);
    // New definitions: changes.
    let o = env.run(&["plan", "defs"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o).contains("+ feature view 'driver_stats'"),
        "{}",
        stdout(&o)
    );
    assert_eq!(env.code(&["apply", "--dry-run", "defs"]), 2);
    assert_eq!(env.code(&["versions"]), 0);
    assert_eq!(
        stdout(&env.run(&["versions"])),
        "",
        "dry run committed nothing"
    );
    let o = env.run(&["apply", "defs"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("applied: registry version 1"),
        "{}",
        stdout(&o)
    );
    // Same definitions: no change.
    assert_eq!(env.code(&["plan", "defs"]), 0);
    assert_eq!(env.code(&["apply", "defs"]), 0);
    // An added feature: a safe change.
    env.write_defs(&DEFS_V1.replace(
        "{ name = \"conv_rate\", type = \"float64\" },",
        "{ name = \"conv_rate\", type = \"float64\" },\n  { name = \"trips\", type = \"int64\" },",
    ));
    assert_eq!(env.code(&["plan", "defs"]), 2);
    assert_eq!(env.code(&["apply", "defs"]), 0);
    // A type change: breaking. plan says 3; apply refuses with 3 and commits nothing.
    env.write_defs(&DEFS_V1.replace("\"float64\"", "\"string\""));
    let o = env.run(&["plan", "defs"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stdout(&o).contains("BREAKING"), "{}", stdout(&o));
    let o = env.run(&["apply", "defs"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
    let versions = stdout(&env.run(&["versions"]));
    assert_eq!(versions.lines().count(), 2, "{versions}");
    let o = env.run(&["apply", "--force", "defs"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("applied: registry version 3"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn bad_definition_files_name_file_line_and_key() {
    let env = Env::new("");
    env.write_defs(&DEFS_V1.replace("ttl_seconds", "ttl_secs"));
    let o = env.run(&["plan", "defs"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("defs/features.toml:7: unknown key 'feature_views.driver_stats.ttl_secs'"),
        "{e}"
    );
    // Syntax error: file and line.
    env.write_defs("[entities.driver]\njoin_keys = [{ name = \"driver_id\", type = \"int64\" }\n");
    let e = stderr(&env.run(&["plan", "defs"]));
    assert!(e.contains("defs/features.toml:2"), "{e}");
    // Unknown entity: the view's file and line, and the entity's name.
    env.write_defs(&DEFS_V1.replace("entities = [\"driver\"]", "entities = [\"rider\"]"));
    let o = env.run(&["apply", "defs"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("defs/features.toml:5") && e.contains("rider"),
        "{e}"
    );
    assert_eq!(stdout(&env.run(&["versions"])), "", "nothing applied");
}

#[test]
fn bad_config_key_and_backend_name_file_line_and_key() {
    let env =
        Env::new("[online]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:1\"\npasword = \"x\"");
    let o = env.run(&["list"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("fstore.toml:12") && e.contains("'online.pasword'"),
        "{e}"
    );
    let env = Env::new("[online]\nbackend = \"mongo\"");
    let e = stderr(&env.run(&["list"]));
    assert!(e.contains("fstore.toml:10") && e.contains("'mongo'"), "{e}");
}

#[test]
fn config_show_redacts_and_env_overrides() {
    let env = Env::new(
        "[online]\nbackend = \"redis\"\nurl = \"redis://app:s3cret@127.0.0.1:1\"\npassword = \"s3cret\"",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_fstore"))
        .args(["config", "show"])
        .env("FSTORE_CONFIG", env.path("fstore.toml"))
        .env("FSTORE_REDIS_KEY_PREFIX", "from_env")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let s = stdout(&out);
    assert!(!s.contains("s3cret"), "{s}");
    assert!(s.contains("redis://app:***@127.0.0.1:1"), "{s}");
    assert!(
        s.contains("key_prefix = \"from_env\"  # env FSTORE_REDIS_KEY_PREFIX"),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn historical_parquet_equals_library_answer() {
    let env = Env::new("");
    env.write_defs(DEFS_V1);
    assert_eq!(env.code(&["apply", "defs"]), 0);
    let lib = env.library();
    write_history(&lib, 0).await;
    // Spine: driver 1 at 2s and 4s, driver 2 at 1s (before its data), driver 3.
    let spine = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("driver_id", DataType::Int64, false),
            Field::new("ts", ts_type(), false),
            Field::new("label", DataType::Int64, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1, 1, 2, 3])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![2_000_000, 4_000_000, 1_000_000, 5_000_000])
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from(vec![10, 11, 12, 13])),
        ],
    )
    .unwrap();
    let f = std::fs::File::create(env.path("spine.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, spine.schema(), None).unwrap();
    w.write(&spine).unwrap();
    w.close().unwrap();
    let o = env.run(&[
        "historical",
        "--spine",
        "spine.parquet",
        "--timestamp-column",
        "ts",
        "--features",
        "driver_stats:conv_rate",
        "--out",
        "train.parquet",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let f = std::fs::File::open(env.path("train.parquet")).unwrap();
    let got: Vec<RecordBatch> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    assert_eq!(got.len(), 1, "one small batch");
    let got = &got[0];
    let want = lib
        .get_historical_features(&HistoricalRequest::new(
            vec![spine],
            "ts",
            FeatureSelection::refs(["driver_stats:conv_rate"]).unwrap(),
        ))
        .await
        .unwrap()
        .batch;
    assert_eq!(got.num_rows(), 4);
    for (i, f) in want.schema().fields().iter().enumerate() {
        assert_eq!(
            got.column_by_name(f.name()).unwrap().to_data(),
            want.column(i).to_data(),
            "column {}",
            f.name()
        );
    }
    let conv = got
        .column_by_name("conv_rate")
        .unwrap()
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap()
        .clone();
    assert_eq!(
        conv.iter().collect::<Vec<_>>(),
        vec![Some(0.1), Some(0.3), None, None]
    );
}

fn redis_section(url: &str, prefix: &str) -> String {
    format!(
        "[online]\nbackend = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\nconnect_timeout = \"1s\"\ncommand_timeout = \"1s\""
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn materialize_then_get_across_processes() {
    let Some(url) = fstore_core::testkit::server_url("FSTORE_TEST_REDIS_URL") else {
        return;
    };
    let prefix = fstore_core::testkit::unique_name("cli");
    let env = Env::new(&redis_section(&url, &prefix));
    env.write_defs(DEFS_V1);
    assert_eq!(env.code(&["apply", "defs"]), 0);
    // Recent event times: Redis expires entities natively at event + ttl.
    let base = (Utc::now().timestamp() - 3600) * 1_000_000;
    write_history(&env.library(), base).await;
    let at = |s: i64| {
        Utc.timestamp_micros(base + s * 1_000_000)
            .unwrap()
            .to_rfc3339()
    };
    let end = at(3);
    let o = env.run(&["materialize-incremental", "--end", &end]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("read=3\twritten=2\tskipped=1"),
        "{}",
        stdout(&o)
    );
    // Plain progress lines, not a bar: stderr is not a terminal here.
    assert!(
        stderr(&o).contains("materialize driver_stats: 3 rows read"),
        "{}",
        stderr(&o)
    );
    let now = at(10);
    let o = env.run(&[
        "get",
        "1",
        "2",
        "3",
        "--features",
        "driver_stats:conv_rate",
        "--now",
        &now,
    ]);
    assert_eq!(o.status.code(), Some(0));
    let s = stdout(&o);
    assert!(
        s.contains(&format!(
            "1\n  driver_stats:conv_rate\t0.3\tPresent\t{}",
            at(3)
        )),
        "{s}"
    );
    assert!(
        s.contains("2\n  driver_stats:conv_rate\t0.2\tPresent"),
        "{s}"
    );
    assert!(
        s.contains("3\n  driver_stats:conv_rate\tnull\tNotFound\t-"),
        "{s}"
    );
    // The watermark is in the registry: a second run reads nothing.
    let o = env.run(&["materialize-incremental", "driver_stats", "--end", &end]);
    assert!(stdout(&o).contains("read=0"), "{}", stdout(&o));
    let o = env.run(&["describe", "driver_stats"]);
    assert!(stdout(&o).contains("watermark[redis:"), "{}", stdout(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_server_fails_within_timeout_and_applies_nothing() {
    // Port 1 on loopback: nothing listens.
    let env = Env::new(&redis_section("redis://127.0.0.1:1", "unreachable"));
    env.write_defs(DEFS_V1);
    assert_eq!(env.code(&["apply", "defs"]), 0);
    write_history(&env.library(), 0).await;
    let start = Instant::now();
    let o = env.run(&["materialize-incremental", "--end", "now"]);
    let took = start.elapsed();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("error: ") && stderr(&o).contains("redis"),
        "{}",
        stderr(&o)
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // Nothing half-applied: no watermark was committed.
    let o = env.run(&["describe", "driver_stats"]);
    assert!(!stdout(&o).contains("watermark["), "{}", stdout(&o));
    let start = Instant::now();
    let o = env.run(&["get", "1", "--features", "driver_stats:conv_rate"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(stderr(&o).contains("redis"), "{}", stderr(&o));
}
