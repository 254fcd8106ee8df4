//! Builds a training set from Parquet files with fstore's point-in-time join.
//!
//! ```text
//! cargo run --release --example training_from_parquet -- \
//!     --spine spine.parquet --timestamp-column ts \
//!     --view name=V,path=P.parquet,keys=k1+k2,event=event_ts[,created=created_ts][,ttl=SECONDS] \
//!     [--view …] [--agg VIEW:COLUMN:FUNCTION:WINDOW[:HOP] …] \
//!     [--full-feature-names] [--created-cutoff] [--assume-utc] --out out.parquet
//! ```
//!
//! `--agg` adds window aggregations over a `--view` (see
//! [`fstore_examples::agg_args`]), e.g. `--agg txn:amount:sum:7d:1h`.
//!
//! A view's features are every column of its file that is not one of its key,
//! event or created columns, in file order. The feature rows' write order (the
//! last tie-break of the join) is the file's row order.
//!
//! Reading is late-materialising and parallel (one task per row group, on all
//! cores): phase 1 reads the spine and only the key and time columns of each view,
//! and runs [`point_in_time_join`] with the file row number as the only "feature";
//! phase 2 reads the feature columns of just the chosen rows (a Parquet row
//! selection) and places them. The request is first validated by the join itself
//! on empty batches with the real features, so names, types and errors are exactly
//! the join's, and so is the output schema.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_array::{
    ArrayRef, RecordBatch, RecordBatchOptions, UInt32Array, cast::AsArray, types::UInt32Type,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use arrow_select::{concat::concat_batches, take::take};
use fstore_core::pit::{PitOptions, PitView, point_in_time_join};
use fstore_examples::agg_args;
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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: training_from_parquet --spine SPINE.parquet --timestamp-column COL \
--view name=V,path=P.parquet,keys=k1+k2,event=EVENT[,created=CREATED][,ttl=SECONDS] [--view ...] \
[--agg VIEW:COLUMN:FUNCTION:WINDOW[:HOP] ...] \
[--full-feature-names] [--created-cutoff] [--assume-utc] --out OUT.parquet";

#[derive(Debug)]
struct ViewArg {
    name: String,
    path: PathBuf,
    keys: Vec<String>,
    event: String,
    created: Option<String>,
    ttl: Option<Duration>,
}

#[derive(Debug, Default)]
struct Args {
    spine: Option<PathBuf>,
    ts: Option<String>,
    views: Vec<ViewArg>,
    out: Option<PathBuf>,
    options: PitOptions,
    engine: fstore_examples::engine_args::EngineArgs,
    aggs: Vec<agg_args::AggArg>,
}

