//! A real Ballista cluster on 127.0.0.1: this crate's scheduler binary and two
//! executor binaries as separate processes (built by cargo for this test), free
//! ports, killed when the test ends, passed or not.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow_array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field};
use fstore_core::agg::{AggOptions, AggView};
use fstore_core::engine::agg::{AggEngineView, AggFeature, aggregation_plan};
use fstore_core::engine::{
    EngineConfig, EngineView, JoinAlgorithm, parquet_plan, pit_join_plan_with,
};
use fstore_core::pit::{PitOptions, PitView, point_in_time_join};
use fstore_core::{AggFunction, Aggregation, JoinKey, ValueType};
use futures::TryStreamExt;
use parquet::arrow::ArrowWriter;

const SCHEDULER: &str = env!("CARGO_BIN_EXE_fstore-ballista-scheduler");
const EXECUTOR: &str = env!("CARGO_BIN_EXE_fstore-ballista-executor");
/// Generous: the machine running CI is shared and debug builds start slowly.
const STARTUP: Duration = Duration::from_secs(120);

/// A port nothing listens on right now (the OS picks it; released at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A child process, killed and reaped on drop; its stderr goes to `log`.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, bin: &str, args: &[String], dir: &Path, stdout: Stdio) -> Self {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(File::create(&log).expect("create log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({bin}): {e}"));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the process's log if it has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); its log:\n{}",
                self.name,
                self.log()
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scheduler and `n` executors, each a separate process on 127.0.0.1.
struct Cluster {
    scheduler: Proc,
    executors: Vec<Proc>,
    url: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut scheduler = Proc::spawn(
            "scheduler",
            SCHEDULER,
            &["--bind-host", "127.0.0.1", "--port", &port.to_string()].map(String::from),
            dir.path(),
            Stdio::piped(),
        );
        // The scheduler prints the number of registered executors on stdout.
        let (tx, registered) = mpsc::channel::<usize>();
        let stdout = scheduler.child.stdout.take().expect("scheduler stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix(fstore_ballista::EXECUTORS_REGISTERED)
                    && tx.send(n.trim().parse().expect("executor count")).is_err()
                {
                    break;
                }
            }
        });
        let deadline = Instant::now() + STARTUP;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            scheduler.assert_running();
            assert!(
                Instant::now() < deadline,
                "scheduler not listening on {port} after {STARTUP:?}; log:\n{}",
                scheduler.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let executors = (0..n)
            .map(|i| {
                let work = dir.path().join(format!("executor{i}"));
                std::fs::create_dir_all(&work).expect("work dir");
                let args = [
                    "--bind-host",
                    "127.0.0.1",
                    "--port",
                    &free_port().to_string(),
                    "--grpc-port",
                    &free_port().to_string(),
                    "--scheduler-host",
                    "127.0.0.1",
                    "--scheduler-port",
                    &port.to_string(),
                    "--vcores",
                    "2",
                    "--work-dir",
                    work.to_str().expect("utf-8 path"),
                ]
                .map(String::from);
                Proc::spawn(
                    &format!("executor{i}"),
                    EXECUTOR,
                    &args,
                    dir.path(),
                    Stdio::null(),
                )
            })
            .collect();
        let mut cluster = Self {
            scheduler,
            executors,
            url: format!("df://127.0.0.1:{port}"),
            dir,
        };
        cluster.wait_for_executors(n, deadline, &registered);
        cluster
    }

    fn wait_for_executors(
        &mut self,
        n: usize,
        deadline: Instant,
        registered: &mpsc::Receiver<usize>,
    ) {
        loop {
            self.scheduler.assert_running();
            for e in &mut self.executors {
                e.assert_running();
            }
            match registered.recv_timeout(Duration::from_millis(200)) {
                Ok(count) if count == n => return,
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("scheduler closed stdout; log:\n{}", self.scheduler.log())
                }
            }
            assert!(
                Instant::now() < deadline,
                "{n} executors not registered after {STARTUP:?}; scheduler log:\n{}",
                self.scheduler.log()
            );
        }
    }

    /// Tasks each executor ran so far (Ballista logs one line per task).
    fn tasks_per_executor(&self) -> Vec<usize> {
        self.executors
            .iter()
            .map(|e| e.log().matches("Execute task").count())
            .collect()
    }
}

