//! Builds a training set from Parquet files with fstore's point-in-time join.
//!
//! ```text
//! cargo run --release --example training_from_parquet -- \
//!     --spine spine.parquet --timestamp-column ts \
//!     --view name=V,path=P.parquet,keys=k1+k2,event=event_ts[,created=created_ts][,ttl=SECONDS][,features=f1+f2] \
//!     [--view …] [--agg VIEW:COLUMN:FUNCTION:WINDOW[:HOP] …] \
//!     [--full-feature-names] [--created-cutoff] [--assume-utc] --out out.parquet
//! ```
//!
//! `--agg` adds window aggregations over a `--view` (see
//! [`fstore_examples::agg_args`]), e.g. `--agg txn:amount:sum:7d:1h`.
//!
//! A view's features are every column of its file that is not one of its key,
//! event or created columns, in file order; `features=f1+f2` selects some, in
//! that order. A view named by an `--agg` contributes only its aggregations
//! unless `features=` asks for plain columns too (it is then not point-in-time
//! joined at all). The feature rows' write order (the last tie-break of the
//! join) is the file's row order.
//!
//! Reading is late-materialising and parallel (one task per row group, on all
//! cores): phase 1 reads the spine and only the key and time columns of each view,
//! and runs [`point_in_time_join`] with the file row number as the only "feature";
//! phase 2 reads the feature columns of just the chosen rows (a Parquet row
//! selection) and places them. The request is first validated by the join itself
//! on empty batches with the real features, so names, types and errors are exactly
//! the join's, and so is the output schema.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{RecordBatch, RecordBatchOptions};
use arrow_schema::Field;
use fstore_core::pit::{
    PitOptions, PitView, point_in_time_join, point_in_time_rows, point_in_time_rows_profiled,
};
use fstore_examples::agg_args;
use fstore_examples::parquet_io::{
    self, BoxError, Chosen, ParquetFile, read_tasks, selected_rows, whole_file, write_parquet,
};

const USAGE: &str = "usage: training_from_parquet --spine SPINE.parquet --timestamp-column COL \
--view name=V,path=P.parquet,keys=k1+k2,event=EVENT[,created=CREATED][,ttl=SECONDS][,features=F1+F2] \
[--view ...] \
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
    /// `features=`: the plain features to join (default: all, or none for a
    /// view named by an `--agg`).
    features: Option<Vec<String>>,
}

