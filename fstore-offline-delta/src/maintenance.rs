//! Compaction and vacuum of one view's table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_schema::Schema;
use chrono::Utc;
use deltalake::kernel::engine::arrow_conversion::TryIntoArrow;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Remove};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};

use crate::client::Client;
use crate::config::BACKEND;
use crate::error::Error;
use crate::log::{AddFile, ORDER_TAG};
use crate::parquet::read_whole_file;

type CoreResult<T> = fstore_core::Result<T>;

/// The retention below which `vacuum` refuses to run unless forced (Delta's default).
pub(crate) const MIN_VACUUM_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What one compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// Files replaced.
    pub files_removed: u64,
    /// Files written.
    pub files_added: u64,
    /// Rows rewritten (unchanged in number and order).
    pub rows_rewritten: u64,
    /// The version committed (`None` when there was nothing to compact).
    pub version: Option<u64>,
}

/// What one vacuum did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VacuumReport {
    /// Data files deleted.
    pub files_deleted: u64,
}

impl Client {
    /// Rewrites runs of small adjacent files into files of about the target size.
    pub(crate) async fn compact(&self, view: &str) -> CoreResult<CompactReport> {
        let (_, log) = self.table_log(view, None).await?;
        let Some(log) = log else {
            return Ok(CompactReport::default());
        };
        let mut table = self.unloaded(view)?;
        table
            .load_version(log.latest())
            .await
            .map_err(Error::delta(format!(
                "loading table of feature view '{view}'"
            )))?;
        let files = log.live_files(log.latest());
        let target = self.cfg.target_file_size.max(1);
        let small = target / 2;
        let mut bins: Vec<Vec<AddFile>> = Vec::new();
        let mut cur: Vec<AddFile> = Vec::new();
        let mut cur_size = 0u64;
        for f in files {
            if f.size >= small || cur_size + f.size > target {
                if cur.len() > 1 {
                    bins.push(std::mem::take(&mut cur));
                }
                cur.clear();
                cur_size = 0;
                if f.size >= small {
                    continue;
                }
            }
            cur_size += f.size;
            cur.push(f);
        }
        if cur.len() > 1 {
            bins.push(cur);
        }
        if bins.is_empty() {
            return Ok(CompactReport::default());
        }
        let snapshot = table
            .snapshot()
            .map_err(Error::delta(format!("feature view '{view}'")))?;
        let schema: Schema = snapshot
            .schema()
            .as_ref()
            .try_into_arrow()
            .map_err(|e| Error::delta(format!("feature view '{view}'"))(e.into()))?;
        let schema = Arc::new(schema);
        let store = table.log_store().object_store(None);
        let now = Utc::now().timestamp_millis();
        let mut actions = Vec::new();
        let mut report = CompactReport::default();
        for bin in bins {
            let mut writer = RecordBatchWriter::for_table(&table)
                .map_err(Error::delta(format!("compacting feature view '{view}'")))?
                .with_target_file_size(0);
            for f in &bin {
                let batches = read_whole_file(&store, &f.path, f.size, &schema, view).await?;
                for b in batches {
                    report.rows_rewritten += b.num_rows() as u64;
                    writer
                        .write(b)
                        .await
                        .map_err(Error::delta(format!("compacting feature view '{view}'")))?;
                }
                actions.push(Action::Remove(Remove {
                    path: f.path.clone(),
                    data_change: false,
                    deletion_timestamp: Some(now),
                    extended_file_metadata: Some(true),
                    partition_values: Some(HashMap::new()),
                    size: i64::try_from(f.size).ok(),
                    tags: None,
                    deletion_vector: None,
                    base_row_id: None,
                    default_row_commit_version: None,
                }));
                report.files_removed += 1;
            }
            let first = bin.first().map_or((0, 0), |f| f.order);
            for mut add in writer
                .flush()
                .await
                .map_err(Error::delta(format!("compacting feature view '{view}'")))?
            {
                add.data_change = false;
                add.tags = Some(HashMap::from([(
                    ORDER_TAG.to_owned(),
                    Some(format!("{}.{}", first.0, first.1)),
                )]));
                actions.push(Action::Add(add));
                report.files_added += 1;
            }
        }
        let finalized = CommitBuilder::default()
            .with_actions(actions)
            .build(
                Some(snapshot),
                table.log_store(),
                DeltaOperation::Optimize {
                    predicate: None,
                    target_size: i64::try_from(target).unwrap_or(i64::MAX),
                },
            )
            .await
            .map_err(Error::delta(format!(
                "committing the compaction of feature view '{view}'"
            )))?;
        report.version = Some(finalized.version());
        Ok(report)
    }

    pub(crate) async fn vacuum(
        &self,
        view: &str,
        retention: Duration,
        force: bool,
    ) -> CoreResult<VacuumReport> {
        if retention < MIN_VACUUM_RETENTION && !force {
            return Err(fstore_core::Error::invalid(format!(
                "{BACKEND}: vacuum of feature view '{view}' with a retention of {retention:?} is below the \
                 7-day minimum: it would delete files that running readers, time travel and change-log \
                 scans may still need. Pass force = true to do it anyway"
            )));
        }
        let mut table = self.unloaded(view)?;
        if Self::read_commit(&table.log_store(), view, 0)
            .await?
            .is_none()
        {
            return Ok(VacuumReport::default());
        }
        table.load().await.map_err(Error::delta(format!(
            "loading table of feature view '{view}'"
        )))?;
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let (_, metrics) = table
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(!force)
            .await
            .map_err(Error::delta(format!("vacuuming feature view '{view}'")))?;
        Ok(VacuumReport {
            files_deleted: metrics.files_deleted.len() as u64,
        })
    }
}