/// `files` Parquet files of `(k: Int64, name: Utf8, v: Int64)` rows.
fn write_parquet(dir: &Path, files: usize, rows: usize) -> Vec<(i64, String, i64)> {
    std::fs::create_dir_all(dir).expect("data dir");
    let mut all = Vec::new();
    for f in 0..files {
        let rows: Vec<(i64, String, i64)> = (0..rows)
            .map(|i| {
                let n = (f * rows + i) as i64;
                (n % 37, format!("n{}", n % 5), n * 3 - 100)
            })
            .collect();
        let batch = RecordBatch::try_from_iter([
            (
                "k",
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.1.as_str()),
                )),
            ),
            (
                "v",
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ),
        ])
        .expect("batch");
        let file = File::create(dir.join(format!("part-{f}.parquet"))).expect("parquet file");
        let mut w = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
        all.extend(rows);
    }
    all
}

fn i64s(batch: &RecordBatch, col: usize) -> Vec<i64> {
    let a = batch
        .column(col)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("Int64 column");
    assert_eq!(a.null_count(), 0);
    a.values().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_parquet_runs_on_two_executor_processes() {
    let cluster = Cluster::start(2);
    let data = cluster.dir.path().join("data");
    let rows = write_parquet(&data, 8, 2_000);

    let session = fstore_ballista::connect(&cluster.url)
        .await
        .expect("connect");
    let ctx = session.context();
    ctx.register_parquet("t", data.to_str().expect("utf-8"), Default::default())
        .await
        .expect("register parquet");
    // A group-by over 8 files: scan tasks, a hash shuffle, then the final aggregate.
    let batches = ctx
        .sql("SELECT k, count(*) AS n, sum(v) AS s, count(DISTINCT name) AS d FROM t GROUP BY k ORDER BY k")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("query on the cluster");

    let mut want: BTreeMap<i64, (i64, i64, std::collections::BTreeSet<String>)> = BTreeMap::new();
    for (k, name, v) in rows {
        let e = want.entry(k).or_default();
        e.0 += 1;
        e.1 += v;
        e.2.insert(name);
    }
    let mut got = Vec::new();
    for b in &batches {
        let (k, n, s, d) = (i64s(b, 0), i64s(b, 1), i64s(b, 2), i64s(b, 3));
        for i in 0..b.num_rows() {
            got.push((k[i], n[i], s[i], d[i]));
        }
    }
    let want: Vec<_> = want
        .into_iter()
        .map(|(k, (n, s, names))| (k, n, s, names.len() as i64))
        .collect();
    assert_eq!(got, want);

    let tasks = cluster.tasks_per_executor();
    assert!(
        tasks.iter().all(|&t| t > 0),
        "every executor process ran tasks: {tasks:?}"
    );
}

#[tokio::test]
async fn unreachable_scheduler_is_a_clear_error() {
    // Nothing listens on this port.
    let url = format!("df://127.0.0.1:{}", free_port());
    let Err(err) = fstore_ballista::connect(&url).await else {
        panic!("connected to {url}, where nothing listens");
    };
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            fstore_core::Error::Unavailable {
                backend: "ballista",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let endpoint = url.replace("df://", "http://");
    assert!(
        msg.contains(&format!(
            "cannot reach the Ballista scheduler at {endpoint}"
        )),
        "{msg}"
    );
}

#[test]
fn executor_without_scheduler_exits_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scheduler_port = free_port();
    let out = Command::new(EXECUTOR)
        .args(
            [
                "--port",
                &free_port().to_string(),
                "--grpc-port",
                &free_port().to_string(),
                "--scheduler-host",
                "127.0.0.1",
                "--scheduler-port",
                &scheduler_port.to_string(),
                "--work-dir",
                dir.path().to_str().expect("utf-8"),
            ]
            .map(String::from),
        )
        .env("RUST_LOG", "off")
        .output()
        .expect("run executor");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "executor cannot reach the scheduler at 127.0.0.1:{scheduler_port}"
        )),
        "{stderr}"
    );
}

