//! [`DeltaOfflineStore`]: the `OfflineStore` impl (thin; I/O is in `client.rs`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use fstore_core::{
    Error, OfflineCapabilities, OfflineStore, OfflineWriteSummary, ResolvedView, Result,
    ScanRequest, ScanResult,
};

use crate::client::Client;
use crate::config::{BACKEND, DeltaOfflineStoreBuilder, Settings};
use crate::maintenance::{CompactReport, VacuumReport};

impl DeltaOfflineStoreBuilder {
    /// Validates the configuration and builds the store. No I/O except creating
    /// a local root directory; tables are created on first write.
    ///
    /// # Errors
    /// [`Error::UnknownConfigKey`] for a key set by name that does not exist;
    /// [`Error::InvalidInput`] for a missing root or a malformed value.
    pub fn build(self) -> Result<DeltaOfflineStore> {
        DeltaOfflineStore::new(self.settings()?)
    }

    /// [`build`](Self::build), then lists the root once: the store is known to
    /// reach its storage with working credentials.
    ///
    /// # Errors
    /// As `build`; the storage's error when the root cannot be listed.
    pub async fn connect(self) -> Result<DeltaOfflineStore> {
        let store = self.build()?;
        store.client.check().await?;
        Ok(store)
    }
}

/// An [`OfflineStore`] keeping one Delta table per feature view under a root URI.
///
/// * **Write**: one Delta commit per `write` (optimistic concurrency; commits
///   that race with other appenders are retried, so concurrent writers from
///   any number of processes all succeed and nothing is lost). The committed
///   table version is returned. A feature added to the view adds a nullable
///   column to the table (old files read as null for it); changing a stored
///   column's type is refused.
/// * **Scan**: reads the Delta log, skips files and Parquet row groups whose
///   event-time statistics lie outside the range, reads only the requested
///   columns, and streams batches in write order (commit order, then file
///   order). `as_of_version` is Delta time travel; `since_version` reads only
///   the files added by later commits (compaction rewrites are not changes).
/// * **Maintenance**: [`DeltaOfflineStore::compact`] and
///   [`DeltaOfflineStore::vacuum`].
#[derive(Clone)]
pub struct DeltaOfflineStore {
    client: Arc<Client>,
}

impl fmt::Debug for DeltaOfflineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeltaOfflineStore")
            .field("config", &self.client.cfg)
            .finish_non_exhaustive()
    }
}

impl DeltaOfflineStore {
    pub(crate) fn new(cfg: Settings) -> Result<Self> {
        Ok(Self {
            client: Arc::new(Client::new(cfg)),
        })
    }

    /// A builder.
    pub fn builder() -> DeltaOfflineStoreBuilder {
        DeltaOfflineStoreBuilder::new()
    }

    /// The URI of the Delta table holding `view`'s history.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a view name that cannot be a directory name.
    pub fn table_uri(&self, view: &str) -> Result<String> {
        Ok(self.client.table_url(view)?.to_string())
    }

    /// Rewrites runs of small adjacent files of `view`'s table into files of
    /// about the target size (one commit of `remove` + `add` actions with
    /// `dataChange = false`). Rows, their values and their write order are
    /// unchanged; change-log scans do not see the rewritten rows again.
    ///
    /// # Errors
    /// [`Error::Conflict`] when a concurrent compaction removed the same files
    /// (re-run it); backend failures.
    pub async fn compact(&self, view: &str) -> Result<CompactReport> {
        self.client.compact(view).await
    }

    /// Deletes data files of `view`'s table that were removed (by compaction)
    /// more than `retention` ago. After a vacuum, time travel and change-log
    /// scans cannot reach versions older than `retention`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `retention` is below 7 days and `force` is
    /// false; backend failures.
    pub async fn vacuum(
        &self,
        view: &str,
        retention: Duration,
        force: bool,
    ) -> Result<VacuumReport> {
        self.client.vacuum(view, retention, force).await
    }
}

#[async_trait]
impl OfflineStore for DeltaOfflineStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> OfflineCapabilities {
        OfflineCapabilities::versioned()
    }

    async fn write(&self, view: &ResolvedView, batch: RecordBatch) -> Result<OfflineWriteSummary> {
        let expected = view.arrow_schema();
        let got = batch.schema();
        let same = got.fields().len() == expected.fields().len()
            && got
                .fields()
                .iter()
                .zip(expected.fields())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if !same {
            return Err(Error::invalid(format!(
                "feature view '{}': batch is not in the canonical schema (normalize it with \
                 fstore_core::adapter::normalize_batch): expected {:?}, got {:?}",
                view.name(),
                expected
                    .fields()
                    .iter()
                    .map(|f| format!("{}: {}", f.name(), f.data_type()))
                    .collect::<Vec<_>>(),
                got.fields()
                    .iter()
                    .map(|f| format!("{}: {}", f.name(), f.data_type()))
                    .collect::<Vec<_>>(),
            )));
        }
        // Keys and timestamps must be non-null (semantics §3, fstore-core/docs/semantics.md); name the column and row.
        for name in view.key_and_time_columns() {
            if let Some(c) = batch.column_by_name(name) {
                fstore_core::time::reject_nulls(c.as_ref(), name, "key/timestamp")
                    .map_err(|e| Error::invalid(format!("feature view '{}': {e}", view.name())))?;
            }
        }
        let rows = batch.num_rows() as u64;
        if rows == 0 {
            return Ok(OfflineWriteSummary {
                rows,
                version: self.client.latest_version(view.name()).await?,
            });
        }
        let version = self.client.write(view, &batch).await?;
        Ok(OfflineWriteSummary {
            rows,
            version: Some(version),
        })
    }

    async fn scan(&self, view: &ResolvedView, req: &ScanRequest) -> Result<ScanResult> {
        let (version, stream) = self.client.scan(view, req).await?;
        Ok(ScanResult { version, stream })
    }

    async fn latest_version(&self, view: &ResolvedView) -> Result<Option<u64>> {
        self.client.latest_version(view.name()).await
    }

    async fn delete_view(&self, view: &ResolvedView) -> Result<()> {
        self.client.delete_view(view.name()).await
    }

    /// The Delta table id: a re-created table has a new one, so incremental
    /// materialization starts over instead of trusting old watermarks.
    async fn table_id(&self, view: &ResolvedView) -> Result<Option<String>> {
        self.client.table_id(view.name()).await
    }
}
