//! The offline store's client: the per-table log cache, table opening, writes
//! and view deletion. Scans are in `scan.rs`, compaction and vacuum in
//! `maintenance.rs`, log replay in `log.rs`, type conformance in `conform.rs`,
//! the Parquet reader in `parquet.rs`.
//!
//! # How the Delta log is read
//!
//! fstore replays the commit JSON files (`_delta_log/<v>.json`) itself instead of
//! asking delta-rs for a snapshot's file list, because a scan needs three things a
//! snapshot does not give: the **commit version** of every file (write order =
//! commit order, then file order inside the commit), the **data-change** flag of
//! each add (change-log scans skip compaction rewrites), and the adds of *each*
//! version (`since_version`). Commit files are immutable, so the parsed commits are
//! cached per table (keyed by the table id, so a dropped and re-created table is
//! re-read). Tables are created with `delta.enableExpiredLogCleanup = false` so the
//! JSON commits survive checkpoints.
//!
//! Compaction writes one file per run of small, adjacent (in write order) files,
//! with `dataChange = false` and a `fstore.order` tag carrying the order key of the
//! first file it replaces, so the rewritten rows keep their place in write order
//! and are never re-emitted by a change-log scan.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::{Array, ArrayRef, RecordBatch, new_null_array};
use arrow_schema::{Field, Schema};
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::logstore::LogStoreRef;
use deltalake::protocol::SaveMode;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{DeltaTable, DeltaTableBuilder};
use fstore_core::ResolvedView;
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::ObjectStore;
use url::Url;

use crate::config::{BACKEND, Settings};
use crate::conform::{check_view_name, conform, same_type};
use crate::error::Error;
use crate::log::{TableLog, parse_commit};

type CoreResult<T> = fstore_core::Result<T>;

/// Shared state of one store: config and the per-table log cache.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) cfg: Settings,
    pub(crate) logs: Mutex<HashMap<String, TableLog>>,
}

