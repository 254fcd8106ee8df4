//! A Ballista executor with fstore's plan codecs registered.
//!
//! ```text
//! fstore-ballista-executor --bind-host 0.0.0.0 --external-host worker1.internal \
//!     --scheduler-host sched.internal --scheduler-port 50050 \
//!     --port 50051 --grpc-port 50052 --work-dir /mnt/fast/ballista --memory-pool-size 8GiB
//! ```
//!
//! Logs go to stderr (`RUST_LOG`, default `info`).

use clap::Parser;

/// A Ballista executor with fstore's plan codecs registered.
#[derive(Debug, Parser)]
#[command(name = "fstore-ballista-executor", version)]
struct Args {
    /// Address to listen on (`0.0.0.0` on a cluster node).
    #[arg(long, default_value = "127.0.0.1")]
    bind_host: String,
    /// Host name the scheduler and the other executors use to reach this one
    /// (default: the bind host, or `localhost` when binding 0.0.0.0).
    #[arg(long)]
    external_host: Option<String>,
    /// Arrow Flight port (shuffle data and results are fetched from here).
    #[arg(long, default_value_t = 50051)]
    port: u16,
    /// gRPC port (the scheduler pushes tasks here).
    #[arg(long, default_value_t = 50052)]
    grpc_port: u16,
    /// Scheduler host.
    #[arg(long, default_value = "localhost")]
    scheduler_host: String,
    /// Scheduler port.
    #[arg(long, default_value_t = fstore_ballista::DEFAULT_SCHEDULER_PORT)]
    scheduler_port: u16,
    /// Concurrent tasks (default: the number of cores).
    #[arg(long)]
    vcores: Option<usize>,
    /// Directory for shuffle and spill files (default: a fresh temporary directory).
    #[arg(long)]
    work_dir: Option<String>,
    /// Memory pool shared by this executor's tasks, e.g. `4GiB`; operators spill to
    /// the work dir beyond it (default: 70% of the machine's memory).
    #[arg(long, value_parser = parse_size)]
    memory_pool_size: Option<u64>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    fstore_core::config::parse_size(s)
}

fn main() {
    fstore_ballista::init_logging();
    let args = Args::parse();
    let external = args.external_host.clone().unwrap_or_else(|| {
        if args.bind_host == "0.0.0.0" {
            "localhost".to_owned()
        } else {
            args.bind_host.clone()
        }
    });
    let mut config = fstore_ballista::executor_config(
        &args.bind_host,
        &external,
        args.port,
        args.grpc_port,
        &args.scheduler_host,
        args.scheduler_port,
    );
    if let Some(v) = args.vcores {
        config.vcores = v;
    }
    config.work_dir = args.work_dir;
    config.memory_pool_size = args.memory_pool_size;
    let result = fstore_ballista::block_on_service(fstore_ballista::run_executor(config));
    if let Err(e) = result {
        eprintln!("fstore-ballista-executor: {e}");
        std::process::exit(1);
    }
}
