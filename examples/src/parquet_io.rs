//! Parquet I/O of the `training_from_parquet` example: parallel row-group
//! reads (whole files or selected rows), parallel placement of the chosen
//! feature values, parallel column encoding on write, and an optional
//! per-column decode profile (`FSTORE_PROFILE=1`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, RecordBatch, UInt32Array, new_null_array};
use arrow_schema::{DataType, Field, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, compute_leaves,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

/// The error type of the example's I/O.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One opened Parquet file: its footer, read once, and its row-group row offsets.
#[derive(Debug)]
pub struct ParquetFile {
    path: PathBuf,
    meta: ArrowReaderMetadata,
    /// Global row index of the first row of each row group, plus the total.
    rg_start: Vec<usize>,
}

impl ParquetFile {
    /// Opens `path` and reads its footer.
    ///
    /// # Errors
    /// The file cannot be opened or has no valid Parquet footer.
    pub fn open(path: &Path) -> Result<Self, BoxError> {
        let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(|e| format!("cannot read the Parquet footer of {}: {e}", path.display()))?;
        let mut rg_start = vec![0usize];
        for rg in meta.metadata().row_groups() {
            let n = usize::try_from(rg.num_rows()).unwrap_or(0);
            rg_start.push(rg_start.last().copied().unwrap_or(0) + n);
        }
        Ok(Self {
            path: path.to_path_buf(),
            meta,
            rg_start,
        })
    }

    /// The file's Arrow schema.
    pub fn schema(&self) -> &SchemaRef {
        self.meta.schema()
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rg_start.last().copied().unwrap_or(0)
    }

    /// Projection onto the named top-level columns (`None` = all columns).
    fn mask(&self, columns: Option<&[String]>) -> Result<ProjectionMask, BoxError> {
        let Some(columns) = columns else {
            return Ok(ProjectionMask::all());
        };
        let idx = columns
            .iter()
            .map(|c| {
                self.schema()
                    .index_of(c)
                    .map_err(|_| format!("{}: no column '{c}'", self.path.display()).into())
            })
            .collect::<Result<Vec<usize>, BoxError>>()?;
        Ok(ProjectionMask::roots(self.meta.parquet_schema(), idx))
    }
}

/// A unit of reading: one row group of one file, some columns, optionally some rows.
#[derive(Debug)]
pub struct ReadTask<'a> {
    file: &'a ParquetFile,
    row_group: usize,
    mask: ProjectionMask,
    selection: Option<RowSelection>,
}

/// A task's index and its batches.
type Indexed = (usize, Vec<RecordBatch>);

/// Runs the read tasks on all cores; returns each task's batches, in task order.
///
/// # Errors
/// The first read error.
pub fn read_tasks(tasks: &[ReadTask<'_>]) -> Result<Vec<Vec<RecordBatch>>, BoxError> {
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(tasks.len())
        .max(1);
    let read = |t: &ReadTask<'_>| -> Result<Vec<RecordBatch>, BoxError> {
        let f = t.file;
        let rows = f.rg_start[t.row_group + 1] - f.rg_start[t.row_group];
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(
            File::open(&f.path)?,
            f.meta.clone(),
        )
        .with_row_groups(vec![t.row_group])
        .with_projection(t.mask.clone())
        .with_batch_size(rows.max(1));
        if let Some(sel) = &t.selection {
            builder = builder.with_row_selection(sel.clone());
        }
        let batches = builder
            .build()?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("reading {}: {e}", f.path.display()))?;
        Ok(batches)
    };
    let mut slots: Vec<Option<Vec<RecordBatch>>> = (0..tasks.len()).map(|_| None).collect();
    let results: Vec<Result<Vec<Indexed>, BoxError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<Vec<Indexed>, BoxError> {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(t) = tasks.get(i) else { break };
                        mine.push((i, read(t)?));
                    }
                    Ok(mine)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("reader thread panicked".into()))
            })
            .collect()
    });
    for r in results {
        for (i, b) in r? {
            slots[i] = Some(b);
        }
    }
    Ok(slots.into_iter().map(Option::unwrap_or_default).collect())
}