/// splitmix64: seeded test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
const T0: i64 = 1_704_067_200_000_000; // 2024-01-01Z
const TTL_DAYS: i64 = 2;
/// Users: about 11 profile rows each over 30 days, so the 2-day TTL both hits
/// and misses.
const USERS: u64 = 400;

fn ts(v: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
}

/// Row groups of 250 rows: the engine's scans read the files in pieces of row
/// groups (byte ranges), cut inside files.
fn write_file(path: &Path, batch: &RecordBatch) {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(250))
        .build();
    let mut w = ArrowWriter::try_new(
        File::create(path).expect("create"),
        batch.schema(),
        Some(props),
    )
    .expect("writer");
    w.write(batch).expect("write");
    w.close().expect("close");
}

/// Writes `batches` as one Parquet file each, named `name-i.parquet`.
fn write_files(dir: &Path, name: &str, batches: &[RecordBatch]) -> Vec<PathBuf> {
    batches
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let p = dir.join(format!("{name}-{i}.parquet"));
            write_file(&p, b);
            p
        })
        .collect()
}

/// `profile` rows keyed by `user_id`: ties on (key, event) with a later created
/// time, and exact (key, event, created) duplicates (write order decides).
fn profile_batches(rng: &mut Rng) -> Vec<RecordBatch> {
    (0..3)
        .map(|_| {
            let n = 1_500;
            let (mut users, mut events, mut created, mut score, mut tier) =
                (vec![], vec![], vec![], vec![], vec![]);
            for i in 0..n {
                let (u, e, c) = if i > 0 && rng.chance(6) {
                    let (u, e, c): (i64, i64, i64) = (users[i - 1], events[i - 1], created[i - 1]);
                    (
                        u,
                        e,
                        if rng.chance(50) {
                            c
                        } else {
                            c + rng.below(HOUR as u64)
                        },
                    )
                } else {
                    let e = T0 + rng.below((30 * DAY) as u64);
                    (rng.below(USERS), e, e + rng.below((2 * HOUR) as u64))
                };
                users.push(u);
                events.push(e);
                created.push(c);
                score.push((!rng.chance(5)).then_some(i as f64 * 0.5 - 100.0));
                tier.push((!rng.chance(5)).then(|| format!("t{}", rng.below(7))));
            }
            RecordBatch::try_from_iter([
                ("user_id", Arc::new(Int64Array::from(users)) as ArrayRef),
                ("event_ts", ts(events.into_iter().map(Some).collect())),
                ("created_ts", ts(created.into_iter().map(Some).collect())),
                ("score", Arc::new(Float64Array::from(score))),
                ("tier", Arc::new(StringArray::from(tier))),
            ])
            .expect("profile batch")
        })
        .collect()
}

/// `txn` rows keyed by (`user_id`, `merchant_id`: a string), no created column.
fn txn_batches(rng: &mut Rng) -> Vec<RecordBatch> {
    (0..2)
        .map(|_| {
            let n = 2_000;
            let (mut users, mut merchants, mut events, mut amount, mut channel) =
                (vec![], vec![], vec![], vec![], vec![]);
            for _ in 0..n {
                users.push(rng.below(USERS / 4));
                merchants.push(format!("m{}", rng.below(4)));
                events.push(Some(T0 + rng.below((30 * DAY) as u64)));
                amount.push((!rng.chance(5)).then(|| rng.below(10_000) - 500));
                channel
                    .push((!rng.chance(5)).then(|| ["web", "app", "pos"][rng.below(3) as usize]));
            }
            RecordBatch::try_from_iter([
                ("user_id", Arc::new(Int64Array::from(users)) as ArrayRef),
                ("merchant_id", Arc::new(StringArray::from(merchants))),
                ("event_ts", ts(events)),
                ("amount", Arc::new(Int64Array::from(amount))),
                ("channel", Arc::new(StringArray::from(channel))),
            ])
            .expect("txn batch")
        })
        .collect()
}

