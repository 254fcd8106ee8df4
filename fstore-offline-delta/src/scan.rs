//! Scans: file and row-group pruning by event time, projection, streaming in
//! write order.

use std::borrow::Cow;
use std::ops::Bound;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{BooleanArray, RecordBatch, new_null_array};
use arrow_buffer::BooleanBuffer;
use arrow_schema::{DataType, Schema, SchemaRef, TimeUnit};
use fstore_core::time::{check_timestamp_type, reject_nulls, timestamp_micros, to_micros};
use fstore_core::{ResolvedView, ScanRequest, TimeRange};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::ObjectStore;
use parquet::arrow::ProjectionMask;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::file::statistics::Statistics;

use crate::client::Client;
use crate::config::BACKEND;
use crate::conform::conform;
use crate::log::AddFile;
use crate::parquet::{StoreReader, object_path, open_err};

type CoreResult<T> = fstore_core::Result<T>;

/// Everything a scan task needs, cheap to clone.
#[derive(Clone)]
pub(crate) struct ScanCtx {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) out_schema: SchemaRef,
    pub(crate) ev_col: String,
    pub(crate) range: TimeRange,
    pub(crate) batch_rows: usize,
    pub(crate) view: String,
}

impl Client {
    /// Streams the rows of `req` (see `OfflineStore::scan`). Returns the version read.
    pub(crate) async fn scan(
        &self,
        view: &ResolvedView,
        req: &ScanRequest,
    ) -> CoreResult<(Option<u64>, BoxStream<'static, CoreResult<RecordBatch>>)> {
        let name = view.name();
        let ev_col = view.view.event_timestamp_column.clone();
        let features: Vec<String> = req
            .features
            .clone()
            .unwrap_or_else(|| view.view.features.iter().map(|f| f.name.clone()).collect());
        let full = view.arrow_schema();
        let mut out_fields = Vec::new();
        for c in view.key_and_time_columns() {
            if let Ok(f) = full.field_with_name(c) {
                out_fields.push(f.clone());
            }
        }
        for f in &features {
            let def = view.view.feature(f).ok_or_else(|| {
                fstore_core::Error::invalid(format!("feature view '{name}' has no feature '{f}'"))
            })?;
            out_fields.push(def.to_arrow());
        }
        let out_schema: SchemaRef = Arc::new(Schema::new(out_fields));
        let (ls, log) = self.table_log(name, Some(&ev_col)).await?;
        let Some(log) = log else {
            if let Some(v) = req.as_of_version {
                return Err(fstore_core::Error::not_found(
                    "table version",
                    format!("{v} of feature view '{name}' (the view has no Delta table yet)"),
                ));
            }
            return Ok((None, Box::pin(stream::empty())));
        };
        let latest = log.latest();
        let upto = req.as_of_version.unwrap_or(latest);
        if upto > latest {
            return Err(fstore_core::Error::not_found(
                "table version",
                format!("{upto} of feature view '{name}' (latest is {latest})"),
            ));
        }
        let files = match req.since_version {
            Some(s) => log.changes(s, upto),
            None => log.live_files(upto),
        };
        let (lo, hi) = bounds(&req.range);
        let files: Vec<AddFile> = files
            .into_iter()
            .filter(|f| f.rows != Some(0))
            .filter(|f| !(f.ev_max.is_some_and(|m| m < lo) || f.ev_min.is_some_and(|m| m > hi)))
            .collect();
        let ctx = ScanCtx {
            store: ls.object_store(None),
            out_schema,
            ev_col,
            range: req.range,
            batch_rows: self.cfg.scan_batch_rows,
            view: name.to_owned(),
        };
        let s = stream::iter(files)
            .map(move |f| futures::future::ready(ctx.clone().decode_ahead(f)))
            // Files ahead of the one being consumed are opened and decoded on
            // their own tasks (on every core of a multi-threaded runtime).
            .buffered(FILES_AHEAD)
            .flatten()
            .try_filter(|b| futures::future::ready(b.num_rows() > 0));
        Ok((Some(upto), Box::pin(s)))
    }
}

/// Inclusive micro bounds of a range (exclusive ends moved by one micro).
pub(crate) fn bounds(r: &TimeRange) -> (i64, i64) {
    let lo = match r.start {
        Bound::Unbounded => i64::MIN,
        Bound::Included(t) => to_micros(t),
        Bound::Excluded(t) => to_micros(t).saturating_add(1),
    };
    let hi = match r.end {
        Bound::Unbounded => i64::MAX,
        Bound::Included(t) => to_micros(t),
        Bound::Excluded(t) => to_micros(t).saturating_sub(1),
    };
    (lo, hi)
}

pub(crate) fn stat_i64(s: Option<&Statistics>) -> (Option<i64>, Option<i64>) {
    match s {
        Some(Statistics::Int64(v)) => (v.min_opt().copied(), v.max_opt().copied()),
        _ => (None, None),
    }
}

/// Data files opened and decoded ahead of the one being consumed.
const FILES_AHEAD: usize = 4;
/// Batches a file's task decodes ahead of its consumer.
const BATCHES_AHEAD: usize = 8;

