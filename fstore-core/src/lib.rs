//! # fstore-core
//!
//! The core of **fstore**, an embeddable feature store: one set of feature
//! definitions, an offline store of history with a pure point-in-time join for
//! training sets, and an online store of the latest values for serving, kept in
//! sync by materialization — linked into your application, no service to run.
//!
//! This crate holds the model ([`Entity`], [`FeatureView`], [`OnDemandView`],
//! [`FeatureService`]), the store traits ([`OfflineStore`], [`OnlineStore`],
//! [`Registry`]), the pure join ([`pit::point_in_time_join`]), the
//! [`FeatureStore`] facade, in-memory backends and a [`FileRegistry`], monitors,
//! and (feature `testkit`) the conformance suites every adapter runs.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> fstore_core::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use fstore_core::arrow_array::{Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
//! use fstore_core::arrow_schema::{DataType, Field, Schema, TimeUnit};
//! use fstore_core::{
//!     Definitions, Entity, FeatureSelection, FeatureStore, FeatureView, MaterializeOptions,
//!     OnlineRequest, ValueType, FeatureStatus,
//! };
//! use chrono::{TimeZone, Utc};
//!
//! let store = FeatureStore::in_memory();
//! store.apply(&Definitions::new()
//!     .with_entity(Entity::new("driver", "driver_id", ValueType::Int64))
//!     .with_feature_view(FeatureView::new("driver_stats", ["driver"])
//!         .with_feature("conv_rate", ValueType::Float64)
//!         .with_ttl(Duration::from_secs(86_400))), Default::default()).await?;
//!
//! let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
//! let history = RecordBatch::try_new(
//!     Arc::new(Schema::new(vec![
//!         Field::new("driver_id", DataType::Int64, false),
//!         Field::new("event_timestamp", ts, false),
//!         Field::new("conv_rate", DataType::Float64, true),
//!     ])),
//!     vec![
//!         Arc::new(Int64Array::from(vec![1001, 1001])),
//!         Arc::new(TimestampMicrosecondArray::from(vec![1_000_000, 2_000_000]).with_timezone("UTC")),
//!         Arc::new(Float64Array::from(vec![0.5, 0.7])),
//!     ],
//! ).unwrap();
//! store.write_history("driver_stats", &history).await?;
//!
//! let end = Utc.timestamp_opt(2, 0).unwrap();
//! store.materialize_incremental(&["driver_stats"], end, &MaterializeOptions::default()).await?;
//!
//! let entities = RecordBatch::try_new(
//!     Arc::new(Schema::new(vec![Field::new("driver_id", DataType::Int64, false)])),
//!     vec![Arc::new(Int64Array::from(vec![1001, 42]))],
//! ).unwrap();
//! let resp = store.get_online_features(
//!     &OnlineRequest::new(FeatureSelection::refs(["driver_stats:conv_rate"])?, entities).with_now(end),
//! ).await?;
//! let meta = resp.feature("conv_rate").unwrap();
//! assert_eq!(meta.statuses(), vec![FeatureStatus::Present, FeatureStatus::NotFound]);
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adapter;
pub mod agg;
mod codec;
pub mod config;
pub mod docs;
#[cfg(feature = "datafusion")]
#[cfg_attr(docsrs, doc(cfg(feature = "datafusion")))]
pub mod engine;
mod error;
mod memory;
mod model;
pub mod monitor;
mod offline;
mod ondemand;
mod online;
pub mod pit;
mod registry;
mod store;
pub mod telemetry;
pub mod time;

#[cfg(any(test, feature = "testkit"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

pub use error::{BoxError, Error, Result};
pub use memory::{InMemoryOfflineStore, InMemoryOnlineStore, InMemoryRegistry};
pub use model::{AggFunction, Aggregation, LAST_N_CAP, format_duration, parse_duration};
pub use model::{
    Definitions, Deprecation, Entity, Fallback, FeatureField, FeatureRef, FeatureService,
    FeatureView, JoinKey, OnDemandView, ResolvedView, Tags, Value, ValueType,
};
pub use offline::{
    DynOfflineStore, OfflineCapabilities, OfflineStore, OfflineWriteSummary, ScanRequest,
    ScanResult, TimeRange,
};
pub use ondemand::OnDemandFunction;
pub use online::{
    DynOnlineStore, OnlineCapabilities, OnlineKey, OnlineRow, OnlineStore, OnlineStoreExt,
    ReadOptions, Tile, TileMergeFn, TileWrite, WriteOptions, WriteSummary,
};
pub use registry::{
    Change, ChangeKind, DynRegistry, FieldChange, FileRegistry, ObjectKind, Plan, Registry,
    RegistrySnapshot, RegistryState, Watermark, plan, validate,
};
pub use store::{
    ApplyOptions, ApplyResult, DEFAULT_MAX_ONLINE_ENTITIES, DenseBlock, DenseColumn, DenseValues,
    FeatureMetadata, FeatureSelection, FeatureStatus, FeatureStore, FeatureStoreBuilder,
    HistoricalRequest, HistoricalResult, MaterializeOptions, MaterializeProgress,
    MaterializeReport, OnlineRequest, OnlineResponse, PreparedRequest, PushSummary, PushTarget,
    ViewMaterializeReport,
};
#[cfg(feature = "datafusion")]
pub use store::{HistoricalToRequest, HistoricalToResult};

pub use arrow_array;
pub use arrow_schema;
/// The `bytes` crate of [`OnlineRow::payload`].
pub use bytes;
/// The DataFusion version the engine is built against (feature `datafusion`).
#[cfg(feature = "datafusion")]
pub use datafusion;

/// The types a host application needs, for a glob import:
/// `use fstore_core::prelude::*;`.
///
/// The prelude holds no `Result`, `Error` or `Field` (they would shadow
/// `std`'s and Arrow's names) and no free functions; name those through the
/// crate (`fstore_core::Result`, `fstore_core::Error`).
pub mod prelude {
    pub use crate::{
        AggFunction, Aggregation, ApplyOptions, Definitions, DynOfflineStore, DynOnlineStore,
        DynRegistry, Entity, Fallback, FeatureField, FeatureRef, FeatureSelection, FeatureService,
        FeatureStatus, FeatureStore, FeatureStoreBuilder, FeatureView, FileRegistry,
        HistoricalRequest, HistoricalResult, InMemoryOfflineStore, InMemoryOnlineStore,
        InMemoryRegistry, MaterializeOptions, OfflineStore, OnDemandFunction, OnDemandView,
        OnlineRequest, OnlineResponse, OnlineStore, OnlineStoreExt, PushTarget, Registry, Value,
        ValueType,
    };
}

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_sync() {
        assert_send_sync::<crate::FeatureStore>();
        assert_send_sync::<crate::Error>();
        assert_send_sync::<std::sync::Arc<crate::DynOnlineStore>>();
        assert_send_sync::<std::sync::Arc<crate::DynOfflineStore>>();
        assert_send_sync::<std::sync::Arc<crate::DynRegistry>>();
        assert_send_sync::<crate::OnDemandFunction>();
    }
}