/// Spine rows: null keys, duplicated rows, and times exactly one TTL after a
/// profile event (the inclusive edge of the window) or exactly at an event.
fn spine_batches(rng: &mut Rng, profile: &[RecordBatch]) -> Vec<RecordBatch> {
    let p = &profile[0];
    let pu = i64s(p, 0);
    let pe = p
        .column(1)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .expect("event_ts")
        .values()
        .to_vec();
    (0..3)
        .map(|_| {
            let n = 700;
            let mut users: Vec<Option<i64>> = vec![];
            let mut merchants: Vec<Option<String>> = vec![];
            let mut times: Vec<Option<i64>> = vec![];
            let mut labels: Vec<i64> = vec![];
            for i in 0..n {
                if i > 0 && rng.chance(3) {
                    // an exact duplicate of the previous spine row
                    users.push(users[i - 1]);
                    merchants.push(merchants[i - 1].clone());
                    times.push(times[i - 1]);
                    labels.push(labels[i - 1]);
                    continue;
                }
                let (u, t) = if rng.chance(15) {
                    let j = rng.below(pu.len() as u64) as usize;
                    let edge = if rng.chance(50) { TTL_DAYS * DAY } else { 0 };
                    (
                        Some(pu[j]),
                        pe[j] + edge + if rng.chance(30) { 1 } else { 0 },
                    )
                } else {
                    (
                        (!rng.chance(3)).then(|| rng.below(USERS + 8)),
                        T0 + rng.below((32 * DAY) as u64),
                    )
                };
                users.push(u);
                merchants.push((!rng.chance(3)).then(|| format!("m{}", rng.below(4))));
                times.push(Some(t));
                labels.push(rng.below(2));
            }
            RecordBatch::try_from_iter([
                ("user_id", Arc::new(Int64Array::from(users)) as ArrayRef),
                ("merchant_id", Arc::new(StringArray::from(merchants))),
                ("ts", ts(times)),
                ("label", Arc::new(Int64Array::from(labels))),
            ])
            .expect("spine batch")
        })
        .collect()
}

/// Panics naming the first cell where `got` differs from `want`.
fn assert_same_cells(got: &RecordBatch, want: &RecordBatch) {
    assert_eq!(got.schema(), want.schema(), "schemas");
    assert_eq!(got.num_rows(), want.num_rows(), "row counts");
    for (c, field) in want.schema().fields().iter().enumerate() {
        let (g, w) = (got.column(c), want.column(c));
        if g.as_ref() == w.as_ref() {
            continue;
        }
        let row = (0..w.len())
            .find(|&r| g.slice(r, 1).as_ref() != w.slice(r, 1).as_ref())
            .expect("arrays differ in some row");
        panic!(
            "column '{}' row {row}: cluster {:?} vs in memory {:?}",
            field.name(),
            g.slice(row, 1),
            w.slice(row, 1)
        );
    }
}

/// Scan partitions of each input (3 spine files, 3 profile files, 2 txn
/// files, row groups of 250 rows): several scan tasks per input over both
/// executors, each reading pieces of files (byte ranges of row groups).
/// Ballista runs each scan task as local partition 0 of a plan cut down to its
/// pieces (ballista-scheduler `restrict_plan_to_partitions`), so the engine
/// must number rows by the piece's sequence base, not by the executing
/// partition (it once did: spine files 0 and 2 came back interleaved).
const SCAN_PARTITIONS: usize = 4;

/// The aggregations of the cluster phase: several functions and windows (with
/// and without a hop, lifetime), over a float column of a view with created
/// times and an int column of a view without.
fn aggregations(column: &str, functions: &[AggFunction]) -> Vec<Aggregation> {
    let (h, d) = (Duration::from_secs(3_600), Duration::from_secs(86_400));
    let windows = [(Some(d), None), (Some(7 * d), Some(h)), (None, None)];
    let mut out = Vec::new();
    for (w, hop) in windows {
        for &f in functions {
            let mut a = Aggregation::new(column, f, w);
            a.hop = hop;
            out.push(a);
        }
    }
    out
}

