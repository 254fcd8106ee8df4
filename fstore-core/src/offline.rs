//! The offline store trait: append-only feature history.

use std::fmt::{self, Debug};
use std::ops::Bound;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, TryStreamExt};

use crate::error::Result;
use crate::model::ResolvedView;
use crate::time::to_micros;

/// Alias used everywhere an offline store is held (`Arc<DynOfflineStore>`).
pub type DynOfflineStore = dyn OfflineStore;

/// An event-time range with explicit inclusive/exclusive ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// Lower bound.
    pub start: Bound<DateTime<Utc>>,
    /// Upper bound.
    pub end: Bound<DateTime<Utc>>,
}

impl TimeRange {
    /// Everything.
    pub fn all() -> Self {
        Self {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// `[start, end]`, both inclusive (the point-in-time join's window).
    pub fn inclusive(start: Option<DateTime<Utc>>, end: DateTime<Utc>) -> Self {
        Self {
            start: start.map_or(Bound::Unbounded, Bound::Included),
            end: Bound::Included(end),
        }
    }

    /// `(start, end]` (materialization's window).
    pub fn after_until(start: Option<DateTime<Utc>>, end: DateTime<Utc>) -> Self {
        Self {
            start: start.map_or(Bound::Unbounded, Bound::Excluded),
            end: Bound::Included(end),
        }
    }

    /// Whether the instant `micros` (UTC microseconds) lies in the range.
    pub fn contains_micros(&self, micros: i64) -> bool {
        let lo = match self.start {
            Bound::Unbounded => true,
            Bound::Included(s) => micros >= to_micros(s),
            Bound::Excluded(s) => micros > to_micros(s),
        };
        let hi = match self.end {
            Bound::Unbounded => true,
            Bound::Included(e) => micros <= to_micros(e),
            Bound::Excluded(e) => micros < to_micros(e),
        };
        lo && hi
    }
}

/// What to read from a view's history.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ScanRequest {
    /// Event-time range.
    pub range: TimeRange,
    /// Features to return (`None` = all). Keys and timestamps are always returned.
    pub features: Option<Vec<String>>,
    /// Read the table as of this version (time travel). `None` = latest.
    pub as_of_version: Option<u64>,
    /// Only rows committed in versions strictly after this one (change log).
    pub since_version: Option<u64>,
}

impl ScanRequest {
    /// All features, latest version, within `range`.
    pub fn new(range: TimeRange) -> Self {
        Self {
            range,
            features: None,
            as_of_version: None,
            since_version: None,
        }
    }
    /// Projects to these features.
    pub fn with_features(mut self, f: Vec<String>) -> Self {
        self.features = Some(f);
        self
    }
    /// Pins the version.
    pub fn with_as_of_version(mut self, v: Option<u64>) -> Self {
        self.as_of_version = v;
        self
    }
    /// Only changes after version `v`.
    pub fn with_since_version(mut self, v: Option<u64>) -> Self {
        self.since_version = v;
        self
    }
}

/// A streaming scan result.
pub struct ScanResult {
    /// The version that was read (stores with versions), for reproducibility.
    pub version: Option<u64>,
    /// The batches, in write order (rows written later come later), in the
    /// canonical projected schema: keys, event ts, created ts, requested features.
    pub stream: BoxStream<'static, Result<RecordBatch>>,
}

impl Debug for ScanResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanResult")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl ScanResult {
    /// Collects every batch (for the point-in-time join, which needs them all).
    ///
    /// # Errors
    /// The first error of the stream.
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        self.stream.try_collect().await
    }
}

/// What an offline backend supports.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct OfflineCapabilities {
    /// Versions are numbered and `since_version` scans return exactly the rows
    /// committed after a version ([semantics §7](crate::docs::semantics) late-data materialization).
    pub change_log: bool,
    /// `as_of_version` scans reproduce an older state.
    pub time_travel: bool,
    /// The store runs historical retrieval itself (feature `datafusion`):
    /// `FeatureStore::historical_to` hands the request to
    /// `OfflineStore::historical_to` instead of scanning and joining (Feast's
    /// offline stores do the same).
    pub runs_join: bool,
}

