//! The Parquet reader: ranged reads through the table's object store.

use std::sync::Arc;

use arrow_array::{RecordBatch, new_null_array};
use arrow_schema::SchemaRef;
use futures::future::BoxFuture;
use futures::stream::TryStreamExt;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::config::BACKEND;
use crate::conform::conform;
use crate::error::Error;

type CoreResult<T> = fstore_core::Result<T>;

pub(crate) fn object_path(view: &str, path: &str) -> CoreResult<Path> {
    Path::from_url_path(path).map_err(|e| {
        fstore_core::Error::backend(
            BACKEND,
            format!("feature view '{view}': bad data file path '{path}'"),
            e,
        )
    })
}

pub(crate) fn open_err(
    view: &str,
    path: &str,
) -> impl FnOnce(parquet::errors::ParquetError) -> fstore_core::Error {
    let msg = format!("reading data file '{path}' of feature view '{view}'");
    move |e| {
        if e.to_string().contains("not found") || e.to_string().contains("NotFound") {
            fstore_core::Error::not_found(
                "data file",
                format!(
                    "{msg}: it was removed (vacuumed?); time travel and change-log scans cannot reach before the last vacuum"
                ),
            )
        } else {
            Error::parquet(msg)(e).into()
        }
    }
}

pub(crate) async fn read_whole_file(
    store: &Arc<dyn ObjectStore>,
    path: &str,
    size: u64,
    schema: &SchemaRef,
    view: &str,
) -> CoreResult<Vec<RecordBatch>> {
    let reader = StoreReader::new(Arc::clone(store), object_path(view, path)?, size);
    let stream = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(open_err(view, path))?
        .build()
        .map_err(open_err(view, path))?;
    let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(open_err(view, path))?;
    let mut first_row = 0usize;
    batches
        .iter()
        .map(|b| {
            let at = first_row;
            first_row += b.num_rows();
            let source =
                || format!("feature view '{view}', file '{path}' (batch from file row {at})");
            let cols = schema
                .fields()
                .iter()
                .map(|f| match b.column_by_name(f.name()) {
                    Some(c) => conform(c, f.data_type(), f.name(), source),
                    None => Ok(new_null_array(f.data_type(), b.num_rows())),
                })
                .collect::<CoreResult<Vec<_>>>()?;
            Ok(RecordBatch::try_new(Arc::clone(schema), cols)?)
        })
        .collect()
}

/// Parquet reads through the table's object store (ranged GETs; the footer is
/// fetched with one 64 KiB suffix-sized read when possible).
pub(crate) struct StoreReader {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) path: Path,
    pub(crate) size: u64,
}

impl StoreReader {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64) -> Self {
        Self { store, path, size }
    }
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        Box::pin(async move { Ok(self.store.get_range(&self.path, range).await?) })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        Box::pin(async move { Ok(self.store.get_ranges(&self.path, &ranges).await?) })
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.size;
            let meta = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(meta))
        })
    }
}
