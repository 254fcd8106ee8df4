//! Materialization: offline → online ([semantics §7](crate::docs::semantics)).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::FeatureStore;
use crate::adapter::to_online_rows;
use crate::error::{Error, Result};
use crate::model::ResolvedView;
use crate::offline::{ScanRequest, TimeRange};
use crate::online::{OnlineRow, WriteOptions, WriteSummary};
use crate::registry::Watermark;
use crate::telemetry::{self, MATERIALIZED_ROWS};

type ProgressFn = dyn Fn(&MaterializeProgress) + Send + Sync;

/// Options of a materialization run.
#[derive(Clone)]
#[non_exhaustive]
pub struct MaterializeOptions {
    /// Rows per online write (memory is bounded by this, not by the window).
    pub batch_size: usize,
    /// Called after every written chunk.
    pub progress: Option<Arc<ProgressFn>>,
}

impl Default for MaterializeOptions {
    fn default() -> Self {
        Self {
            batch_size: 10_000,
            progress: None,
        }
    }
}

impl fmt::Debug for MaterializeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaterializeOptions")
            .field("batch_size", &self.batch_size)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl MaterializeOptions {
    /// Sets the batch size (at least 1).
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }
    /// Sets the progress callback.
    pub fn with_progress(
        mut self,
        f: impl Fn(&MaterializeProgress) + Send + Sync + 'static,
    ) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }
}

/// Progress of a running materialization.
#[derive(Debug, Clone)]
pub struct MaterializeProgress {
    /// The view being materialized.
    pub view: String,
    /// Rows read so far for this view.
    pub rows_read: u64,
    /// Rows written so far.
    pub rows_written: u64,
    /// Rows skipped so far (older than a row written or stored).
    pub rows_skipped: u64,
}

/// What one view's materialization did. `rows_read == rows_written + rows_skipped`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewMaterializeReport {
    /// The view.
    pub view: String,
    /// Event-time window start (exclusive; `None` = unbounded).
    pub start: Option<DateTime<Utc>>,
    /// Event-time window end (inclusive).
    pub end: DateTime<Utc>,
    /// Offline version read, if versioned.
    pub offline_version: Option<u64>,
    /// Rows read from the offline store.
    pub rows_read: u64,
    /// Rows written to the online store.
    pub rows_written: u64,
    /// Rows skipped: superseded by a newer row in the same chunk or already online.
    pub rows_skipped: u64,
}

/// What a materialization run did, per view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaterializeReport {
    /// One entry per view.
    pub views: Vec<ViewMaterializeReport>,
}

/// Keeps, per entity key, only the newest row of a chunk (ties: the later row).
/// Returns the rows to write and how many were dropped.
fn latest_per_key(rows: Vec<OnlineRow>) -> (Vec<OnlineRow>, u64) {
    let n = rows.len();
    let mut best: HashMap<Vec<u8>, OnlineRow> = HashMap::with_capacity(n);
    for r in rows {
        match best.get(&r.entity_key) {
            Some(b) if !r.supersedes(b) => {}
            _ => {
                best.insert(r.entity_key.clone(), r);
            }
        }
    }
    let kept: Vec<OnlineRow> = best.into_values().collect();
    let dropped = (n - kept.len()) as u64;
    (kept, dropped)
}

/// True when a watermark describes another table than the one there now: the
/// table's identity changed, or (stores without identity) its version went
/// backwards. The run then starts over; newest-wins keeps that idempotent.
fn watermark_is_stale(
    w: &Watermark,
    table_id: Option<&str>,
    change_log: bool,
    pinned: Option<u64>,
) -> bool {
    let identity_changed = w.table_id.is_some() && w.table_id.as_deref() != table_id;
    let version_went_back = change_log && pinned.unwrap_or(0) < w.offline_version.unwrap_or(0);
    identity_changed || version_went_back
}