/// Every row group of `file` with the given columns.
///
/// # Errors
/// A column is not in the file.
pub fn whole_file<'a>(
    file: &'a ParquetFile,
    columns: Option<&[String]>,
) -> Result<Vec<ReadTask<'a>>, BoxError> {
    let mask = file.mask(columns)?;
    Ok((0..file.rg_start.len() - 1)
        .map(|rg| ReadTask {
            file,
            row_group: rg,
            mask: mask.clone(),
            selection: None,
        })
        .collect())
}

/// Read tasks for just the rows `sorted_rows` (global, ascending, distinct) of `file`.
///
/// # Errors
/// A column is not in the file.
pub fn selected_rows<'a>(
    file: &'a ParquetFile,
    columns: &[String],
    sorted_rows: &[u32],
) -> Result<Vec<ReadTask<'a>>, BoxError> {
    let mask = file.mask(Some(columns))?;
    let mut tasks = Vec::new();
    let mut rest = sorted_rows;
    for rg in 0..file.rg_start.len() - 1 {
        let (start, end) = (file.rg_start[rg], file.rg_start[rg + 1]);
        let n = rest.partition_point(|&r| (r as usize) < end);
        let (mine, after) = rest.split_at(n);
        rest = after;
        if mine.is_empty() {
            continue;
        }
        let mut selectors = Vec::new();
        let mut pos = start;
        let mut run = 0usize;
        for &r in mine {
            let r = r as usize;
            if r == pos + run {
                run += 1;
                continue;
            }
            if run > 0 {
                selectors.push(RowSelector::select(run));
                pos += run;
            }
            selectors.push(RowSelector::skip(r - pos));
            pos = r;
            run = 1;
        }
        selectors.push(RowSelector::select(run));
        pos += run;
        if pos < end {
            selectors.push(RowSelector::skip(end - pos));
        }
        tasks.push(ReadTask {
            file,
            row_group: rg,
            mask: mask.clone(),
            selection: Some(RowSelection::from(selectors)),
        });
    }
    Ok(tasks)
}

/// Writes `batch` as one row group, encoding its columns in parallel on all cores.
/// Dictionary encoding only for string/binary columns (high-cardinality numbers
/// would build a dictionary only to fall back to plain).
///
/// # Errors
/// The file cannot be created or written.
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), BoxError> {
    let schema = batch.schema();
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false);
    for f in schema.fields() {
        if matches!(
            f.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary
        ) {
            props = props.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), true);
        }
    }
    let file = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props.build()))?;
    let (mut file_writer, factory) = writer.into_serialized_writer()?;
    let mut writers = factory.create_column_writers(0)?.into_iter();
    let mut work: Vec<(usize, ArrowColumnWriter, ArrowLeafColumn)> = Vec::new();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        for leaf in compute_leaves(field, column)? {
            let w = writers
                .next()
                .ok_or("internal: fewer column writers than leaves")?;
            work.push((work.len(), w, leaf));
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, work.len().max(1));
    let mut shares: Vec<Vec<(usize, ArrowColumnWriter, ArrowLeafColumn)>> =
        (0..threads).map(|_| Vec::new()).collect();
    // dealt round-robin: columns are of similar size here
    for (i, item) in work.into_iter().enumerate() {
        shares[i % threads].push(item);
    }
    let encoded: Vec<Result<Vec<(usize, ArrowColumnChunk)>, BoxError>> = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                s.spawn(
                    move || -> Result<Vec<(usize, ArrowColumnChunk)>, BoxError> {
                        share
                            .into_iter()
                            .map(|(i, mut w, leaf)| {
                                w.write(&leaf)?;
                                Ok((i, w.close()?))
                            })
                            .collect()
                    },
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("writer thread panicked".into()))
            })
            .collect()
    });
    let mut chunks = Vec::new();
    for e in encoded {
        chunks.extend(e?);
    }
    chunks.sort_by_key(|(i, _)| *i);
    let mut row_group = file_writer.next_row_group()?;
    for (_, chunk) in chunks {
        chunk.append_to_row_group(&mut row_group)?;
    }
    row_group.close()?;
    file_writer.close()?;
    Ok(())
}