impl OfflineCapabilities {
    /// Sets [`OfflineCapabilities::runs_join`].
    pub fn with_runs_join(mut self, v: bool) -> Self {
        self.runs_join = v;
        self
    }

    /// Both change log and time travel.
    pub fn versioned() -> Self {
        Self {
            change_log: true,
            time_travel: true,
            runs_join: false,
        }
    }
}

/// Outcome of an offline append.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OfflineWriteSummary {
    /// Rows appended.
    pub rows: u64,
    /// The version the append committed, for versioned stores.
    pub version: Option<u64>,
}

/// An append-only store of feature history.
///
/// # Contract
///
/// * `write` appends a batch in the view's canonical schema
///   ([`crate::adapter::normalize_batch`]; the [`crate::FeatureStore`] normalises
///   before calling). Nothing is deduplicated or dropped; concurrent appenders
///   both succeed.
/// * `scan` returns every stored row in the range (no more, no fewer), projected
///   to the requested features, in write order. Features added to the view
///   after older rows were written read as null in those rows.
/// * With [`OfflineCapabilities::change_log`], `since_version = Some(v)` returns
///   exactly the rows committed after version `v`; `as_of_version` pins the
///   read. [`ScanResult::version`] says which version was read.
#[async_trait]
pub trait OfflineStore: Send + Sync + Debug + 'static {
    /// Backend id (`"delta"`, `"memory"`…).
    fn backend(&self) -> &'static str;

    /// What this backend supports.
    fn capabilities(&self) -> OfflineCapabilities;

    /// Appends rows.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for a non-canonical batch; backend failures.
    async fn write(&self, view: &ResolvedView, batch: RecordBatch) -> Result<OfflineWriteSummary>;

    /// Streams rows.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] for a version that does not exist; backend failures.
    async fn scan(&self, view: &ResolvedView, req: &ScanRequest) -> Result<ScanResult>;

    /// The latest committed version of the view's data (`None` when the store
    /// has no versions or nothing was written).
    ///
    /// # Errors
    /// Backend failures.
    async fn latest_version(&self, view: &ResolvedView) -> Result<Option<u64>>;

    /// Removes the view's data.
    ///
    /// # Errors
    /// Backend failures.
    async fn delete_view(&self, view: &ResolvedView) -> Result<()>;

    /// An identity of the view's table that changes whenever the table is
    /// deleted and created again (a Delta table id, an in-memory generation);
    /// `None` when the table does not exist or the store keeps no identity.
    ///
    /// Incremental materialization records it in the watermark and starts
    /// over when it changes: table versions restart after a re-creation, so a
    /// watermark of the old table would skip rows of the new one.
    ///
    /// # Behavior
    /// The default returns `Ok(None)`; then only a table version lower than the
    /// watermark's reveals a re-creation. Stores whose tables can be re-created
    /// should override it.
    ///
    /// # Errors
    /// Backend failures.
    async fn table_id(&self, view: &ResolvedView) -> Result<Option<String>> {
        let _ = view;
        Ok(None)
    }

    /// Builds a training set itself and writes it to the Parquet file `sink`, for
    /// stores that declare [`OfflineCapabilities::runs_join`].
    ///
    /// `views` are the resolved views with the features requested of each (in
    /// first-use order); `refs` the requested features in output order. The file
    /// must hold what the facade's own engine run would write: spine columns, then
    /// `refs` (named per `req.full_feature_names`), one row per spine row in spine
    /// order ([semantics §12](crate::docs::semantics)). The facade fills in
    /// [`crate::HistoricalToResult::registry_version`].
    ///
    /// # Behavior
    /// The default returns [`crate::Error::NotSupported`].
    ///
    /// # Errors
    /// Those of [`crate::FeatureStore::historical_to`].
    #[cfg(feature = "datafusion")]
    async fn historical_to(
        &self,
        views: &[(ResolvedView, Vec<String>)],
        refs: &[crate::model::FeatureRef],
        req: &crate::HistoricalToRequest,
        sink: &std::path::Path,
    ) -> Result<crate::HistoricalToResult> {
        let _ = (views, refs, req, sink);
        Err(crate::Error::NotSupported {
            backend: self.backend(),
            operation: "historical_to",
        })
    }
}
