//! `--agg VIEW:COLUMN:FUNCTION:WINDOW[:HOP]` for `training_from_parquet`:
//! window aggregations ([semantics §11](fstore_core::docs::semantics)) over a
//! view given with `--view`, computed per spine row by core's
//! [`fstore_core::agg::aggregate`] — the tile code the online path uses.
//!
//! * `FUNCTION`: `count`, `sum`, `mean`, `min`, `max`, `var_pop`,
//!   `stddev_pop`, `first`, `last`, `last_n_N`, `approx_count_distinct`.
//! * `WINDOW` and `HOP`: a whole number and a unit `s`, `m`, `h` or `d`
//!   (`7d`, `90m`); `WINDOW` may be `lifetime`. Without `HOP`, the default hop
//!   of semantics §11 (1 day for W ≥ 12 d, 1 hour for W ≥ 12 h, else 5 minutes).
//! * Output column `COLUMN_FUNCTION_WINDOW` (e.g. `amount_sum_7d`), or
//!   `VIEW__COLUMN_FUNCTION_WINDOW` with `--full-feature-names`, after the
//!   point-in-time columns, in `--agg` order.
//! * A view named by an `--agg` contributes only its aggregations: its plain
//!   columns are not point-in-time joined unless its `--view` lists some with
//!   `features=f1+f2` ([`joins_plain_features`], [`plain_features`]).
//! * With `--engine datafusion`, [`run_datafusion`] computes them with the
//!   engine's aggregation plan (same columns, same values).
//!
//! ```
//! use fstore_examples::agg_args::parse_agg;
//! let a = parse_agg("txn:amount:sum:7d:1h").unwrap();
//! assert_eq!((a.view.as_str(), a.aggregation.name.as_str()), ("txn", "amount_sum_7d"));
//! assert_eq!(a.output_name(true), "txn__amount_sum_7d");
//! assert!(parse_agg("txn:amount:sum:7w").unwrap_err().contains("7w"));
//! ```

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use fstore_core::agg::{AggOptions, AggView, aggregate};
use fstore_core::{AggFunction, Aggregation, JoinKey, ValueType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One parsed `--agg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggArg {
    /// The `--view` it reads.
    pub view: String,
    /// The aggregation (default name `COLUMN_FUNCTION_WINDOW`).
    pub aggregation: Aggregation,
    /// The text given, for errors.
    pub spec: String,
}

impl AggArg {
    /// The output column name.
    pub fn output_name(&self, full_feature_names: bool) -> String {
        if full_feature_names {
            format!("{}__{}", self.view, self.aggregation.name)
        } else {
            self.aggregation.name.clone()
        }
    }
}

/// Parses a window or hop: a whole number > 0 and a unit `s`, `m`, `h` or `d`.
fn parse_span(spec: &str, what: &str, s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "--agg '{spec}': {what} '{s}' must be a whole number > 0 and a unit s, m, h or d (e.g. 7d, 90m)"
        )
    };
    let unit = s.chars().last().ok_or_else(bad)?;
    let num = &s[..s.len() - unit.len_utf8()];
    if !matches!(unit, 's' | 'm' | 'h' | 'd') || num.is_empty() {
        return Err(bad());
    }
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let d = fstore_core::parse_duration(s).map_err(|_| bad())?;
    if d.is_zero() {
        return Err(bad());
    }
    Ok(d)
}

/// Parses `VIEW:COLUMN:FUNCTION:WINDOW[:HOP]`.
///
/// # Errors
/// A message naming the argument and the offending part: wrong number of
/// parts, empty view or column, unknown function, `last_n` with n = 0 or above
/// [`fstore_core::LAST_N_CAP`], a window or hop that is not a whole number of
/// s/m/h/d, a hop that does not divide the window.
pub fn parse_agg(spec: &str) -> Result<AggArg, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    if !(4..=5).contains(&parts.len()) {
        return Err(format!(
            "--agg '{spec}': expected VIEW:COLUMN:FUNCTION:WINDOW[:HOP], got {} part(s)",
            parts.len()
        ));
    }
    let (view, column, function) = (parts[0], parts[1], parts[2]);
    if view.is_empty() {
        return Err(format!("--agg '{spec}': empty view name"));
    }
    if column.is_empty() {
        return Err(format!("--agg '{spec}': empty column name"));
    }
    let function: AggFunction = function
        .parse()
        .map_err(|e| format!("--agg '{spec}': {e}"))?;
    let window = match parts[3] {
        "lifetime" => None,
        w => Some(parse_span(spec, "window", w)?),
    };
    let mut aggregation = Aggregation::new(column, function, window);
    if let Some(h) = parts.get(4) {
        aggregation = aggregation.with_hop(parse_span(spec, "hop", h)?);
    }
    // Everything that does not need the column's type (n of last_n, hop
    // dividing the window); the type is checked against the file later.
    if let AggFunction::LastN(n) = function
        && (n == 0 || n > fstore_core::LAST_N_CAP)
    {
        return Err(format!(
            "--agg '{spec}': last_n needs 1 <= n <= {}, got {n}",
            fstore_core::LAST_N_CAP
        ));
    }
    if let (Some(w), Some(h)) = (window, aggregation.hop)
        && w.as_micros() % h.as_micros() != 0
    {
        return Err(format!(
            "--agg '{spec}': hop {} does not divide window {}",
            parts[4], parts[3]
        ));
    }
    Ok(AggArg {
        view: view.to_owned(),
        aggregation,
        spec: spec.to_owned(),
    })
}

/// A `--view` as the aggregations need it.
#[derive(Debug, Clone, Copy)]
pub struct AggSource<'a> {
    /// View name.
    pub name: &'a str,
    /// Its Parquet file.
    pub path: &'a Path,
    /// Join key columns.
    pub keys: &'a [String],
    /// Event-time column.
    pub event: &'a str,
    /// Created-time column, if any.
    pub created: Option<&'a str>,
}

/// Options shared with the point-in-time join.
#[derive(Debug, Clone, Copy, Default)]
pub struct AggRunOptions {
    /// `VIEW__` prefixes.
    pub full_feature_names: bool,
    /// semantics §5's created-time cutoff.
    pub created_cutoff: bool,
    /// Naive timestamps are UTC.
    pub assume_utc: bool,
}

/// Reads the columns `names` of a Parquet file (all row groups).
/// The columns `names` of a Parquet file, row groups read in parallel, in
/// file order.
fn read_columns(path: &Path, names: &[String]) -> Result<Vec<RecordBatch>, BoxError> {
    let file = crate::parquet_io::ParquetFile::open(path)?;
    let tasks = crate::parquet_io::whole_file(&file, Some(names))?;
    let batches = crate::parquet_io::read_tasks(&tasks)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(batches.into_iter().flatten().collect())
}

/// Computes every `--agg` over `spine` and returns `out` with one column
/// appended per aggregation, in `aggs` order.
///
/// # Errors
/// Naming the `--agg`: an unknown view, a column missing from the view's file,
/// a column that is one of the view's key or time columns, a column of the
/// wrong type for the function, an output name that is already taken; and
/// core's errors (naive or null times, int64 sum overflow naming the spine
/// row).
pub fn append_aggregations(
    out: RecordBatch,
    spine: &[RecordBatch],
    timestamp_column: &str,
    sources: &[AggSource<'_>],
    aggs: &[AggArg],
    opts: AggRunOptions,
) -> Result<RecordBatch, BoxError> {
    if aggs.is_empty() {
        return Ok(out);
    }
    let mut fields: Vec<Field> = out
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns: Vec<ArrayRef> = out.columns().to_vec();
    check_names(
        fields.iter().map(|f| f.name().as_str()),
        sources,
        aggs,
        opts,
    )?;
    let mut results: Vec<Option<ArrayRef>> = vec![None; aggs.len()];
    for src in sources {
        let Some(r) = resolve(src, aggs)? else {
            continue;
        };
        let batches = read_columns(src.path, &r.columns)?;
        let view = AggView {
            name: src.name.to_owned(),
            join_keys: r.join_keys,
            event_timestamp_column: src.event.to_owned(),
            created_timestamp_column: src.created.map(str::to_owned),
            aggregations: r.typed,
            batches: &batches,
        };
        let agg_opts = AggOptions::default()
            .with_created_cutoff(opts.created_cutoff)
            .with_assume_utc(opts.assume_utc);
        let arrays = aggregate(spine, timestamp_column, &view, &agg_opts)
            .map_err(|e| format!("--agg over view '{}': {e}", src.name))?;
        for (&i, arr) in r.mine.iter().zip(arrays) {
            results[i] = Some(arr);
        }
    }
    for (a, arr) in aggs.iter().zip(results) {
        let arr = arr.ok_or_else(|| format!("--agg '{}': not computed", a.spec))?;
        fields.push(Field::new(
            a.output_name(opts.full_feature_names),
            arr.data_type().clone(),
            true,
        ));
        columns.push(arr);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Every `--agg` names a `--view` and an output column not taken by `existing`
/// or another `--agg`.
fn check_names<'a>(
    existing: impl Iterator<Item = &'a str>,
    sources: &[AggSource<'_>],
    aggs: &[AggArg],
    opts: AggRunOptions,
) -> Result<(), BoxError> {
    let mut taken: std::collections::HashSet<String> = existing.map(str::to_owned).collect();
    for a in aggs {
        if !taken.insert(a.output_name(opts.full_feature_names)) {
            return Err(format!(
                "--agg '{}': output column '{}' is already taken (use --full-feature-names or another window)",
                a.spec,
                a.output_name(opts.full_feature_names)
            )
            .into());
        }
        if !sources.iter().any(|s| s.name == a.view) {
            return Err(format!("--agg '{}': no --view named '{}'", a.spec, a.view).into());
        }
    }
    Ok(())
}

/// The `--agg`s of one view, checked against its file's schema.
struct Resolved {
    /// Indices into the `--agg` list.
    mine: Vec<usize>,
    /// The view's keys, typed from the file.
    join_keys: Vec<JoinKey>,
    /// Each aggregation with its input column's type.
    typed: Vec<(Aggregation, ValueType)>,
    /// The columns to read: keys, times, inputs.
    columns: Vec<String>,
}

/// Resolves the `--agg`s over `src` (`None` when there are none).
fn resolve(src: &AggSource<'_>, aggs: &[AggArg]) -> Result<Option<Resolved>, BoxError> {
    let mine: Vec<usize> = (0..aggs.len())
        .filter(|&i| aggs[i].view == src.name)
        .collect();
    if mine.is_empty() {
        return Ok(None);
    }
    let mut names: Vec<String> = src.keys.to_vec();
    names.push(src.event.to_owned());
    names.extend(src.created.map(str::to_owned));
    let file_schema = {
        let f =
            File::open(src.path).map_err(|e| format!("cannot open {}: {e}", src.path.display()))?;
        Arc::clone(ParquetRecordBatchReaderBuilder::try_new(f)?.schema())
    };
    let mut typed = Vec::with_capacity(mine.len());
    for &i in &mine {
        let a = &aggs[i];
        let col = &a.aggregation.column;
        if names[..src.keys.len() + 1 + usize::from(src.created.is_some())].contains(col) {
            return Err(format!(
                "--agg '{}': column '{col}' is a key or time column of view '{}'",
                a.spec, src.name
            )
            .into());
        }
        let field = file_schema.field_with_name(col).map_err(|_| {
            format!(
                "--agg '{}': view '{}' ({}) has no column '{col}'",
                a.spec,
                src.name,
                src.path.display()
            )
        })?;
        let input = ValueType::from_arrow(field.data_type()).ok_or_else(|| {
            format!(
                "--agg '{}': column '{col}' has unsupported type {}",
                a.spec,
                field.data_type()
            )
        })?;
        a.aggregation
            .validate(src.name, Some(&input))
            .map_err(|e| format!("--agg '{}': {e}", a.spec))?;
        if !names.contains(col) {
            names.push(col.clone());
        }
        typed.push((a.aggregation.clone(), input));
    }
    let join_keys = src
        .keys
        .iter()
        .map(|k| {
            let f = file_schema.field_with_name(k).map_err(|_| {
                format!(
                    "view '{}' ({}): no key column '{k}'",
                    src.name,
                    src.path.display()
                )
            })?;
            let t = ValueType::from_arrow(f.data_type()).ok_or_else(|| {
                format!(
                    "view '{}': key column '{k}' has unsupported type {}",
                    src.name,
                    f.data_type()
                )
            })?;
            Ok(JoinKey::new(k.clone(), t))
        })
        .collect::<Result<Vec<_>, BoxError>>()?;
    Ok(Some(Resolved {
        mine,
        join_keys,
        typed,
        columns: names,
    }))
}

/// `training_from_parquet --engine datafusion` with `--agg`: the views that no
/// `--agg` names are point-in-time joined by the engine's join
/// ([`fstore_core::engine::pit_join_plan`]; features: every column that is not a
/// key or time column), then every `--agg` is computed by the engine's
/// aggregation plan ([`fstore_core::engine::agg::aggregation_plan`]: hash
/// partitions by the view's keys, the in-memory aggregation per partition) and
/// the result streamed to `out` (temporary name, renamed at the end), in spine
/// order, with the memory engine's columns. Prints the rows written and the
/// time; returns the rows.
///
/// With `--ballista URL` the whole plan (join and aggregations) runs on that
/// Ballista cluster ([`crate::ballista_args::run_on_cluster`]).
///
/// # Errors
/// Those of [`append_aggregations`] (names, types); the engine's; the
/// cluster's (`--ballista`).
#[cfg(feature = "datafusion")]
#[allow(clippy::too_many_arguments)]
pub fn run_datafusion(
    spine: &Path,
    ts: &str,
    views: &[crate::engine_args::ViewSpec],
    sources: &[AggSource<'_>],
    aggs: &[AggArg],
    options: &fstore_core::pit::PitOptions,
    out: &Path,
    args: &crate::engine_args::EngineArgs,
) -> Result<u64, BoxError> {
    use fstore_core::engine;
    use fstore_core::engine::agg::{AggEngineView, AggFeature, aggregation_plan};
    let start = std::time::Instant::now();
    let config = args.config()?;
    let n = config.partitions;
    // The point-in-time join of the views no --agg names (as without --agg).
    let eviews = views
        .iter()
        .filter(|v| joins_plain_features(&v.name, false, aggs))
        .map(|v| crate::engine_args::engine_view(v, n))
        .collect::<Result<Vec<_>, _>>()?;
    let spine_plan = engine::parquet_plan(&[spine.to_path_buf()], n)?;
    let joined = if eviews.is_empty() {
        spine_plan
    } else {
        engine::pit_join_plan_with(spine_plan, ts, &eviews, options, &config)?
    };
    let opts = AggRunOptions {
        full_feature_names: options.full_feature_names,
        created_cutoff: options.created_cutoff,
        assume_utc: options.assume_utc,
    };
    let joined_schema = joined.schema();
    check_names(
        joined_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| !n.starts_with(engine::RESERVED_PREFIX)),
        sources,
        aggs,
        opts,
    )?;
    let mut agg_views = Vec::new();
    for src in sources {
        let Some(r) = resolve(src, aggs)? else {
            continue;
        };
        agg_views.push(AggEngineView {
            name: src.name.to_owned(),
            join_keys: r.join_keys,
            event_timestamp_column: src.event.to_owned(),
            created_timestamp_column: src.created.map(str::to_owned),
            features: r
                .mine
                .iter()
                .zip(r.typed)
                .map(|(&i, (aggregation, input_type))| AggFeature {
                    aggregation,
                    input_type,
                    output: aggs[i].output_name(opts.full_feature_names),
                })
                .collect(),
            input: engine::parquet_plan(std::slice::from_ref(&src.path.to_path_buf()), n)?,
        });
    }
    let agg_opts = AggOptions::default()
        .with_created_cutoff(opts.created_cutoff)
        .with_assume_utc(opts.assume_utc);
    let plan = aggregation_plan(joined, ts, &agg_views, &agg_opts, n)?;
    // Columns in --agg order (the views' features come grouped by view).
    let ps = plan.schema();
    let mut order: Vec<usize> = (0..ps.fields().len() - aggs.len()).collect();
    for a in aggs {
        order.push(ps.index_of(&a.output_name(opts.full_feature_names))?);
    }
    let proj = order
        .iter()
        .map(
            |&i| fstore_core::datafusion::physical_plan::projection::ProjectionExpr {
                expr: Arc::new(
                    fstore_core::datafusion::physical_expr::expressions::Column::new(
                        ps.field(i).name(),
                        i,
                    ),
                ),
                alias: ps.field(i).name().clone(),
            },
        )
        .collect::<Vec<_>>();
    let plan: Arc<dyn fstore_core::datafusion::physical_plan::ExecutionPlan> = Arc::new(
        fstore_core::datafusion::physical_plan::projection::ProjectionExec::try_new(proj, plan)?,
    );
    let rows = crate::engine_args::execute_to(plan, &config, args, out, false)?;
    println!(
        "engine:        datafusion, {n} partitions, memory limit {:?}, {} aggregations",
        args.memory_limit,
        aggs.len()
    );
    println!("output:        {rows} rows -> {}", out.display());
    println!("total time:    {:.3} s", start.elapsed().as_secs_f64());
    Ok(rows)
}

/// Without the `datafusion` feature: an error saying how to build it.
///
/// # Errors
/// Always.
#[cfg(not(feature = "datafusion"))]
#[allow(clippy::too_many_arguments)]
pub fn run_datafusion(
    _spine: &Path,
    _ts: &str,
    _views: &[crate::engine_args::ViewSpec],
    _sources: &[AggSource<'_>],
    _aggs: &[AggArg],
    _options: &fstore_core::pit::PitOptions,
    _out: &Path,
    _args: &crate::engine_args::EngineArgs,
) -> Result<u64, BoxError> {
    Err(
        "--engine datafusion: this binary was built without the `datafusion` feature \
         (cargo run -p fstore-examples --features datafusion --example training_from_parquet)"
            .into(),
    )
}

/// Whether a `--view` is point-in-time joined: always with `features=`
/// (`has_selection`), otherwise only when no `--agg` names it (nobody asked
/// for the plain columns of a view that serves aggregations).
pub fn joins_plain_features(view: &str, has_selection: bool, aggs: &[AggArg]) -> bool {
    has_selection || !aggs.iter().any(|a| a.view == view)
}

/// The plain features a joined `--view` contributes: without `selected`,
/// every column of the file (`schema`) that is not a key or time column
/// (`not_feature`), in file order; with `selected` (`features=`), those
/// columns in that order.
///
/// # Errors
/// A selected name that is a key or time column, or not a column of the file,
/// naming the view and the column.
pub fn plain_features(
    view: &str,
    path: &Path,
    selected: Option<&[String]>,
    schema: &Schema,
    not_feature: &dyn Fn(&str) -> bool,
) -> Result<Vec<Field>, String> {
    let Some(names) = selected else {
        return Ok(schema
            .fields()
            .iter()
            .filter(|f| !not_feature(f.name()))
            .map(|f| f.as_ref().clone())
            .collect());
    };
    names
        .iter()
        .map(|n| {
            if not_feature(n) {
                return Err(format!(
                    "--view '{view}': features= names '{n}', a key or time column"
                ));
            }
            schema.field_with_name(n).cloned().map_err(|_| {
                format!(
                    "--view '{view}': features= names '{n}', not a column of {}",
                    path.display()
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow_schema::{DataType, TimeUnit};
    use parquet::arrow::ArrowWriter;

    const H: i64 = 3_600_000_000;
    const D: i64 = 24 * H;

    #[test]
    fn parses_the_documented_forms() {
        let a = parse_agg("txn:amount:sum:7d:1h").unwrap();
        assert_eq!(a.view, "txn");
        assert_eq!(a.aggregation.column, "amount");
        assert_eq!(a.aggregation.function, AggFunction::Sum);
        assert_eq!(a.aggregation.window, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(a.aggregation.hop, Some(Duration::from_secs(3_600)));
        assert_eq!(a.output_name(true), "txn__amount_sum_7d");
        assert_eq!(a.output_name(false), "amount_sum_7d");
        let a = parse_agg("txn:amount:last_n_3:1d").unwrap();
        assert_eq!(a.aggregation.function, AggFunction::LastN(3));
        assert_eq!(a.aggregation.hop, None);
        assert_eq!(a.output_name(true), "txn__amount_last_n_3_1d");
        let a = parse_agg("txn:merchant:approx_count_distinct:30d").unwrap();
        assert_eq!(
            a.output_name(true),
            "txn__merchant_approx_count_distinct_30d"
        );
        let a = parse_agg("txn:amount:count:lifetime").unwrap();
        assert_eq!(a.aggregation.window, None);
        assert_eq!(a.output_name(true), "txn__amount_count_lifetime");
        for (s, secs) in [("30s", 30), ("90m", 5_400), ("2h", 7_200), ("1d", 86_400)] {
            let a = parse_agg(&format!("v:c:count:{s}")).unwrap();
            assert_eq!(a.aggregation.window, Some(Duration::from_secs(secs)), "{s}");
        }
    }

    #[test]
    fn bad_arguments_are_named_errors() {
        for (spec, needle) in [
            ("txn:amount:sum", "got 3 part(s)"),
            ("txn:amount:sum:7d:1h:x", "got 6 part(s)"),
            (":amount:sum:7d", "empty view"),
            ("txn::sum:7d", "empty column"),
            (
                "txn:amount:median:7d",
                "unknown aggregation function 'median'",
            ),
            ("txn:amount:last_n_0:1d", "last_n needs 1 <= n"),
            ("txn:amount:last_n_1000:1d", "last_n needs 1 <= n"),
            ("txn:amount:last_n_x:1d", "n is not a number"),
            ("txn:amount:sum:7w", "window '7w'"),
            ("txn:amount:sum:0d", "window '0d'"),
            ("txn:amount:sum:-1d", "window '-1d'"),
            ("txn:amount:sum:1.5h", "window '1.5h'"),
            ("txn:amount:sum:250ms", "window '250ms'"),
            ("txn:amount:sum:7d:", "hop ''"),
            ("txn:amount:sum:7d:5x", "hop '5x'"),
            ("txn:amount:sum:1d:7h", "hop 7h does not divide window 1d"),
        ] {
            let e = parse_agg(spec).expect_err(spec);
            assert!(e.contains(spec), "{spec}: {e}");
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }

    fn ts_type() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    }

    /// (user, event µs, amount, merchant)
    type Ev = (i64, i64, Option<i64>, &'static str);

    fn write_view(path: &Path, evs: &[Ev]) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("event_ts", ts_type(), false),
            Field::new("amount", DataType::Int64, true),
            Field::new("merchant", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(evs.iter().map(|e| e.0))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(evs.iter().map(|e| e.1))
                        .with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from_iter(evs.iter().map(|e| e.2))),
                Arc::new(StringArray::from_iter_values(evs.iter().map(|e| e.3))),
            ],
        )
        .unwrap();
        let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    fn spine(rows: &[(i64, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("ts", ts_type(), false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fstore-agg-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// Parquet view in, columns out, against a direct computation of the
    /// sawtooth window `floor_r(t − W) <= event_ts <= t`.
    #[test]
    fn end_to_end_matches_a_direct_computation() {
        let path = temp("txn.parquet");
        let mut evs: Vec<Ev> = Vec::new();
        let merchants = ["a", "b", "c", "d"];
        for i in 0..400i64 {
            // two users, events every ~37 minutes over ~10 days, some null amounts,
            // some exactly on hour boundaries
            let t = 1_700_000_000_000_000 / H * H + i * 37 * 60_000_000 + (i % 3);
            let amount = if i % 7 == 0 { None } else { Some(i % 50 - 10) };
            evs.push((i % 2, t, amount, merchants[(i % 4) as usize]));
        }
        write_view(&path, &evs);
        let t0 = evs[0].1;
        let spine_rows: Vec<(i64, i64)> = (0..60)
            .map(|j| (j % 3, t0 + j * 4 * H + (j % 5) * 60_000_000))
            .chain([(0, evs[101].1), (1, evs[100].1)]) // exactly on an event
            .collect();
        let spine = vec![spine(&spine_rows)];
        let aggs: Vec<AggArg> = [
            "txn:amount:sum:7d:1h",
            "txn:amount:last_n_3:1d",
            "txn:merchant:approx_count_distinct:30d",
            "txn:amount:count:lifetime",
        ]
        .iter()
        .map(|s| parse_agg(s).unwrap())
        .collect();
        let keys = vec!["user_id".to_string()];
        let sources = [AggSource {
            name: "txn",
            path: &path,
            keys: &keys,
            event: "event_ts",
            created: None,
        }];
        let out = append_aggregations(
            spine[0].clone(),
            &spine,
            "ts",
            &sources,
            &aggs,
            AggRunOptions {
                full_feature_names: true,
                ..Default::default()
            },
        )
        .unwrap();
        let schema = out.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "user_id",
                "ts",
                "txn__amount_sum_7d",
                "txn__amount_last_n_3_1d",
                "txn__merchant_approx_count_distinct_30d",
                "txn__amount_count_lifetime"
            ]
        );
        let floor = |t: i64, r: i64| t.div_euclid(r) * r;
        let sum = out.column(2).as_primitive::<Int64Type>();
        let last3 = out.column(3).as_list::<i32>();
        let distinct = out.column(4).as_primitive::<Int64Type>();
        let count = out.column(5).as_primitive::<Int64Type>();
        for (i, &(u, t)) in spine_rows.iter().enumerate() {
            let mine = |lo: i64| {
                evs.iter()
                    .filter(move |e| e.0 == u && e.1 >= lo && e.1 <= t)
                    .collect::<Vec<_>>()
            };
            let w7 = mine(floor(t - 7 * D, H));
            let vals: Vec<i64> = w7.iter().filter_map(|e| e.2).collect();
            let want = (!vals.is_empty()).then(|| vals.iter().sum::<i64>());
            assert_eq!(sum.is_valid(i).then(|| sum.value(i)), want, "sum row {i}");
            // last_n over 1d, default hop 1h; events are in time order per user
            let w1: Vec<i64> = mine(floor(t - D, H)).iter().filter_map(|e| e.2).collect();
            let want: Vec<i64> = w1.iter().rev().take(3).copied().collect();
            if want.is_empty() {
                assert!(last3.is_null(i), "last_n row {i}");
            } else {
                let got = last3.value(i);
                let got: Vec<i64> = got.as_primitive::<Int64Type>().values().to_vec();
                assert_eq!(got, want, "last_n row {i}");
            }
            // 30d window, default hop 1d; few values: the sketch is exact
            let w30 = mine(floor(t - 30 * D, D));
            let set: std::collections::HashSet<&str> = w30.iter().map(|e| e.3).collect();
            let want = (!set.is_empty()).then_some(set.len() as i64);
            assert_eq!(
                distinct.is_valid(i).then(|| distinct.value(i)),
                want,
                "distinct row {i}"
            );
            let all = mine(i64::MIN).iter().filter(|e| e.2.is_some()).count() as i64;
            assert_eq!(count.value(i), all, "count row {i}");
        }
    }

    #[test]
    fn bad_requests_name_the_argument() {
        let path = temp("bad.parquet");
        write_view(&path, &[(1, 1_000_000, Some(1), "a")]);
        let spine = vec![spine(&[(1, 2_000_000)])];
        let keys = vec!["user_id".to_string()];
        let sources = [AggSource {
            name: "txn",
            path: &path,
            keys: &keys,
            event: "event_ts",
            created: None,
        }];
        let run = |specs: &[&str], full: bool| {
            let aggs: Vec<AggArg> = specs.iter().map(|s| parse_agg(s).unwrap()).collect();
            append_aggregations(
                spine[0].clone(),
                &spine,
                "ts",
                &sources,
                &aggs,
                AggRunOptions {
                    full_feature_names: full,
                    ..Default::default()
                },
            )
            .map(|_| ())
            .unwrap_err()
            .to_string()
        };
        for (specs, needle) in [
            (&["other:amount:sum:1d"][..], "no --view named 'other'"),
            (&["txn:price:sum:1d"][..], "has no column 'price'"),
            (&["txn:user_id:count:1d"][..], "key or time column"),
            (&["txn:event_ts:count:1d"][..], "key or time column"),
            (&["txn:merchant:sum:1d"][..], "sum needs a numeric column"),
            (
                &["txn:amount:sum:1d", "txn:amount:sum:1d:1d"][..],
                "'amount_sum_1d' is already taken",
            ),
        ] {
            let e = run(specs, false);
            assert!(
                e.contains(specs[specs.len() - 1]) || e.contains(specs[0]),
                "{e}"
            );
            assert!(e.contains(needle), "{specs:?}: {e}");
        }
    }

    #[test]
    fn only_views_without_aggregations_or_with_a_selection_are_joined() {
        let aggs = vec![parse_agg("txn:amount:sum:7d").unwrap()];
        assert!(!joins_plain_features("txn", false, &aggs));
        assert!(joins_plain_features("txn", true, &aggs));
        assert!(joins_plain_features("driver", false, &aggs));
        assert!(joins_plain_features("txn", false, &[]));
    }

    #[test]
    fn plain_features_default_to_the_file_order_and_follow_a_selection() {
        let schema = Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("amount", DataType::Float64, true),
            Field::new("event_ts", DataType::Int64, false),
            Field::new("merchant", DataType::Utf8, true),
        ]);
        let not_feature = |n: &str| n == "user_id" || n == "event_ts";
        let names = |f: Vec<Field>| f.iter().map(|f| f.name().clone()).collect::<Vec<_>>();
        let p = Path::new("txn.parquet");
        let all = plain_features("txn", p, None, &schema, &not_feature).unwrap();
        assert_eq!(names(all), ["amount", "merchant"]);
        let sel = ["merchant".to_string(), "amount".to_string()];
        let some = plain_features("txn", p, Some(&sel), &schema, &not_feature).unwrap();
        assert_eq!(names(some), ["merchant", "amount"]);
        let e =
            plain_features("txn", p, Some(&["price".into()]), &schema, &not_feature).unwrap_err();
        assert!(
            e.contains("'txn'") && e.contains("'price'") && e.contains("txn.parquet"),
            "{e}"
        );
        let e = plain_features("txn", p, Some(&["event_ts".into()]), &schema, &not_feature)
            .unwrap_err();
        assert!(e.contains("'event_ts'") && e.contains("key or time"), "{e}");
    }
}
