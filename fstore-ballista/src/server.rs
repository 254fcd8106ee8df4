//! The cluster side: scheduler and executor processes with fstore's codecs
//! registered.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use ballista_scheduler::scheduler_process::start_server;
use fstore_core::{Error, Result};

use crate::BACKEND;
use crate::codec::FstorePhysicalCodec;

/// The line prefix [`run_scheduler`] prints on stdout whenever the set of
/// registered executors changes: `fstore-ballista: executors registered: N`.
/// Deployment scripts and the tests wait for it.
pub const EXECUTORS_REGISTERED: &str = "fstore-ballista: executors registered: ";

/// A scheduler config listening on `bind_host:port`, advertised to executors as
/// `external_host`, with fstore's codecs registered.
///
/// Tasks are handed out round-robin over the executors (Ballista's default,
/// `Bias`, fills the first executor's slots first), so a join partitioned by
/// entity key spreads over the cluster. Every other setting is Ballista's
/// default; change fields of the result for more.
pub fn scheduler_config(bind_host: &str, port: u16, external_host: &str) -> SchedulerConfig {
    SchedulerConfig {
        bind_host: bind_host.to_owned(),
        bind_port: port,
        external_host: external_host.to_owned(),
        task_distribution: TaskDistributionPolicy::RoundRobin,
        override_physical_codec: Some(FstorePhysicalCodec::shared()),
        ..SchedulerConfig::default()
    }
}

/// An executor config that serves Arrow Flight on `bind_host:flight_port` and
/// task gRPC on `grpc_port`, advertised as `external_host`, and registers with
/// the scheduler at `scheduler_host:scheduler_port`. Every other setting is
/// Ballista's default (one task slot per core, shuffle files in a fresh
/// temporary directory); change fields of the result for more.
pub fn executor_config(
    bind_host: &str,
    external_host: &str,
    flight_port: u16,
    grpc_port: u16,
    scheduler_host: &str,
    scheduler_port: u16,
) -> ExecutorProcessConfig {
    ExecutorProcessConfig {
        bind_host: bind_host.to_owned(),
        external_host: Some(external_host.to_owned()),
        port: flight_port,
        grpc_port,
        scheduler_host: scheduler_host.to_owned(),
        scheduler_port,
        override_physical_codec: Some(FstorePhysicalCodec::shared()),
        ..ExecutorProcessConfig::default()
    }
}

/// Runs a Ballista scheduler until the process is stopped.
///
/// # Behavior
/// Serves gRPC on `config.bind_host:config.bind_port` and prints
/// [`EXECUTORS_REGISTERED`]`N` on stdout whenever the number of registered
/// executors changes (starting with 0 once it listens).
///
/// # Errors
/// [`Error::InvalidInput`] for a bind address that does not parse;
/// [`Error::Backend`] when the server cannot start (port in use) or fails.
pub async fn run_scheduler(config: SchedulerConfig) -> Result<()> {
    let addr: SocketAddr = format!("{}:{}", config.bind_host, config.bind_port)
        .parse()
        .map_err(|e| {
            Error::invalid(format!(
                "scheduler bind address '{}:{}': {e}",
                config.bind_host, config.bind_port
            ))
        })?;
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| Error::backend(BACKEND, "cannot create the scheduler's cluster state", e))?;
    let state = cluster.cluster_state();
    tokio::spawn(async move {
        let mut last: Option<BTreeSet<String>> = None;
        loop {
            let ids: BTreeSet<String> = state
                .registered_executor_metadata()
                .await
                .into_iter()
                .map(|m| m.id)
                .collect();
            if last.as_ref() != Some(&ids) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{EXECUTORS_REGISTERED}{}", ids.len());
                let _ = out.flush();
                last = Some(ids);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    start_server(cluster, addr, Arc::new(config))
        .await
        .map_err(|e| Error::backend(BACKEND, format!("scheduler on {addr} failed"), e))
}

/// Runs a Ballista executor until the process is stopped (SIGTERM, Ctrl-C or a
/// stop request from the scheduler).
///
/// # Errors
/// [`Error::Unavailable`] when the scheduler cannot be reached at start;
/// [`Error::Backend`] when the executor cannot start (port in use) or fails.
pub async fn run_executor(config: ExecutorProcessConfig) -> Result<()> {
    let scheduler = format!("{}:{}", config.scheduler_host, config.scheduler_port);
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| match e {
            ballista_core::error::BallistaError::GrpcConnectionError(m) => Error::Unavailable {
                backend: BACKEND,
                message: format!("executor cannot reach the scheduler at {scheduler}: {m}"),
            },
            e => Error::backend(BACKEND, "executor failed", e),
        })
}

/// Runs a scheduler or executor future ([`run_scheduler`], [`run_executor`]) to
/// its end on a multi-threaded Tokio runtime with 32 MiB thread stacks, as
/// Ballista's own binaries do (deep plans are (de)serialized recursively).
///
/// # Errors
/// The runtime cannot be built; the service's own error.
pub fn block_on_service(service: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(32 * 1024 * 1024)
        .build()
        .map_err(|e| Error::backend(BACKEND, "tokio runtime", e))?
        .block_on(service)
}

/// Logs to stderr without colours, filtered by `RUST_LOG` (default `info`): the
/// scheduler's and executor's binaries call it first.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
}