impl ViewArg {
    /// The view as the aggregations read it.
    fn agg_source(&self) -> agg_args::AggSource<'_> {
        agg_args::AggSource {
            name: &self.name,
            path: &self.path,
            keys: &self.keys,
            event: &self.event,
            created: self.created.as_deref(),
        }
    }
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
    let mut features = None;
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
            "features" => {
                let f: Vec<String> = v.split('+').map(str::to_string).collect();
                if f.iter().any(String::is_empty) {
                    return Err(format!("--view: empty feature name in '{spec}'"));
                }
                features = Some(f);
            }
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
        features,
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
    if args.engine.engine == fstore_examples::engine_args::Engine::DataFusion
        && let Some(v) = args.views.iter().find(|v| v.features.is_some())
    {
        return Err(format!(
            "--view '{}': features= runs on the memory engine only (drop it or use --engine memory)",
            v.name
        ));
    }
    Ok(args)
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
        if !args.aggs.is_empty() {
            let sources: Vec<agg_args::AggSource<'_>> =
                args.views.iter().map(ViewArg::agg_source).collect();
            agg_args::run_datafusion(
                spine_path,
                ts,
                &views,
                &sources,
                &args.aggs,
                &args.options,
                out_path,
                &args.engine,
            )?;
            return Ok(());
        }
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
    // Views named by an --agg without features= are not joined: nobody asked
    // for their plain columns.
    let pit_views: Vec<&ViewArg> = args
        .views
        .iter()
        .filter(|v| agg_args::joins_plain_features(&v.name, v.features.is_some(), &args.aggs))
        .collect();

    // Phase 1: the spine, and only the key and time columns of the views.
    let t0 = Instant::now();
    let spine_file = ParquetFile::open(spine_path)?;
    let files = pit_views
        .iter()
        .map(|v| ParquetFile::open(&v.path))
        .collect::<Result<Vec<_>, _>>()?;
    let key_columns: Vec<Vec<String>> = pit_views
        .iter()
        .map(|v| {
            let mut c = v.keys.clone();
            c.push(v.event.clone());
            c.extend(v.created.clone());
            c
        })
        .collect();
    let features: Vec<Vec<Field>> = pit_views
        .iter()
        .zip(&files)
        .map(|(v, f)| {
            let not_feature = |n: &str| {
                v.keys.iter().any(|k| k == n) || v.event == n || v.created.as_deref() == Some(n)
            };
            agg_args::plain_features(
                &v.name,
                &v.path,
                v.features.as_deref(),
                f.schema(),
                &not_feature,
            )
        })
        .collect::<Result<_, String>>()?;
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
    let dry: Vec<PitView<'_>> = pit_views
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
    let key_batches: Vec<Vec<RecordBatch>> = per_file.collect();
    let read_keys_time = t0.elapsed();

    // The join proper, over keys and times: the chosen row of each view per spine row.
    let t1 = Instant::now();
    let views: Vec<PitView<'_>> = pit_views
        .iter()
        .zip(&key_batches)
        .map(|(v, b)| pit_view(v, Vec::new(), &b[..]))
        .collect();
    let profile = parquet_io::profiling();
    let (chosen_rows, join_profile) = if profile {
        let (j, p) = point_in_time_rows_profiled(&spine, ts, &views, &args.options)?;
        (j, Some(p))
    } else {
        (point_in_time_rows(&spine, ts, &views, &args.options)?, None)
    };
    drop(views);
    drop(key_batches);
    let spine = arrow_select::concat::concat_batches(spine_file.schema(), &spine)?;
    let join_time = t1.elapsed();

    // Phase 2: read only the chosen rows' feature columns, then place them.
    let t2 = Instant::now();
    let n_spine = spine.num_rows();
    let mut sorted_rows = Vec::with_capacity(files.len());
    let mut tasks = Vec::new();
    let mut task_view = Vec::new();
    for (i, (f, feats)) in files.iter().zip(&features).enumerate() {
        let chosen = &chosen_rows[i];
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
    let chosen: Vec<Chosen<'_>> = features
        .iter()
        .enumerate()
        .map(|(i, feats)| Chosen {
            rows: &chosen_rows[i],
            sorted: &sorted_rows[i],
            values: &selected[i],
            features: feats,
        })
        .collect();
    let mut columns = spine.columns().to_vec();
    columns.extend(parquet_io::place_features(&chosen)?);
    drop(chosen);
    drop(selected);
    let out = RecordBatch::try_new_with_options(
        out_schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(n_spine)),
    )?;
    let assemble_time = t3.elapsed();

    let t_agg = Instant::now();
    let sources: Vec<agg_args::AggSource<'_>> =
        args.views.iter().map(ViewArg::agg_source).collect();
    let agg_opts = agg_args::AggRunOptions {
        full_feature_names: args.options.full_feature_names,
        created_cutoff: args.options.created_cutoff,
        assume_utc: args.options.assume_utc,
    };
    let out = agg_args::append_aggregations(
        out,
        std::slice::from_ref(&spine),
        ts,
        &sources,
        &args.aggs,
        agg_opts,
    )?;
    let agg_time = t_agg.elapsed();

    let t4 = Instant::now();
    write_parquet(out_path, &out)?;
    let write_time = t4.elapsed();

    println!("spine rows:    {n_spine}");
    for ((v, f), rows) in pit_views.iter().zip(&files).zip(&sorted_rows) {
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
    if let Some(p) = join_profile {
        print_profile(&p, &spine_file, &pit_views, &files)?;
    }
    Ok(())
}

/// `FSTORE_PROFILE=1`: the join's phases, then each column's decode cost
/// (each column of each file decoded alone on one thread, after the run), to
/// stderr.
fn print_profile(
    join: &fstore_core::pit::JoinProfile,
    spine: &ParquetFile,
    views: &[&ViewArg],
    files: &[ParquetFile],
) -> Result<(), BoxError> {
    let s = |d: Duration| d.as_secs_f64();
    eprintln!(
        "profile: join (wall, all views): spine index {:.3} s, key densification {:.3} s, \
         slotting + running max {:.3} s",
        s(join.spine_index),
        s(join.key_lookup),
        s(join.slotting)
    );
    eprintln!("profile: decode cost per column (one thread, whole file, after the run):");
    let named =
        std::iter::once(("spine", spine)).chain(views.iter().map(|v| v.name.as_str()).zip(files));
    for (name, f) in named {
        let costs = parquet_io::decode_cost_per_column(f)?;
        let total: Duration = costs.iter().map(|(_, d)| *d).sum();
        eprintln!("  {name} ({} rows): {:.3} s", f.rows(), s(total));
        for (c, d) in costs {
            eprintln!("    {c:<16} {:.3} s", s(d));
        }
    }
    Ok(())
}

fn main() {
    parquet_io::prefer_heap_reuse();
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
