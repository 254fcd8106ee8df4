//! Run fstore's historical retrieval on an [Apache Ballista](https://datafusion.apache.org/ballista/)
//! cluster (semantics §12): the same point-in-time join as on one machine, planned
//! by a Ballista scheduler and executed by Ballista executors.
//!
//! - [`connect`] builds a DataFusion `SessionContext` whose queries run on the
//!   scheduler at a URL (`df://host:50050`), with fstore's plan codecs registered.
//!   A scheduler that cannot be reached is an error here, before any work starts.
//! - [`run_scheduler`] and [`run_executor`] start a scheduler / an executor with
//!   the same codecs registered. The `fstore-ballista-scheduler` and
//!   `fstore-ballista-executor` binaries of this crate are thin wrappers around
//!   them; a deployment that needs more of Ballista's options builds its own
//!   [`SchedulerConfig`] / [`ExecutorProcessConfig`] and passes it in.
//!
//! Ballista ships the *logical* plan from the client to the scheduler, which
//! plans it and sends physical stages to the executors: every process of a
//! cluster must register the same codecs, which is why fstore ships its own
//! scheduler and executor entry points rather than Ballista's stock binaries.
//!
//! ```no_run
//! # async fn run() -> fstore_core::Result<()> {
//! let ctx = fstore_ballista::connect("df://scheduler.internal:50050").await?;
//! let df = ctx.sql("SELECT 1").await.map_err(fstore_ballista::datafusion_error)?;
//! # let _ = df;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod server;

pub use ballista_executor::executor_process::ExecutorProcessConfig;
pub use ballista_scheduler::config::SchedulerConfig;
pub use client::{ClientOptions, connect, connect_with, datafusion_error};
pub use server::{
    EXECUTORS_REGISTERED, executor_config, run_executor, run_scheduler, scheduler_config,
};

/// Backend id used in errors.
pub const BACKEND: &str = "ballista";

/// The default scheduler port (Ballista's).
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;
