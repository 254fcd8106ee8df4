//! # fstore-online-scylla
//!
//! An [`OnlineStore`](fstore_core::OnlineStore) for **fstore** on Apache
//! Cassandra and ScyllaDB, using the `scylla` driver: the online store for teams
//! that need very high write rates and multi-datacenter replication.
//!
//! * One partition per (entity key, view), one row holding the view's encoded
//!   features; see [`ScyllaOnlineStore`] for the table layout.
//! * **Newest wins by version, not by arrival**: each row's `USING TIMESTAMP`
//!   is planned from its `(event_ts, created_ts)` and the stored row (read
//!   first), so a late replay never overwrites a newer value, equal versions go
//!   to the later write and `skipped` is exact; racing writers are ordered by
//!   the cluster by event time. `USING TTL` follows event time + the view's ttl.
//! * Prepared statements only (prepared once), token-aware and DC-aware
//!   routing, concurrent single-partition reads and writes with bounded
//!   concurrency.
//!
//! ```no_run
//! # async fn f() -> fstore_core::Result<()> {
//! use std::sync::Arc;
//! use fstore_core::{DynOnlineStore, FeatureStore};
//! use fstore_online_scylla::ScyllaOnlineStoreBuilder;
//!
//! let online = ScyllaOnlineStoreBuilder::from_env()   // FSTORE_SCYLLA_CONTACT_POINTS, …
//!     .with_keyspace("features")
//!     .connect()
//!     .await?;
//! online.ensure_schema().await?;                      // explicit, never on the read path
//! let online: Arc<DynOnlineStore> = Arc::new(online);
//! # let _ = online; Ok(()) }
//! ```
//!
//! Configuration keys and their `FSTORE_SCYLLA_*` variables: [`ScyllaConfigKey`].
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cell;
mod client;
mod config;
mod cql;
mod error;
mod store;
mod timestamp;
#[cfg(feature = "tls")]
mod tls;

pub use config::{BACKEND, Replication, ScyllaConfigKey, ScyllaOnlineStoreBuilder};
pub use store::ScyllaOnlineStore;
