//! Run fstore's historical retrieval on an [Apache Ballista](https://datafusion.apache.org/ballista/)
//! cluster (semantics §12): the same point-in-time join as on one machine, planned
//! by a Ballista scheduler and executed by Ballista executors.
//!
//! - [`connect`] opens a [`BallistaSession`] on the scheduler at a URL
//!   (`df://host:50050`): SQL/DataFrame queries through its DataFusion context,
//!   fstore's engine plans (the point-in-time join of `fstore_core::engine`)
//!   through [`BallistaSession::execute`]. A scheduler that cannot be reached is
//!   an error here, before any work starts.
//! - [`run_scheduler`] and [`run_executor`] start a scheduler / an executor with
//!   the same codecs registered. The `fstore-ballista-scheduler` and
//!   `fstore-ballista-executor` binaries of this crate are thin wrappers around
//!   them; a deployment that needs more of Ballista's options builds its own
//!   [`SchedulerConfig`] / [`ExecutorProcessConfig`] and passes it in.
//!
//! fstore's join is a physical plan with custom nodes (`PitPrepareExec`, and
//! `PitHashJoinExec` or `PitJoinExec`). The client encodes it with [`FstorePhysicalCodec`], the
//! scheduler decodes it, cuts it into stages at its hash repartitions and encodes
//! each stage again, and the executors decode the stages: every process of a
//! cluster must register the same codec, which is why fstore ships its own
//! scheduler and executor entry points rather than Ballista's stock binaries
//! (with those, such a job fails: its tasks cannot be decoded).
//!
//! ```no_run
//! # async fn run() -> fstore_core::Result<()> {
//! let session = fstore_ballista::connect("df://scheduler.internal:50050").await?;
//! let df = session
//!     .context()
//!     .sql("SELECT 1")
//!     .await
//!     .map_err(fstore_ballista::datafusion_error)?;
//! # let _ = df;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod codec;
mod server;

pub use ballista_executor::executor_process::ExecutorProcessConfig;
pub use ballista_scheduler::config::SchedulerConfig;
pub use client::{BallistaSession, ClientOptions, connect, connect_with, datafusion_error};
pub use codec::FstorePhysicalCodec;
pub use server::{
    EXECUTORS_REGISTERED, block_on_service, executor_config, init_logging, run_executor,
    run_scheduler, scheduler_config,
};

/// Backend id used in errors.
pub const BACKEND: &str = "ballista";

/// The default scheduler port (Ballista's).
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;