/// Historical retrieval (both PIT join algorithms) and window aggregations run
/// on the cluster give exactly the in-memory results (`point_in_time_join`,
/// `fstore_core::agg::aggregate`), cell by cell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn historical_retrieval_and_aggregations_on_the_cluster_equal_the_in_memory_results() {
    let cluster = Cluster::start(2);
    let dir = cluster.dir.path().join("pit");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut rng = Rng(7);
    let profile = profile_batches(&mut rng);
    let txn = txn_batches(&mut rng);
    let spine = spine_batches(&mut rng, &profile);
    let spine_files = write_files(&dir, "spine", &spine);
    let profile_files = write_files(&dir, "profile", &profile);
    let txn_files = write_files(&dir, "txn", &txn);
    let session = fstore_ballista::connect(&cluster.url)
        .await
        .expect("connect");

    let profile_features = vec![
        Field::new("score", DataType::Float64, true),
        Field::new("tier", DataType::Utf8, true),
    ];
    let txn_features = vec![
        Field::new("amount", DataType::Int64, true),
        Field::new("channel", DataType::Utf8, true),
    ];
    let ttl = Some(Duration::from_micros((TTL_DAYS * DAY) as u64));
    for options in [
        PitOptions::default(),
        PitOptions::default()
            .with_created_cutoff(true)
            .with_full_feature_names(true),
    ] {
        let pure_views = [
            PitView {
                name: "profile".into(),
                join_keys: vec!["user_id".into()],
                event_timestamp_column: "event_ts".into(),
                created_timestamp_column: Some("created_ts".into()),
                ttl,
                features: profile_features.clone(),
                batches: &profile,
            },
            PitView {
                name: "txn".into(),
                join_keys: vec!["user_id".into(), "merchant_id".into()],
                event_timestamp_column: "event_ts".into(),
                created_timestamp_column: None,
                ttl: None,
                features: txn_features.clone(),
                batches: &txn,
            },
        ];
        let want = point_in_time_join(&spine, "ts", &pure_views, &options).expect("pure join");

        let views = [
            EngineView {
                name: "profile".into(),
                join_keys: vec!["user_id".into()],
                event_timestamp_column: "event_ts".into(),
                created_timestamp_column: Some("created_ts".into()),
                ttl,
                features: profile_features.clone(),
                input: parquet_plan(&profile_files, SCAN_PARTITIONS).expect("profile scan"),
            },
            EngineView {
                name: "txn".into(),
                join_keys: vec!["user_id".into(), "merchant_id".into()],
                event_timestamp_column: "event_ts".into(),
                created_timestamp_column: None,
                ttl: None,
                features: txn_features.clone(),
                input: parquet_plan(&txn_files, SCAN_PARTITIONS).expect("txn scan"),
            },
        ];
        // The scans cross the wire as byte ranges of the files (pieces of row
        // groups), more pieces than files.
        let scan = fstore_core::datafusion::physical_plan::displayable(views[0].input.as_ref())
            .one_line()
            .to_string();
        assert!(
            scan.matches(".parquet:").count() > profile_files.len(),
            "the profile files are not read in pieces: {scan}"
        );
        // Both join algorithms (the hash join is the default).
        for join in [JoinAlgorithm::Hash, JoinAlgorithm::Sort] {
            let plan = pit_join_plan_with(
                parquet_plan(&spine_files, SCAN_PARTITIONS).expect("spine scan"),
                "ts",
                &views,
                &options,
                &EngineConfig::default().with_partitions(4).with_join(join),
            )
            .expect("plan");
            let schema = plan.schema();
            let batches: Vec<RecordBatch> = session
                .execute(plan)
                .await
                .expect("submit")
                .try_collect()
                .await
                .expect("job on the cluster");
            let got = arrow_select::concat::concat_batches(&schema, &batches).expect("concat");
            assert_same_cells(&got, &want);
        }
    }

    // Window aggregations: AggSequenceExec and AggJoinExec cross the wire,
    // the hash shuffle runs between the executors.
    let profile_aggs = aggregations(
        "score",
        &[
            AggFunction::Count,
            AggFunction::Sum,
            AggFunction::Mean,
            AggFunction::First,
            AggFunction::Last,
            AggFunction::LastN(3),
            AggFunction::StddevPop,
        ],
    );
    let txn_aggs = aggregations(
        "amount",
        &[
            AggFunction::Count,
            AggFunction::Sum,
            AggFunction::Max,
            AggFunction::Last,
            AggFunction::ApproxCountDistinct,
        ],
    );
    let profile_keys = vec![JoinKey::new("user_id", ValueType::Int64)];
    let txn_keys = vec![
        JoinKey::new("user_id", ValueType::Int64),
        JoinKey::new("merchant_id", ValueType::String),
    ];
    let typed = |aggs: &[Aggregation], t: ValueType| -> Vec<(Aggregation, ValueType)> {
        aggs.iter().map(|a| (a.clone(), t.clone())).collect()
    };
    let features = |aggs: &[Aggregation], t: ValueType| -> Vec<AggFeature> {
        aggs.iter()
            .map(|a| AggFeature {
                aggregation: a.clone(),
                input_type: t.clone(),
                output: a.name.clone(),
            })
            .collect()
    };
    for cutoff in [false, true] {
        let options = AggOptions::default().with_created_cutoff(cutoff);
        let memory_views = [
            AggView {
                name: "profile".into(),
                join_keys: profile_keys.clone(),
                event_timestamp_column: "event_ts".into(),
                created_timestamp_column: Some("created_ts".into()),
                aggregations: typed(&profile_aggs, ValueType::Float64),
                batches: &profile,
            },
            AggView {
                name: "txn".into(),
                join_keys: txn_keys.clone(),
                event_timestamp_column: "event_ts".into(),
                created_timestamp_column: None,
                aggregations: typed(&txn_aggs, ValueType::Int64),
                batches: &txn,
            },
        ];
        let spine_all =
            arrow_select::concat::concat_batches(&spine[0].schema(), &spine).expect("spine");
        let mut fields: Vec<Field> = spine_all
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns: Vec<ArrayRef> = spine_all.columns().to_vec();
        for view in &memory_views {
            let arrays = fstore_core::agg::aggregate(&spine, "ts", view, &options)
                .expect("in-memory aggregation");
            for ((a, _), array) in view.aggregations.iter().zip(arrays) {
                fields.push(Field::new(&a.name, array.data_type().clone(), true));
                columns.push(array);
            }
        }
        let want = RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), columns)
            .expect("expected batch");

        let views = [
            AggEngineView {
                name: "profile".into(),
                join_keys: profile_keys.clone(),
                event_timestamp_column: "event_ts".into(),
                created_timestamp_column: Some("created_ts".into()),
                features: features(&profile_aggs, ValueType::Float64),
                input: parquet_plan(&profile_files, SCAN_PARTITIONS).expect("profile scan"),
            },
            AggEngineView {
                name: "txn".into(),
                join_keys: txn_keys.clone(),
                event_timestamp_column: "event_ts".into(),
                created_timestamp_column: None,
                features: features(&txn_aggs, ValueType::Int64),
                input: parquet_plan(&txn_files, SCAN_PARTITIONS).expect("txn scan"),
            },
        ];
        let plan = aggregation_plan(
            parquet_plan(&spine_files, SCAN_PARTITIONS).expect("spine scan"),
            "ts",
            &views,
            &options,
            4,
        )
        .expect("aggregation plan");
        let schema = plan.schema();
        let batches: Vec<RecordBatch> = session
            .execute(plan)
            .await
            .expect("submit")
            .try_collect()
            .await
            .expect("aggregation job on the cluster");
        let got = arrow_select::concat::concat_batches(&schema, &batches).expect("concat");
        assert_same_cells(&got, &want);
    }
    let tasks = cluster.tasks_per_executor();
    assert!(
        tasks.iter().all(|&t| t > 0),
        "every executor process ran tasks: {tasks:?}"
    );
}
