//! # fstore-offline-delta
//!
//! The Delta Lake offline store of **fstore**, on delta-rs: one Delta table per
//! feature view under a root URI, plus a shared [`DeltaRegistry`] next to the
//! tables. Local directories work out of the box; S3, GCS and Azure are behind
//! the `s3`, `gcs` and `azure` cargo features (off by default to keep the build
//! small). delta-rs is used **without DataFusion**.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> fstore_core::Result<()> {
//! use std::sync::Arc;
//! use fstore_core::{FeatureStore, InMemoryOnlineStore};
//! use fstore_offline_delta::DeltaOfflineStoreBuilder;
//!
//! let dir = std::env::temp_dir().join(format!("fstore-doc-{}", std::process::id()));
//! let builder = DeltaOfflineStoreBuilder::new().with_root(dir.to_string_lossy());
//! let store = FeatureStore::builder()
//!     .with_offline(Arc::new(builder.clone().build()?))
//!     .with_registry(Arc::new(builder.build_registry()?))
//!     .with_online(Arc::new(InMemoryOnlineStore::new()))
//!     .build()?;
//! assert_eq!(store.snapshot().await?.version, 0);
//! # let _ = std::fs::remove_dir_all(dir);
//! # Ok(()) }
//! ```
//!
//! Configuration: [`DeltaOfflineStoreBuilder`] (typed [`DeltaConfigKey`]s,
//! `from_env()` reads `FSTORE_DELTA_*`, storage options pass through to
//! delta-rs). Maintenance: [`DeltaOfflineStore::compact`],
//! [`DeltaOfflineStore::vacuum`]. Training sets built out of memory can read
//! their spine from a Delta table ([`DeltaSpine`]) and land in one ([`DeltaSink`]).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod config;
mod conform;
mod error;
mod log;
mod maintenance;
mod parquet;
mod registry;
mod scan;
mod store;
mod training;

pub use config::{BACKEND, DeltaConfigKey, DeltaOfflineStoreBuilder};
pub use maintenance::{CompactReport, VacuumReport};
pub use registry::DeltaRegistry;
pub use store::DeltaOfflineStore;
pub use training::{DeltaSink, DeltaSpine};

pub use arrow_array;
pub use arrow_schema;
