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

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
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

    let ctx = fstore_ballista::connect(&cluster.url)
        .await
        .expect("connect");
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
