//! A Ballista scheduler with fstore's plan codecs registered.
//!
//! ```text
//! fstore-ballista-scheduler --bind-host 0.0.0.0 --port 50050 --external-host sched.internal
//! ```
//!
//! Prints `fstore-ballista: executors registered: N` on stdout whenever the set of
//! executors changes. Logs go to stderr (`RUST_LOG`, default `info`).

use clap::Parser;

/// A Ballista scheduler with fstore's plan codecs registered.
#[derive(Debug, Parser)]
#[command(name = "fstore-ballista-scheduler", version)]
struct Args {
    /// Address to listen on (`0.0.0.0` on a cluster node).
    #[arg(long, default_value = "127.0.0.1")]
    bind_host: String,
    /// gRPC port (clients and executors connect here).
    #[arg(long, default_value_t = fstore_ballista::DEFAULT_SCHEDULER_PORT)]
    port: u16,
    /// Host name executors and clients use for this scheduler (default: the bind host,
    /// or `localhost` when binding 0.0.0.0).
    #[arg(long)]
    external_host: Option<String>,
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
    let config = fstore_ballista::scheduler_config(&args.bind_host, args.port, &external);
    let result = fstore_ballista::block_on_service(fstore_ballista::run_scheduler(config));
    if let Err(e) = result {
        eprintln!("fstore-ballista-scheduler: {e}");
        std::process::exit(1);
    }
}