fn parse_view(spec: &str) -> Result<ViewArg, String> {
    let (mut name, mut path, mut keys, mut event, mut created, mut ttl) =
        (None, None, None, None, None, None);
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("--view: expected key=value, got '{part}' in '{spec}'"))?;
        if v.is_empty() {
            return Err(format!("--view: '{k}' has an empty value in '{spec}'"));
        }
        match k {
            "name" => name = Some(v.to_string()),
            "path" => path = Some(PathBuf::from(v)),
            "keys" => keys = Some(v.split('+').map(str::to_string).collect::<Vec<_>>()),
            "event" => event = Some(v.to_string()),
            "created" => created = Some(v.to_string()),
            "ttl" => {
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--view: ttl must be a number of seconds, got '{v}'"))?;
                ttl = Some(Duration::try_from_secs_f64(secs).map_err(|_| {
                    format!("--view: ttl must be a non-negative number of seconds, got '{v}'")
                })?);
            }
            other => return Err(format!("--view: unknown field '{other}' in '{spec}'")),
        }
    }
    fn need<T>(o: Option<T>, what: &str, spec: &str) -> Result<T, String> {
        o.ok_or_else(|| format!("--view: missing {what}= in '{spec}'"))
    }
    let keys: Vec<String> = need(keys, "keys", spec)?;
    if keys.iter().any(String::is_empty) {
        return Err(format!("--view: empty key name in '{spec}'"));
    }
    Ok(ViewArg {
        name: need(name, "name", spec)?,
        path: need(path, "path", spec)?,
        keys,
        event: need(event, "event", spec)?,
        created,
        ttl,
    })
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().ok_or_else(|| format!("{flag} needs a value"));
        match a.as_str() {
            "--spine" => args.spine = Some(PathBuf::from(value("--spine")?)),
            "--timestamp-column" => args.ts = Some(value("--timestamp-column")?),
            "--view" => args.views.push(parse_view(&value("--view")?)?),
            "--agg" => args.aggs.push(agg_args::parse_agg(&value("--agg")?)?),
            "--out" => args.out = Some(PathBuf::from(value("--out")?)),
            "--full-feature-names" => {
                args.options = args.options.with_full_feature_names(true);
            }
            "--created-cutoff" => args.options = args.options.with_created_cutoff(true),
            "--assume-utc" => args.options = args.options.with_assume_utc(true),
            f if fstore_examples::engine_args::EngineArgs::accepts(f) => {
                args.engine.set(f, &value(f)?)?;
            }
            "-h" | "--help" => {
                return Err(format!(
                    "{USAGE} {}",
                    fstore_examples::engine_args::ENGINE_USAGE
                ));
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    if args.spine.is_none() || args.ts.is_none() || args.out.is_none() {
        return Err("--spine, --timestamp-column and --out are required".to_string());
    }
    args.engine.check()?;
    if args.engine.engine == fstore_examples::engine_args::Engine::DataFusion && !args.aggs.is_empty()
    {
        return Err(
            "--agg runs on the memory engine only; the datafusion engine does not compute \
             window aggregations yet (drop --agg or use --engine memory)"
                .to_string(),
        );
    }
    Ok(args)
}

/// One opened Parquet file: its footer, read once, and its row-group row offsets.
struct ParquetFile {
    path: PathBuf,
    meta: ArrowReaderMetadata,
    /// Global row index of the first row of each row group, plus the total.
    rg_start: Vec<usize>,
}

impl ParquetFile {
    fn open(path: &Path) -> Result<Self, BoxError> {
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

    fn schema(&self) -> &SchemaRef {
        self.meta.schema()
    }

    fn rows(&self) -> usize {
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
struct ReadTask<'a> {
    file: &'a ParquetFile,
    row_group: usize,
    mask: ProjectionMask,
    selection: Option<RowSelection>,
}

/// A task's index and its batches.
type Indexed = (usize, Vec<RecordBatch>);

/// Runs the read tasks on all cores; returns each task's batches, in task order.
fn read_tasks(tasks: &[ReadTask<'_>]) -> Result<Vec<Vec<RecordBatch>>, BoxError> {
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
fn whole_file<'a>(
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
fn selected_rows<'a>(
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

/// Batches with a `UInt32` column `name` appended: the global row index in the file.
fn with_row_numbers(batches: Vec<RecordBatch>, name: &str) -> Result<Vec<RecordBatch>, BoxError> {
    let mut start = 0u32;
    batches
        .into_iter()
        .map(|b| {
            let n = u32::try_from(b.num_rows())?;
            let rows = UInt32Array::from_iter_values(start..start + n);
            start += n;
            let mut fields: Vec<Field> = b
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new(name, DataType::UInt32, false));
            let mut cols = b.columns().to_vec();
            cols.push(Arc::new(rows));
            Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
        })
        .collect()
}

/// Writes `batch` as one row group, encoding its columns in parallel on all cores.
/// Dictionary encoding only for string/binary columns (high-cardinality numbers
/// would build a dictionary only to fall back to plain).
fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), BoxError> {
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

fn run() -> Result<(), BoxError> {
    let args = parse_args(std::env::args().skip(1))?;
    let (Some(spine_path), Some(ts), Some(out_path)) = (&args.spine, &args.ts, &args.out) else {
        return Err(USAGE.into());
    };
    if args.engine.engine == fstore_examples::engine_args::Engine::DataFusion {
        let views: Vec<_> = args
            .views
            .iter()
            .map(|v| fstore_examples::engine_args::ViewSpec {
                name: v.name.clone(),
                path: v.path.clone(),
                keys: v.keys.clone(),
                event: v.event.clone(),
                created: v.created.clone(),
                ttl: v.ttl,
            })
            .collect();
        fstore_examples::engine_args::run_datafusion(
            spine_path,
            ts,
            &views,
            &args.options,
            out_path,
            &args.engine,
        )?;
        return Ok(());
    }
    let total = Instant::now();

    // Phase 1: the spine, and only the key and time columns of the views.
    let t0 = Instant::now();
    let spine_file = ParquetFile::open(spine_path)?;
    let files = args
        .views
        .iter()
        .map(|v| ParquetFile::open(&v.path))
        .collect::<Result<Vec<_>, _>>()?;
    let key_columns: Vec<Vec<String>> = args
        .views
        .iter()
        .map(|v| {
            let mut c = v.keys.clone();
            c.push(v.event.clone());
            c.extend(v.created.clone());
            c
        })
        .collect();
    let features: Vec<Vec<Field>> = args
        .views
        .iter()
        .zip(&files)
        .map(|(v, f)| {
            let not_feature = |n: &str| {
                v.keys.iter().any(|k| k == n) || v.event == n || v.created.as_deref() == Some(n)
            };
            f.schema()
                .fields()
                .iter()
                .filter(|f| !not_feature(f.name()))
                .map(|f| f.as_ref().clone())
                .collect()
        })
        .collect();
    // Validate the real request (names, types, time zones) on empty inputs: the
    // join's own checks, and the output schema it would produce.
    let empty_spine = [RecordBatch::new_empty(Arc::clone(spine_file.schema()))];
    let empty_views: Vec<[RecordBatch; 1]> = files
        .iter()
        .map(|f| [RecordBatch::new_empty(Arc::clone(f.schema()))])
        .collect();
    let pit_view = |v: &ViewArg, features: Vec<Field>, batches| PitView {
        name: v.name.clone(),
        join_keys: v.keys.clone(),
        event_timestamp_column: v.event.clone(),
        created_timestamp_column: v.created.clone(),
        ttl: v.ttl,
        features,
        batches,
    };
    let dry: Vec<PitView<'_>> = args
        .views
        .iter()
        .zip(&features)
        .zip(&empty_views)
        .map(|((v, f), b)| pit_view(v, f.clone(), &b[..]))
        .collect();
    let out_schema = point_in_time_join(&empty_spine, ts, &dry, &args.options)?.schema();

    let mut tasks = whole_file(&spine_file, None)?;
    let mut task_file = vec![0usize; tasks.len()];
    for (i, (f, cols)) in files.iter().zip(&key_columns).enumerate() {
        let t = whole_file(f, Some(cols))?;
        task_file.extend(std::iter::repeat_n(i + 1, t.len()));
        tasks.extend(t);
    }
    let mut per_file: Vec<Vec<RecordBatch>> = (0..=files.len()).map(|_| Vec::new()).collect();
    for (batches, fi) in read_tasks(&tasks)?.into_iter().zip(task_file) {
        per_file[fi].extend(batches);
    }
    drop(tasks);
    let mut per_file = per_file.into_iter();
    let mut spine = per_file.next().unwrap_or_default();
    if spine.is_empty() {
        spine.push(RecordBatch::new_empty(Arc::clone(spine_file.schema())));
    }
    let row_col = |i: usize| format!("\u{1}fstore_row_{i}");
    let key_batches = per_file
        .enumerate()
        .map(|(i, b)| with_row_numbers(b, &row_col(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let read_keys_time = t0.elapsed();

    // The join proper, over keys and times; its only "feature" is the row number.
    let t1 = Instant::now();
    let views: Vec<PitView<'_>> = args
        .views
        .iter()
        .zip(&key_batches)
        .enumerate()
        .map(|(i, (v, b))| {
            pit_view(
                v,
                vec![Field::new(row_col(i), DataType::UInt32, false)],
                &b[..],
            )
        })
        .collect();
    let joined = point_in_time_join(&spine, ts, &views, &args.options)?;
    drop(views);
    drop(key_batches);
    let join_time = t1.elapsed();

    // Phase 2: read only the chosen rows' feature columns, then place them.
    let t2 = Instant::now();
    let n_spine = joined.num_rows();
    let n_spine_cols = spine[0].num_columns();
    let mut sorted_rows = Vec::with_capacity(files.len());
    let mut tasks = Vec::new();
    let mut task_view = Vec::new();
    for (i, (f, feats)) in files.iter().zip(&features).enumerate() {
        let chosen = joined.column(n_spine_cols + i).as_primitive::<UInt32Type>();
        let mut seen = vec![false; f.rows()];
        for r in chosen.iter().flatten() {
            if let Some(s) = seen.get_mut(r as usize) {
                *s = true;
            }
        }
        let rows: Vec<u32> = (0..f.rows() as u32).filter(|&r| seen[r as usize]).collect();
        if !feats.is_empty() {
            let names: Vec<String> = feats.iter().map(|f| f.name().clone()).collect();
            let t = selected_rows(f, &names, &rows)?;
            task_view.extend(std::iter::repeat_n(i, t.len()));
            tasks.extend(t);
        }
        sorted_rows.push(rows);
    }
    let mut selected: Vec<Vec<RecordBatch>> = (0..files.len()).map(|_| Vec::new()).collect();
    for (batches, vi) in read_tasks(&tasks)?.into_iter().zip(task_view) {
        selected[vi].extend(batches);
    }
    drop(tasks);
    let read_features_time = t2.elapsed();

    let t3 = Instant::now();
    let mut columns: Vec<ArrayRef> = joined.columns()[..n_spine_cols].to_vec();
    for (i, feats) in features.iter().enumerate() {
        let chosen = joined.column(n_spine_cols + i).as_primitive::<UInt32Type>();
        let rows = &sorted_rows[i];
        let idx: UInt32Array = chosen
            .iter()
            .map(|r| r.map(|r| rows.partition_point(|&x| x < r) as u32))
            .collect();
        let schema = Arc::new(Schema::new(feats.clone()));
        let compact = concat_batches(&schema, &selected[i])?;
        for c in compact.columns() {
            columns.push(take(c.as_ref(), &idx, None)?);
        }
    }
    drop(selected);
    let out = RecordBatch::try_new_with_options(
        out_schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(n_spine)),
    )?;
    let assemble_time = t3.elapsed();

    let t_agg = Instant::now();
    let sources: Vec<agg_args::AggSource<'_>> = args
        .views
        .iter()
        .map(|v| agg_args::AggSource {
            name: &v.name,
            path: &v.path,
            keys: &v.keys,
            event: &v.event,
            created: v.created.as_deref(),
        })
        .collect();
    let agg_opts = agg_args::AggRunOptions {
        full_feature_names: args.options.full_feature_names,
        created_cutoff: args.options.created_cutoff,
        assume_utc: args.options.assume_utc,
    };
    let out = agg_args::append_aggregations(out, &spine, ts, &sources, &args.aggs, agg_opts)?;
    let agg_time = t_agg.elapsed();

    let t4 = Instant::now();
    write_parquet(out_path, &out)?;
    let write_time = t4.elapsed();

    println!("spine rows:    {n_spine}");
    for ((v, f), rows) in args.views.iter().zip(&files).zip(&sorted_rows) {
        println!(
            "view {:<14} {} feature rows, {} distinct rows chosen",
            v.name,
            f.rows(),
            rows.len()
        );
    }
    println!(
        "output:        {} rows x {} columns -> {}",
        out.num_rows(),
        out.num_columns(),
        out_path.display()
    );
    println!(
        "read time:     {:.3} s (spine + keys/times {:.3} s, chosen feature rows {:.3} s)",
        (read_keys_time + read_features_time).as_secs_f64(),
        read_keys_time.as_secs_f64(),
        read_features_time.as_secs_f64()
    );
    println!(
        "join time:     {:.3} s (+ {:.3} s placing feature values)",
        join_time.as_secs_f64(),
        assemble_time.as_secs_f64()
    );
    if !args.aggs.is_empty() {
        println!("agg time:      {:.3} s", agg_time.as_secs_f64());
    }
    println!("write time:    {:.3} s", write_time.as_secs_f64());
    println!("total time:    {:.3} s", total.elapsed().as_secs_f64());
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