impl ScanCtx {
    /// Spawns a task that opens `f` and decodes it ([`ScanCtx::open`]) into a
    /// bounded channel; returns the channel as a stream, in file order. A task
    /// that fails or panics ends the stream with an error (never a silent
    /// truncation); dropping the stream stops the task at its next batch.
    pub(crate) fn decode_ahead(self, f: AddFile) -> BoxStream<'static, CoreResult<RecordBatch>> {
        let (tx, rx) = tokio::sync::mpsc::channel::<CoreResult<RecordBatch>>(BATCHES_AHEAD);
        let view = self.view.clone();
        let path = f.path.clone();
        let task = tokio::spawn(async move {
            match self.open(f).await {
                Ok(mut batches) => {
                    while let Some(b) = batches.next().await {
                        let failed = b.is_err();
                        if tx.send(b).await.is_err() || failed {
                            break;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
            }
        });
        let abort = task.abort_handle();
        // Received batches, then the task's outcome: a panic is an error.
        let received = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        let outcome = stream::once(async move {
            match task.await {
                Ok(()) => None,
                Err(e) => Some(Err(fstore_core::Error::backend_msg(
                    BACKEND,
                    format!("feature view '{view}', file '{path}': the decoding task failed: {e}"),
                ))),
            }
        })
        .filter_map(futures::future::ready);
        let guard = AbortOnDrop(abort);
        Box::pin(received.chain(outcome).map(move |b| {
            let _ = &guard;
            b
        }))
    }

    /// Opens one data file: prunes its row groups by event-time statistics and
    /// projects to the requested columns present in the file.
    pub(crate) async fn open(
        self,
        f: AddFile,
    ) -> CoreResult<BoxStream<'static, CoreResult<RecordBatch>>> {
        let path = f.path.clone();
        let reader = StoreReader::new(
            Arc::clone(&self.store),
            object_path(&self.view, &path)?,
            f.size,
        );
        let builder = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(open_err(&self.view, &path))?;
        let file_schema = Arc::clone(builder.schema());
        let parquet_schema = builder.parquet_schema();
        let meta = Arc::clone(builder.metadata());
        let (lo, hi) = bounds(&self.range);
        let leaf_of = |name: &str| {
            (0..parquet_schema.num_columns())
                .find(|i| parquet_schema.column(*i).path().parts() == [name])
        };
        // Statistics are compared with microsecond bounds: only for a column
        // stored in microseconds (the canonical type; other units are converted
        // row by row in `finish`).
        let micros_in_file = matches!(
            file_schema
                .field_with_name(&self.ev_col)
                .map(|f| f.data_type()),
            Ok(DataType::Timestamp(TimeUnit::Microsecond, _))
        );
        let ev_leaf = leaf_of(&self.ev_col).filter(|_| micros_in_file);
        let row_groups: Vec<usize> = (0..meta.num_row_groups())
            .filter(|rg| {
                let Some(leaf) = ev_leaf else { return true };
                let (min, max) = stat_i64(meta.row_group(*rg).column(leaf).statistics());
                !(max.is_some_and(|m| m < lo) || min.is_some_and(|m| m > hi))
            })
            .collect();
        let roots: Vec<usize> = self
            .out_schema
            .fields()
            .iter()
            .filter_map(|f| file_schema.index_of(f.name()).ok())
            .collect();
        let mask = ProjectionMask::roots(parquet_schema, roots);
        let stream = builder
            .with_row_groups(row_groups)
            .with_projection(mask)
            .with_batch_size(self.batch_rows)
            .build()
            .map_err(open_err(&self.view, &path))?;
        let view = self.view.clone();
        Ok(Box::pin(stream.map(move |r| {
            let b = r.map_err(open_err(&view, &path))?;
            self.finish(&b, &path)
        })))
    }

    /// Filters one batch to the time range and conforms it to the output schema.
    pub(crate) fn finish(&self, b: &RecordBatch, file: &str) -> CoreResult<RecordBatch> {
        let ev = b.column_by_name(&self.ev_col).ok_or_else(|| {
            fstore_core::Error::backend_msg(
                BACKEND,
                format!(
                    "feature view '{}': a data file lacks the event timestamp column '{}'",
                    self.view, self.ev_col
                ),
            )
        })?;
        // Borrowed when already in microseconds (the canonical type).
        let ev: Cow<'_, [i64]> = match ev.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                check_timestamp_type(ev.data_type(), &self.ev_col, true)?;
                reject_nulls(ev.as_ref(), &self.ev_col, "timestamp")?;
                Cow::Borrowed(ev.as_primitive::<TimestampMicrosecondType>().values())
            }
            _ => Cow::Owned(timestamp_micros(ev.as_ref(), &self.ev_col, true)?),
        };
        let cols = self
            .out_schema
            .fields()
            .iter()
            .map(|f| match b.column_by_name(f.name()) {
                Some(c) => conform(c, f.data_type(), f.name(), || {
                    format!(
                        "feature view '{}', file '{file}' (a batch of the rows read)",
                        self.view
                    )
                }),
                None => Ok(new_null_array(f.data_type(), b.num_rows())),
            })
            .collect::<CoreResult<Vec<_>>>()?;
        let projected = RecordBatch::try_new(Arc::clone(&self.out_schema), cols)?;
        // The range as inclusive bounds: two integer comparisons per row.
        let (lo, hi) = bounds(&self.range);
        let inside = |t: i64| lo <= t && t <= hi;
        if ev.iter().all(|&t| inside(t)) {
            return Ok(projected);
        }
        let mask = BooleanArray::new(
            BooleanBuffer::collect_bool(ev.len(), |i| inside(ev[i])),
            None,
        );
        Ok(arrow_select::filter::filter_record_batch(
            &projected, &mask,
        )?)
    }
}

/// Aborts a file's decoding task when its stream is dropped early.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_bounds_move_by_one_micro() {
        let t = fstore_core::time::from_micros(10);
        assert_eq!(bounds(&TimeRange::after_until(Some(t), t)), (11, 10));
        assert_eq!(bounds(&TimeRange::all()), (i64::MIN, i64::MAX));
    }
}