/// `f` over `0..n` on all cores (core's task pool); results in index order,
/// first error wins.
fn par_map<R: Send>(
    n: usize,
    f: impl Fn(usize) -> Result<R, BoxError> + Sync,
) -> Result<Vec<R>, BoxError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    fstore_core::pit::par_map(n, threads, f)
}

/// One view's chosen rows and the feature values read for them.
#[derive(Debug)]
pub struct Chosen<'a> {
    /// Per spine row, the chosen global row of the view's file (null: none).
    pub rows: &'a UInt32Array,
    /// The distinct chosen rows, ascending.
    pub sorted: &'a [u32],
    /// The feature columns of exactly the `sorted` rows, in that order, in
    /// one or more batches.
    pub values: &'a [RecordBatch],
    /// The view's feature columns, in output order.
    pub features: &'a [Field],
}

/// The feature columns of every view, one row per spine row: each value is
/// taken straight from the batch it was read into (no concatenation), one
/// output column per task on all cores.
///
/// # Errors
/// A feature column is missing from the values read (internal).
pub fn place_features(views: &[Chosen<'_>]) -> Result<Vec<ArrayRef>, BoxError> {
    // Per view: (batch, row) of each spine row's value; the null source last.
    let indices: Vec<Vec<(usize, usize)>> = par_map(views.len(), |vi| {
        let v = &views[vi];
        let mut starts = Vec::with_capacity(v.values.len() + 1);
        let mut n = 0usize;
        for b in v.values {
            starts.push(n);
            n += b.num_rows();
        }
        if n != v.sorted.len() {
            return Err(format!(
                "internal: {} feature rows read for {} chosen rows",
                n,
                v.sorted.len()
            )
            .into());
        }
        starts.push(n);
        let null = v.values.len();
        Ok(v.rows
            .iter()
            .map(|r| match r {
                None => (null, 0),
                Some(r) => {
                    let p = v.sorted.partition_point(|&x| x < r);
                    let b = starts.partition_point(|&s| s <= p) - 1;
                    (b, p - starts[b])
                }
            })
            .collect())
    })?;
    let columns: Vec<(usize, usize)> = views
        .iter()
        .enumerate()
        .flat_map(|(vi, v)| (0..v.features.len()).map(move |fi| (vi, fi)))
        .collect();
    par_map(columns.len(), |c| {
        let (vi, fi) = columns[c];
        let v = &views[vi];
        let f = &v.features[fi];
        let null = new_null_array(f.data_type(), 1);
        let mut sources = v
            .values
            .iter()
            .map(|b| {
                b.column_by_name(f.name())
                    .map(|c| c.as_ref())
                    .ok_or_else(|| format!("internal: feature '{}' was not read", f.name()))
            })
            .collect::<Result<Vec<&dyn arrow_array::Array>, String>>()?;
        sources.push(null.as_ref());
        Ok(arrow_select::interleave::interleave(
            &sources,
            &indices[vi],
        )?)
    })
}

/// Asks the C allocator to keep large freed blocks for reuse. glibc's malloc
/// serves blocks above a threshold (128 KiB at start) from fresh `mmap`s and
/// returns them to the kernel on free, so every large buffer costs a page fault
/// (and zeroing) per 4 KiB touched; the threshold rises to the size of a freed
/// mapped block, up to 32 MiB. Allocating and freeing one untouched block just
/// under that size raises it at once (nothing is touched, so nothing is
/// faulted); the join and the Parquet reader then reuse freed buffers instead
/// of faulting fresh ones (about a third fewer page faults at shape S).
/// Harmless with any other allocator.
pub fn prefer_heap_reuse() {
    let block: Vec<u8> = Vec::with_capacity((32 << 20) - (64 << 10));
    drop(std::hint::black_box(block));
}

/// Whether `FSTORE_PROFILE=1` asks for the profile (printed to stderr).
pub fn profiling() -> bool {
    std::env::var("FSTORE_PROFILE").is_ok_and(|v| v == "1")
}

/// Decodes every column of `file` on its own, one after another on one
/// thread, and returns `(column, seconds)`: the decode cost per column (read
/// from the page cache, decompressed, decoded to Arrow).
///
/// # Errors
/// A read error.
pub fn decode_cost_per_column(file: &ParquetFile) -> Result<Vec<(String, Duration)>, BoxError> {
    let mut out = Vec::new();
    for (i, f) in file.schema().fields().iter().enumerate() {
        let mask = ProjectionMask::roots(file.meta.parquet_schema(), [i]);
        let started = Instant::now();
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
            File::open(&file.path)?,
            file.meta.clone(),
        )
        .with_projection(mask)
        .with_batch_size(128 * 1024)
        .build()?;
        for b in reader {
            b?;
        }
        out.push((f.name().clone(), started.elapsed()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Int64Array, StringArray};
    use arrow_select::{concat::concat_batches, take::take};

    /// A file of `n` rows in row groups of 97: `v` = row * 3 (every 7th null),
    /// `s` = "r{row}".
    fn file(n: usize, name: &str) -> (PathBuf, RecordBatch) {
        let v: Int64Array = (0..n as i64)
            .map(|r| (r % 7 != 0).then_some(r * 3))
            .collect();
        let s: StringArray = (0..n).map(|r| Some(format!("r{r}"))).collect();
        let batch = RecordBatch::try_from_iter([
            ("v", Arc::new(v) as ArrayRef),
            ("s", Arc::new(s) as ArrayRef),
        ])
        .unwrap();
        let path = std::env::temp_dir().join(format!("fstore-pio-{}-{name}", std::process::id()));
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(97))
            .build();
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), Some(props))
            .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        (path, batch)
    }

    /// Selected rows are read from many row groups on several threads and
    /// placed per spine row (with misses) exactly as `take` over the whole
    /// file would.
    #[test]
    fn selected_rows_placed_per_spine_row_equal_take_over_the_whole_file() {
        let (path, whole) = file(5_000, "place");
        let f = ParquetFile::open(&path).unwrap();
        assert!(f.rg_start.len() > 40, "many row groups");
        // spine rows choose rows with repeats, misses and out of order
        let rows: UInt32Array = (0..3_000u32)
            .map(|i| (i % 5 != 0).then_some((i * 7919) % 5_000))
            .collect();
        let mut sorted: Vec<u32> = rows.iter().flatten().collect();
        sorted.sort_unstable();
        sorted.dedup();
        let names = ["v".to_string(), "s".to_string()];
        let tasks = selected_rows(&f, &names, &sorted).unwrap();
        let values: Vec<RecordBatch> = read_tasks(&tasks).unwrap().into_iter().flatten().collect();
        assert!(values.len() > 1, "values in several batches");
        let features: Vec<Field> = whole
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let chosen = Chosen {
            rows: &rows,
            sorted: &sorted,
            values: &values,
            features: &features,
        };
        let placed = place_features(&[chosen]).unwrap();
        let all = concat_batches(&whole.schema(), [&whole]).unwrap();
        for (i, col) in placed.iter().enumerate() {
            let want = take(all.column(i).as_ref(), &rows, None).unwrap();
            assert_eq!(col.as_ref(), want.as_ref(), "column {i}");
            assert!(col.null_count() > 0);
        }
        let _ = std::fs::remove_file(path);
    }
}
