//! Builds a training set from Parquet files with fstore's point-in-time join.
//!
//! ```text
//! cargo run --release --example training_from_parquet -- \
//!     --spine spine.parquet --timestamp-column ts \
//!     --view name=V,path=P.parquet,keys=k1+k2,event=event_ts[,created=created_ts][,ttl=SECONDS] \
//!     [--view …] [--full-feature-names] [--created-cutoff] [--assume-utc] --out out.parquet
//! ```
//!
//! A view's features are every column of its file that is not one of its key,
//! event or created columns, in file order. Files are read in parallel (one task
//! per row group); the feature rows' write order (the last tie-break of the join)
//! is the file's row order.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use fstore_core::pit::{PitOptions, PitView, point_in_time_join};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: training_from_parquet --spine SPINE.parquet --timestamp-column COL \
--view name=V,path=P.parquet,keys=k1+k2,event=EVENT[,created=CREATED][,ttl=SECONDS] [--view ...] \
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
            "--out" => args.out = Some(PathBuf::from(value("--out")?)),
            "--full-feature-names" => {
                args.options = args.options.with_full_feature_names(true);
            }
            "--created-cutoff" => args.options = args.options.with_created_cutoff(true),
            "--assume-utc" => args.options = args.options.with_assume_utc(true),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    if args.spine.is_none() || args.ts.is_none() || args.out.is_none() {
        return Err("--spine, --timestamp-column and --out are required".to_string());
    }
    Ok(args)
}

/// Reads every file, one task per row group on all cores; returns each file's
/// batches in file order.
fn read_parquet(paths: &[&PathBuf]) -> Result<Vec<Vec<RecordBatch>>, BoxError> {
    let mut metas = Vec::with_capacity(paths.len());
    let mut tasks = Vec::new();
    for (fi, p) in paths.iter().enumerate() {
        let file = File::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()))?;
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(|e| format!("cannot read Parquet footer of {}: {e}", p.display()))?;
        let groups = meta.metadata().num_row_groups();
        tasks.extend((0..groups).map(|rg| (fi, rg)));
        metas.push(meta);
    }
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(tasks.len().max(1));
    let mut slots: Vec<Option<Vec<RecordBatch>>> = (0..tasks.len()).map(|_| None).collect();
    let results: Vec<Result<Vec<(usize, Vec<RecordBatch>)>, BoxError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<Vec<(usize, Vec<RecordBatch>)>, BoxError> {
                    let mut mine = Vec::new();
                    loop {
                        let t = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(fi, rg)) = tasks.get(t) else { break };
                        let meta = &metas[fi];
                        let rows = meta.metadata().row_group(rg).num_rows();
                        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
                            File::open(paths[fi])?,
                            meta.clone(),
                        )
                        .with_row_groups(vec![rg])
                        .with_batch_size(usize::try_from(rows).unwrap_or(8192).max(1))
                        .build()?;
                        let batches = reader
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| format!("reading {}: {e}", paths[fi].display()))?;
                        mine.push((t, batches));
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
        for (t, b) in r? {
            slots[t] = Some(b);
        }
    }
    let mut out: Vec<Vec<RecordBatch>> = (0..paths.len()).map(|_| Vec::new()).collect();
    for (slot, (fi, _)) in slots.into_iter().zip(&tasks) {
        out[*fi].extend(slot.unwrap_or_default());
    }
    // a file with no row groups still needs its schema
    for (fi, batches) in out.iter_mut().enumerate() {
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(metas[fi].schema().clone()));
        }
    }
    Ok(out)
}

fn run() -> Result<(), BoxError> {
    let args = parse_args(std::env::args().skip(1))?;
    let (Some(spine_path), Some(ts), Some(out_path)) = (&args.spine, &args.ts, &args.out) else {
        return Err(USAGE.into());
    };
    let total = Instant::now();

    let t0 = Instant::now();
    let mut paths = vec![spine_path];
    paths.extend(args.views.iter().map(|v| &v.path));
    let mut files = read_parquet(&paths)?.into_iter();
    let spine = files.next().unwrap_or_default();
    let view_batches: Vec<Vec<RecordBatch>> = files.collect();
    let read_time = t0.elapsed();

    let mut views = Vec::with_capacity(args.views.len());
    for (v, batches) in args.views.iter().zip(&view_batches) {
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| format!("view '{}': no data", v.name))?;
        let not_feature = |n: &str| {
            v.keys.iter().any(|k| k == n) || v.event == n || v.created.as_deref() == Some(n)
        };
        let features = schema
            .fields()
            .iter()
            .filter(|f| !not_feature(f.name()))
            .map(|f| f.as_ref().clone())
            .collect();
        views.push(PitView {
            name: v.name.clone(),
            join_keys: v.keys.clone(),
            event_timestamp_column: v.event.clone(),
            created_timestamp_column: v.created.clone(),
            ttl: v.ttl,
            features,
            batches,
        });
    }
    let spine_rows: usize = spine.iter().map(|b| b.num_rows()).sum();
    let feature_rows: Vec<usize> = view_batches
        .iter()
        .map(|bs| bs.iter().map(|b| b.num_rows()).sum())
        .collect();

    let t1 = Instant::now();
    let out = point_in_time_join(&spine, ts, &views, &args.options)?;
    let join_time = t1.elapsed();
    drop(views);
    drop(view_batches);

    let t2 = Instant::now();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let file =
        File::create(out_path).map_err(|e| format!("cannot create {}: {e}", out_path.display()))?;
    let mut writer = ArrowWriter::try_new(file, out.schema(), Some(props))?;
    writer.write(&out)?;
    writer.close()?;
    let write_time = t2.elapsed();

    println!("spine rows:    {spine_rows}");
    for (v, n) in args.views.iter().zip(&feature_rows) {
        println!("view {:<14} {n} feature rows", v.name);
    }
    println!(
        "output:        {} rows x {} columns -> {}",
        out.num_rows(),
        out.num_columns(),
        out_path.display()
    );
    println!("read time:     {:.3} s", read_time.as_secs_f64());
    println!("join time:     {:.3} s", join_time.as_secs_f64());
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