impl Client {
    pub(crate) fn new(cfg: Settings) -> Self {
        Self {
            cfg,
            logs: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn table_url(&self, view: &str) -> CoreResult<Url> {
        check_view_name(view)?;
        self.cfg.root.join(&format!("{view}/")).map_err(|e| {
            fstore_core::Error::invalid(format!(
                "{BACKEND}: feature view '{view}': bad table URL: {e}"
            ))
        })
    }

    /// Lists the root once (connectivity and credentials).
    pub(crate) async fn check(&self) -> CoreResult<()> {
        let what = format!("listing the root {}", self.cfg.root);
        let store = DeltaTableBuilder::from_url(self.cfg.root.clone())
            .map_err(Error::delta(what.clone()))?
            .with_storage_options(self.cfg.storage_options.clone())
            .build_storage()
            .map_err(Error::delta(what.clone()))?
            .object_store(None);
        store
            .list_with_delimiter(None)
            .await
            .map_err(Error::store(what))?;
        Ok(())
    }

    pub(crate) fn unloaded(&self, view: &str) -> CoreResult<DeltaTable> {
        let url = self.table_url(view)?;
        Ok(DeltaTableBuilder::from_url(url)
            .map_err(Error::delta(format!(
                "opening table of feature view '{view}'"
            )))?
            .with_storage_options(self.cfg.storage_options.clone())
            .build()
            .map_err(Error::delta(format!(
                "opening table of feature view '{view}'"
            )))?)
    }

    pub(crate) async fn read_commit(
        log_store: &LogStoreRef,
        view: &str,
        v: u64,
    ) -> Result<Option<bytes::Bytes>, Error> {
        log_store
            .read_commit_entry(v)
            .await
            .map_err(Error::delta(format!(
                "reading commit {v} of feature view '{view}'"
            )))
    }

    /// The parsed log of `view` up to its latest version (`None`: no table).
    pub(crate) async fn table_log(
        &self,
        view: &str,
        ev_col: Option<&str>,
    ) -> CoreResult<(LogStoreRef, Option<TableLog>)> {
        let table = self.unloaded(view)?;
        let ls = table.log_store();
        let Some(first) = Self::read_commit(&ls, view, 0).await? else {
            if let Ok(mut m) = self.logs.lock() {
                m.remove(view);
            }
            return Ok((ls, None));
        };
        let c0 = parse_commit(&first, 0, ev_col)?;
        let id = c0.table_id.clone().unwrap_or_default();
        let mut log = self
            .logs
            .lock()
            .ok()
            .and_then(|m| m.get(view).cloned())
            .filter(|l| l.table_id == id && !l.commits.is_empty() && l.ev_col.as_deref() == ev_col)
            .unwrap_or_else(|| TableLog {
                table_id: id,
                ev_col: ev_col.map(str::to_owned),
                commits: vec![Arc::new(c0)],
            });
        let latest = ls
            .get_latest_version(log.latest())
            .await
            .map_err(Error::delta(format!(
                "listing the log of feature view '{view}'"
            )))?;
        let next = log.commits.len() as u64;
        if latest >= next {
            let fetched: Vec<(u64, Option<bytes::Bytes>)> = stream::iter(next..=latest)
                .map(|v| {
                    let ls = Arc::clone(&ls);
                    async move { Ok::<_, Error>((v, Self::read_commit(&ls, view, v).await?)) }
                })
                .buffered(16)
                .try_collect()
                .await?;
            for (v, bytes) in fetched {
                let bytes = bytes.ok_or_else(|| {
                    Error::Log(format!(
                        "commit {v} of feature view '{view}' is missing from the Delta log \
                         (was the log cleaned up? fstore needs every commit JSON)"
                    ))
                })?;
                log.commits.push(Arc::new(parse_commit(&bytes, v, ev_col)?));
            }
        }
        if let Ok(mut m) = self.logs.lock() {
            m.insert(view.to_owned(), log.clone());
        }
        Ok((ls, Some(log)))
    }

    /// The Delta table id (`metaData.id` of commit 0), new for every table
    /// created under the view's path; `None` when there is no table.
    pub(crate) async fn table_id(&self, view: &str) -> CoreResult<Option<String>> {
        let table = self.unloaded(view)?;
        let ls = table.log_store();
        let Some(first) = Self::read_commit(&ls, view, 0).await? else {
            return Ok(None);
        };
        Ok(parse_commit(&first, 0, None)?.table_id)
    }

    pub(crate) async fn latest_version(&self, view: &str) -> CoreResult<Option<u64>> {
        let table = self.unloaded(view)?;
        let ls = table.log_store();
        if Self::read_commit(&ls, view, 0).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(ls.get_latest_version(0).await.map_err(
            Error::delta(format!("listing the log of feature view '{view}'")),
        )?))
    }

    /// Loads the table, creating it with `schema` when it does not exist.
    pub(crate) async fn load_or_create(
        &self,
        view: &str,
        schema: &Schema,
    ) -> CoreResult<DeltaTable> {
        let mut table = self.unloaded(view)?;
        let exists = Self::read_commit(&table.log_store(), view, 0)
            .await?
            .is_some();
        if !exists {
            let st: StructType = schema.try_into_kernel().map_err(|e| {
                Error::delta(format!("converting the schema of feature view '{view}'"))(e.into())
            })?;
            let created = table
                .create()
                .with_table_name(view)
                .with_columns(st.fields().cloned())
                .with_save_mode(SaveMode::ErrorIfExists)
                .with_configuration_property(
                    deltalake::TableProperty::EnableExpiredLogCleanup,
                    Some("false"),
                )
                .with_comment("fstore feature view history")
                // No commit retries: a writer that loses the race for version 0
                // must fail and load the winner's table, not commit a second
                // CREATE on top of it (an extra version and a new table id).
                .with_commit_properties(CommitProperties::default().with_max_retries(0))
                .await;
            match created {
                Ok(t) => return Ok(t),
                // Lost a creation race to another writer: load the winner's table.
                Err(e) => tracing::debug!(view, error = %e, "table creation raced; loading"),
            }
            table = self.unloaded(view)?;
        }
        table.load().await.map_err(Error::delta(format!(
            "loading table of feature view '{view}'"
        )))?;
        Ok(table)
    }

    /// Appends `batch` (already in the view's canonical schema), retrying the
    /// whole write on commit conflicts. Returns the committed version.
    pub(crate) async fn write(&self, view: &ResolvedView, batch: &RecordBatch) -> CoreResult<u64> {
        let mut attempt = 0;
        loop {
            match self.try_write(view, batch).await {
                Ok(v) => return Ok(v),
                Err(WriteErr::Retry(e)) if attempt < self.cfg.commit_retries => {
                    attempt += 1;
                    tracing::debug!(view = view.name(), attempt, error = ?e, "delta commit conflict, retrying");
                    let jitter = u64::from(std::process::id() % 50) + 20 * u64::from(attempt);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(WriteErr::Retry(e)) => return Err(e.into()),
                Err(WriteErr::Fatal(e)) => return Err(e),
            }
        }
    }

    pub(crate) async fn try_write(
        &self,
        view: &ResolvedView,
        batch: &RecordBatch,
    ) -> Result<u64, WriteErr> {
        let name = view.name();
        let mut table = self.load_or_create(name, batch.schema().as_ref()).await?;
        let snapshot = table.snapshot().map_err(|e| WriteErr::delta(name, e))?;
        let table_schema: Schema = snapshot
            .schema()
            .as_ref()
            .try_into_arrow()
            .map_err(|e| WriteErr::delta(name, e.into()))?;
        if !snapshot.metadata().partition_columns().is_empty() {
            return Err(WriteErr::Fatal(fstore_core::Error::invalid(format!(
                "{BACKEND}: the table of feature view '{name}' is partitioned; fstore writes unpartitioned tables"
            ))));
        }
        // Build the batch in the table's column order; new features go last
        // (additive evolution), features dropped from the view are written as null.
        let mut fields: Vec<Field> = Vec::new();
        let mut cols: Vec<ArrayRef> = Vec::new();
        let mut seen = HashSet::new();
        for tf in table_schema.fields() {
            seen.insert(tf.name().as_str());
            match batch.column_by_name(tf.name()) {
                Some(c) if same_type(c.data_type(), tf.data_type()) => {
                    cols.push(conform(c, tf.data_type(), tf.name(), || {
                        format!("batch written to feature view '{name}'")
                    })?);
                }
                Some(c) => {
                    return Err(WriteErr::Fatal(fstore_core::Error::invalid(format!(
                        "{BACKEND}: feature view '{name}': column '{}' is {} in the batch but {} in the Delta table; \
                         changing a stored column's type is a breaking change (write to a new view)",
                        tf.name(),
                        c.data_type(),
                        tf.data_type()
                    ))));
                }
                None if tf.is_nullable() => {
                    cols.push(new_null_array(tf.data_type(), batch.num_rows()))
                }
                None => {
                    return Err(WriteErr::Fatal(fstore_core::Error::invalid(format!(
                        "{BACKEND}: feature view '{name}': the batch lacks the table's non-nullable column '{}'",
                        tf.name()
                    ))));
                }
            }
            fields.push(tf.as_ref().clone());
        }
        let mut evolve = false;
        let bs = batch.schema();
        for (i, f) in bs.fields().iter().enumerate() {
            if !seen.contains(f.name().as_str()) {
                evolve = true;
                fields.push(f.as_ref().clone().with_nullable(true));
                cols.push(Arc::clone(batch.column(i)));
            }
        }
        let out = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
            .map_err(|e| WriteErr::Fatal(e.into()))?;
        let mut writer = RecordBatchWriter::for_table(&table)
            .map_err(|e| WriteErr::delta(name, e))?
            .with_target_file_size(self.cfg.target_file_size)
            .with_commit_properties(
                CommitProperties::default().with_cleanup_expired_logs(Some(false)),
            );
        let mode = if evolve {
            WriteMode::MergeSchema
        } else {
            WriteMode::Default
        };
        writer
            .write_with_mode(out, mode)
            .await
            .map_err(|e| WriteErr::delta(name, e))?;
        let v = writer
            .flush_and_commit(&mut table)
            .await
            .map_err(|e| WriteErr::delta(name, e))?;
        Ok(v)
    }

    pub(crate) async fn delete_view(&self, view: &str) -> CoreResult<()> {
        let table = self.unloaded(view)?;
        let store = table.log_store().object_store(None);
        let paths = store.list(None).map_ok(|m| m.location).boxed();
        store
            .delete_stream(paths)
            .try_collect::<Vec<_>>()
            .await
            .map_err(Error::store(format!(
                "deleting the table of feature view '{view}'"
            )))?;
        if let Ok(mut m) = self.logs.lock() {
            m.remove(view);
        }
        Ok(())
    }
}

pub(crate) enum WriteErr {
    Retry(Error),
    Fatal(fstore_core::Error),
}

impl WriteErr {
    pub(crate) fn delta(view: &str, e: deltalake::DeltaTableError) -> Self {
        let e = Error::delta(format!("appending to feature view '{view}'"))(e);
        if e.is_conflict() {
            Self::Retry(e)
        } else {
            Self::Fatal(e.into())
        }
    }
}

impl From<fstore_core::Error> for WriteErr {
    fn from(e: fstore_core::Error) -> Self {
        Self::Fatal(e)
    }
}