impl FeatureStore {
    /// Writes, for each entity of each view, its latest row with
    /// `start < event_ts <= end` to the online store. Does not touch watermarks.
    ///
    /// # Errors
    /// [`Error::NotFound`] for unknown views, [`Error::InvalidInput`] for views
    /// that are not `online`; backend failures.
    pub async fn materialize(
        &self,
        views: &[&str],
        start: Option<DateTime<Utc>>,
        end: DateTime<Utc>,
        opts: &MaterializeOptions,
    ) -> Result<MaterializeReport> {
        let span = tracing::info_span!(
            "fstore.materialize",
            views = ?views,
            start = ?start,
            end = %end,
            online = self.online.backend(),
            offline = self.offline.backend(),
            rows = tracing::field::Empty,
            outcome = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let res = telemetry::operation(
            "materialize",
            span.clone(),
            self.materialize_inner(views, start, end, opts),
        )
        .await;
        self.record_materialized(&span, &res);
        res
    }

    async fn materialize_inner(
        &self,
        views: &[&str],
        start: Option<DateTime<Utc>>,
        end: DateTime<Utc>,
        opts: &MaterializeOptions,
    ) -> Result<MaterializeReport> {
        let mut report = MaterializeReport::default();
        for name in views {
            let rv = self.online_view(name).await?;
            let range = TimeRange::after_until(start, end);
            let (mut r, version) = self
                .run_scan(&rv, ScanRequest::new(range), opts, 0, 0, 0)
                .await?;
            r.start = start;
            r.end = end;
            r.offline_version = version;
            report.views.push(r);
        }
        Ok(report)
    }

    /// Materializes each view from its watermark for this online store up to
    /// `end`, then advances the watermark (only after every write succeeded;
    /// a failed run leaves it where it was, and re-running is idempotent).
    ///
    /// With an offline change log the run also reads every row committed since
    /// the last run's table version whose event time is at or before the old
    /// watermark, so late-arriving rows are materialized too.
    ///
    /// The watermark records the offline table's identity
    /// ([`crate::OfflineStore::table_id`]); when the table was deleted and
    /// re-created since (identity changed, or its version went backwards), the
    /// run starts over from the beginning of time.
    ///
    /// # Errors
    /// As [`FeatureStore::materialize`]; [`Error::Conflict`] if the watermark
    /// could not be committed after several retries, or the offline table was
    /// re-created while the run read it (the watermark is left unchanged).
    pub async fn materialize_incremental(
        &self,
        views: &[&str],
        end: DateTime<Utc>,
        opts: &MaterializeOptions,
    ) -> Result<MaterializeReport> {
        let span = tracing::info_span!(
            "fstore.materialize_incremental",
            views = ?views,
            end = %end,
            online = self.online.backend(),
            offline = self.offline.backend(),
            rows = tracing::field::Empty,
            outcome = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let res = telemetry::operation(
            "materialize_incremental",
            span.clone(),
            self.materialize_incremental_inner(views, end, opts),
        )
        .await;
        self.record_materialized(&span, &res);
        res
    }

    /// Counts materialized rows per view and records the total on the span.
    fn record_materialized(&self, span: &tracing::Span, res: &Result<MaterializeReport>) {
        if let Ok(r) = res {
            let mut total = 0;
            for v in &r.views {
                total += v.rows_read;
                telemetry::count_view_backend(
                    MATERIALIZED_ROWS,
                    &v.view,
                    self.online.backend(),
                    v.rows_read,
                );
            }
            span.record("rows", total);
        }
    }

    async fn materialize_incremental_inner(
        &self,
        views: &[&str],
        end: DateTime<Utc>,
        opts: &MaterializeOptions,
    ) -> Result<MaterializeReport> {
        let store_id = self.online.store_id();
        let mut report = MaterializeReport::default();
        for name in views {
            let rv = self.online_view(name).await?;
            let snap = self.registry.snapshot().await?;
            let change_log = self.offline.capabilities().change_log;
            let table_id = self.offline.table_id(&rv).await?;
            let pinned = if change_log {
                self.offline.latest_version(&rv).await?
            } else {
                None
            };
            let mut wm = snap.watermark(name, &store_id).cloned();
            if let Some(w) = &wm
                && watermark_is_stale(w, table_id.as_deref(), change_log, pinned)
            {
                tracing::warn!(
                    view = %name,
                    old_table = ?w.table_id,
                    table = ?table_id,
                    old_version = ?w.offline_version,
                    version = ?pinned,
                    "offline table was re-created since the watermark; materializing from the start"
                );
                wm = None;
            }
            let old_end = wm.as_ref().map(|w| w.event_end);
            let main =
                ScanRequest::new(TimeRange::after_until(old_end, end)).with_as_of_version(pinned);
            let (mut r, version) = self.run_scan(&rv, main, opts, 0, 0, 0).await?;
            if let (true, Some(w)) = (change_log, &wm)
                && pinned.is_some_and(|p| p > w.offline_version.unwrap_or(0))
            {
                let since = w.offline_version.unwrap_or(0);
                let late = ScanRequest::new(TimeRange::inclusive(None, w.event_end))
                    .with_as_of_version(pinned)
                    .with_since_version(Some(since));
                let (r2, _) = self
                    .run_scan(&rv, late, opts, r.rows_read, r.rows_written, r.rows_skipped)
                    .await?;
                r = r2;
            }
            let new_end = old_end.map_or(end, |o| o.max(end));
            let new_version = if change_log { pinned.or(version) } else { None };
            // A table re-created while this run read it: what was read may
            // belong to either table, so the watermark stays where it was.
            let table_after = self.offline.table_id(&rv).await?;
            if table_after != table_id {
                return Err(Error::Conflict(format!(
                    "offline table of feature view '{name}' was re-created during \
                     materialization ({table_id:?} -> {table_after:?}); run it again"
                )));
            }
            self.commit_watermark(name, &store_id, new_end, new_version, table_id)
                .await?;
            r.start = old_end;
            r.end = end;
            r.offline_version = new_version;
            report.views.push(r);
        }
        Ok(report)
    }

    async fn online_view(&self, name: &str) -> Result<ResolvedView> {
        let rv = self.resolve_view(name).await?;
        if !rv.view.online {
            return Err(Error::invalid(format!(
                "feature view '{name}' is not online (online = false); nothing to materialize"
            )));
        }
        Ok(rv)
    }

    async fn run_scan(
        &self,
        rv: &ResolvedView,
        req: ScanRequest,
        opts: &MaterializeOptions,
        read0: u64,
        written0: u64,
        skipped0: u64,
    ) -> Result<(ViewMaterializeReport, Option<u64>)> {
        let scan = self.offline.scan(rv, &req).await?;
        let version = scan.version;
        let mut stream = scan.stream;
        let (mut read, mut total) = (
            read0,
            WriteSummary {
                written: written0,
                skipped: skipped0,
            },
        );
        let batch_size = opts.batch_size.max(1);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let mut offset = 0;
            while offset < batch.num_rows() {
                let len = batch_size.min(batch.num_rows() - offset);
                let chunk = batch.slice(offset, len);
                offset += len;
                let rows = to_online_rows(rv, &chunk)?;
                read += rows.len() as u64;
                let (rows, dropped) = latest_per_key(rows);
                let expected = rows.len() as u64;
                let s = self
                    .online
                    .write(rv, rows, &WriteOptions::default())
                    .await?;
                if s.written + s.skipped != expected {
                    return Err(Error::backend_msg(
                        self.online.backend(),
                        format!(
                            "write of {expected} rows of '{}' reported {} written + {} skipped",
                            rv.name(),
                            s.written,
                            s.skipped
                        ),
                    ));
                }
                total += s;
                total.skipped += dropped;
                let p = MaterializeProgress {
                    view: rv.name().to_owned(),
                    rows_read: read,
                    rows_written: total.written,
                    rows_skipped: total.skipped,
                };
                tracing::debug!(view = %p.view, read = p.rows_read, written = p.rows_written, skipped = p.rows_skipped, "materialize progress");
                if let Some(f) = &opts.progress {
                    f(&p);
                }
            }
        }
        if read != total.written + total.skipped {
            return Err(Error::backend_msg(
                "fstore",
                format!(
                    "materialize '{}': read {read} != written {} + skipped {}",
                    rv.name(),
                    total.written,
                    total.skipped
                ),
            ));
        }
        Ok((
            ViewMaterializeReport {
                view: rv.name().to_owned(),
                start: None,
                end: Utc::now(),
                offline_version: version,
                rows_read: read,
                rows_written: total.written,
                rows_skipped: total.skipped,
            },
            version,
        ))
    }

    async fn commit_watermark(
        &self,
        view: &str,
        store_id: &str,
        event_end: DateTime<Utc>,
        offline_version: Option<u64>,
        table_id: Option<String>,
    ) -> Result<()> {
        let mut last = None;
        for _ in 0..16 {
            let snap = self.registry.snapshot().await?;
            let mut state = snap.state.clone();
            if !state.definitions.feature_views.contains_key(view) {
                return Err(Error::not_found("feature view", view));
            }
            state.watermarks.entry(view.to_owned()).or_default().insert(
                store_id.to_owned(),
                Watermark {
                    event_end,
                    offline_version,
                    table_id: table_id.clone(),
                    updated_at: Utc::now(),
                },
            );
            match self.registry.commit(snap.version, state).await {
                Ok(_) => {
                    self.forget();
                    return Ok(());
                }
                Err(e @ Error::Conflict(_)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Conflict(format!("watermark of '{view}' not committed"))))
    }
}
