//! The subcommands.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{Field, Schema};
use chrono::{DateTime, NaiveDate, Utc};
use fstore_core::{
    ApplyOptions, Definitions, FeatureSelection, FeatureStore, HistoricalRequest, JoinKey,
    MaterializeOptions, MaterializeReport, OnlineRequest, ValueType,
};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::config::{Config, parse_duration};
use crate::defs::{self, Loaded};
use crate::{Cli, CliError, Command, ConfigCommand, FeatureArgs, MonitorCommand, Outcome};

/// `now`, an RFC 3339 instant, or a date (midnight UTC).
fn parse_time(s: &str) -> Result<DateTime<Utc>, CliError> {
    if s == "now" {
        return Ok(Utc::now());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    Err(CliError::msg(format!(
        "time '{s}': expected `now`, an RFC 3339 instant (2026-11-30T12:00:00Z) or a date (2026-11-30)"
    )))
}

fn duration(s: &str, what: &str) -> Result<std::time::Duration, CliError> {
    parse_duration(s).map_err(|e| CliError::msg(format!("{what}: {e}")))
}

fn selection(f: &FeatureArgs) -> Result<FeatureSelection, CliError> {
    match &f.service {
        Some(s) => Ok(FeatureSelection::service(s.clone())),
        None => Ok(FeatureSelection::refs(&f.features)?),
    }
}

pub(crate) async fn run(cli: Cli) -> Result<Outcome, CliError> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Plan(d) => plan(&config, &d.defs, None).await,
        Command::Apply {
            defs,
            force,
            dry_run,
        } => {
            if dry_run {
                plan(&config, &defs.defs, None).await
            } else {
                plan(&config, &defs.defs, Some(force)).await
            }
        }
        Command::Materialize {
            views,
            start,
            end,
            batch_size,
        } => {
            let store = config.store(true).await?;
            let start = start.as_deref().map(parse_time).transpose()?;
            let end = parse_time(&end)?;
            let names: Vec<&str> = views.iter().map(String::as_str).collect();
            let (opts, bar) = progress(batch_size);
            let r = store.materialize(&names, start, end, &opts).await;
            finish_progress(bar);
            print_report(&r?);
            Ok(Outcome::Ok)
        }
        Command::MaterializeIncremental {
            views,
            end,
            batch_size,
        } => {
            let store = config.store(true).await?;
            let end = parse_time(&end)?;
            let views = if views.is_empty() {
                let snap = store.snapshot().await?;
                snap.state
                    .definitions
                    .feature_views
                    .values()
                    .filter(|v| v.online)
                    .map(|v| v.name.clone())
                    .collect()
            } else {
                views
            };
            let names: Vec<&str> = views.iter().map(String::as_str).collect();
            let (opts, bar) = progress(batch_size);
            let r = store.materialize_incremental(&names, end, &opts).await;
            finish_progress(bar);
            print_report(&r?);
            Ok(Outcome::Ok)
        }
        Command::Historical {
            spine,
            timestamp_column,
            features,
            out,
            assume_utc,
        } => {
            let store = config.store(false).await?;
            historical(
                &store,
                &spine,
                &timestamp_column,
                &features,
                &out,
                assume_utc,
            )
            .await
        }
        Command::Get {
            entities,
            features,
            now,
        } => {
            let store = config.store(true).await?;
            get(&store, &entities, &features, now.as_deref()).await
        }
        Command::Describe { name } => {
            let store = config.store(false).await?;
            describe(&store, name.as_deref()).await
        }
        Command::List => {
            let store = config.store(false).await?;
            list(&store).await
        }
        Command::Versions => {
            let store = config.store(false).await?;
            let reg = store.registry();
            for v in reg.versions().await? {
                let s = reg.snapshot_at(v).await?;
                let d = &s.state.definitions;
                println!(
                    "{v}\t{}\t{} entities, {} feature views, {} on-demand views, {} services",
                    s.committed_at
                        .map_or_else(|| "-".into(), |t| t.to_rfc3339()),
                    d.entities.len(),
                    d.feature_views.len(),
                    d.on_demand_views.len(),
                    d.feature_services.len()
                );
            }
            Ok(Outcome::Ok)
        }
        Command::Monitor(MonitorCommand::Freshness {
            views,
            max_age,
            lookback,
            now,
        }) => {
            let store = config.store(true).await?;
            let max_age = duration(&max_age, "--max-age")?;
            let lookback = duration(&lookback, "--lookback")?;
            let now = now.as_deref().map_or_else(|| Ok(Utc::now()), parse_time)?;
            let views = if views.is_empty() {
                let snap = store.snapshot().await?;
                snap.state
                    .definitions
                    .feature_views
                    .keys()
                    .cloned()
                    .collect()
            } else {
                views
            };
            let mut stale = false;
            for v in &views {
                let f = store.freshness(v, now, lookback).await?;
                let ok = f.age.is_some_and(|a| a <= max_age);
                stale |= !ok;
                println!(
                    "{v}\t{}\tnewest={}\tage={}\twatermark={}",
                    if ok { "OK" } else { "STALE" },
                    f.newest_event
                        .map_or_else(|| "none".into(), |t| t.to_rfc3339()),
                    f.age
                        .map_or_else(|| "-".into(), |a| format!("{}s", a.as_secs())),
                    f.watermark
                        .map_or_else(|| "none".into(), |t| t.to_rfc3339()),
                );
            }
            Ok(if stale { Outcome::Changes } else { Outcome::Ok })
        }
        Command::Monitor(MonitorCommand::Skew {
            entities,
            features,
            max_mismatches,
            now,
        }) => {
            let store = config.store(true).await?;
            let sel = selection(&features)?;
            let now = now.as_deref().map_or_else(|| Ok(Utc::now()), parse_time)?;
            let batch = entity_batch(&store, &sel, &entities).await?;
            let mut over = false;
            for s in store.skew(sel, &batch, now).await? {
                let bad = s.mismatches > max_mismatches;
                over |= bad;
                println!(
                    "{}\t{}\tcompared={}\tmismatches={}{}",
                    s.feature,
                    if bad { "SKEW" } else { "OK" },
                    s.compared,
                    s.mismatches,
                    s.first_mismatch
                        .map_or_else(String::new, |i| format!("\tfirst={}", entities[i]))
                );
            }
            Ok(if over { Outcome::Changes } else { Outcome::Ok })
        }
        Command::Config(ConfigCommand::Show) => {
            print!("{}", config.show());
            Ok(Outcome::Ok)
        }
    }
}

fn load_defs(paths: &[std::path::PathBuf]) -> Result<Loaded, CliError> {
    defs::load(paths)
}

fn with_origin(loaded: &Loaded, e: fstore_core::Error) -> CliError {
    let msg = CliError::from(e).to_string();
    match loaded.locate(&msg) {
        Some(o) => CliError::msg(format!("{o}: {msg}")),
        None => CliError::msg(msg),
    }
}

/// `plan` (apply = None), `apply` (Some(force)).
async fn plan(
    config: &Config,
    paths: &[std::path::PathBuf],
    apply: Option<bool>,
) -> Result<Outcome, CliError> {
    let loaded = load_defs(paths)?;
    let store = config.store(false).await?;
    let p = store
        .plan(&loaded.defs)
        .await
        .map_err(|e| with_origin(&loaded, e))?;
    print!("{p}");
    let Some(force) = apply else {
        return Ok(if p.is_empty() {
            Outcome::Ok
        } else if p.is_breaking() {
            Outcome::Breaking
        } else {
            Outcome::Changes
        });
    };
    if p.is_empty() {
        return Ok(Outcome::Ok);
    }
    if p.is_breaking() && !force {
        eprintln!("refused: the plan has breaking changes (re-run with --force to apply them)");
        return Ok(Outcome::Breaking);
    }
    let r = store
        .apply(&loaded.defs, ApplyOptions::default().with_force(force))
        .await
        .map_err(|e| with_origin(&loaded, e))?;
    println!("applied: registry version {}", r.version);
    Ok(Outcome::Ok)
}

type Bar = Option<indicatif::ProgressBar>;

/// A spinner on a terminal, plain log lines otherwise.
fn progress(batch_size: usize) -> (MaterializeOptions, Bar) {
    let opts = MaterializeOptions::default().with_batch_size(batch_size);
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        let b = bar.clone();
        let opts = opts.with_progress(move |p| {
            b.set_message(format!(
                "{}: {} rows read, {} written, {} skipped",
                p.view, p.rows_read, p.rows_written, p.rows_skipped
            ));
        });
        (opts, Some(bar))
    } else {
        let opts = opts.with_progress(|p| {
            eprintln!(
                "materialize {}: {} rows read, {} written, {} skipped",
                p.view, p.rows_read, p.rows_written, p.rows_skipped
            );
        });
        (opts, None)
    }
}

fn finish_progress(bar: Bar) {
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

fn print_report(r: &MaterializeReport) {
    for v in &r.views {
        println!(
            "{}\t({}, {}]\tread={}\twritten={}\tskipped={}\toffline_version={}",
            v.view,
            v.start.map_or_else(|| "-inf".into(), |t| t.to_rfc3339()),
            v.end.to_rfc3339(),
            v.rows_read,
            v.rows_written,
            v.rows_skipped,
            v.offline_version
                .map_or_else(|| "-".into(), |x| x.to_string())
        );
    }
}

async fn historical(
    store: &FeatureStore,
    spine: &Path,
    ts: &str,
    features: &FeatureArgs,
    out: &Path,
    assume_utc: bool,
) -> Result<Outcome, CliError> {
    let f = File::open(spine).map_err(|e| CliError::msg(format!("{}: {e}", spine.display())))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.build())
        .map_err(|e| CliError::msg(format!("{}: {e}", spine.display())))?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::msg(format!("{}: {e}", spine.display())))?;
    let req = HistoricalRequest::new(batches, ts, selection(features)?).with_assume_utc(assume_utc);
    let r = store.get_historical_features(&req).await?;
    let file = File::create(out).map_err(|e| CliError::msg(format!("{}: {e}", out.display())))?;
    let write = |file| -> Result<(), parquet::errors::ParquetError> {
        let mut w = ArrowWriter::try_new(file, r.batch.schema(), None)?;
        w.write(&r.batch)?;
        w.close()?;
        Ok(())
    };
    write(file).map_err(|e| CliError::msg(format!("{}: {e}", out.display())))?;
    println!(
        "wrote {} rows to {} (registry version {}, offline versions {:?})",
        r.batch.num_rows(),
        out.display(),
        r.registry_version,
        r.view_versions
    );
    Ok(Outcome::Ok)
}

/// The join keys the selected features need, in first-use order.
fn join_keys(defs: &Definitions, sel: &FeatureSelection) -> Result<Vec<JoinKey>, CliError> {
    let refs = match sel {
        FeatureSelection::Refs(r) => r.to_vec(),
        FeatureSelection::Service(s) => defs
            .feature_services
            .get(s)
            .ok_or_else(|| CliError::msg(format!("feature service '{s}' not found")))?
            .features
            .clone(),
    };
    let mut views: Vec<String> = Vec::new();
    for r in &refs {
        match defs.on_demand_views.get(&r.view) {
            Some(o) => views.extend(o.inputs.iter().map(|i| i.view.clone())),
            None => views.push(r.view.clone()),
        }
    }
    let mut seen = BTreeSet::new();
    let mut keys = Vec::new();
    for v in views {
        let rv = defs.resolve_view(&v)?;
        for k in rv.join_keys {
            if seen.insert(k.name.clone()) {
                keys.push(k);
            }
        }
    }
    Ok(keys)
}

/// Parses `VALUE` / `KEY=VALUE,…` entities into a batch of typed key columns.
async fn entity_batch(
    store: &FeatureStore,
    sel: &FeatureSelection,
    entities: &[String],
) -> Result<RecordBatch, CliError> {
    let snap = store.snapshot().await?;
    let keys = join_keys(&snap.state.definitions, sel)?;
    let mut values: Vec<Vec<String>> = vec![Vec::new(); keys.len()];
    for e in entities {
        let mut row: Vec<Option<String>> = vec![None; keys.len()];
        for part in e.split(',') {
            match part.split_once('=') {
                Some((k, v)) => {
                    let i = keys
                        .iter()
                        .position(|j| j.name == k.trim())
                        .ok_or_else(|| {
                            CliError::msg(format!(
                                "entity '{e}': unknown join key '{k}' (the features need: {})",
                                names(&keys)
                            ))
                        })?;
                    row[i] = Some(v.trim().to_owned());
                }
                None if keys.len() == 1 => row[0] = Some(part.trim().to_owned()),
                None => {
                    return Err(CliError::msg(format!(
                        "entity '{e}': the features need several join keys ({}); write KEY=VALUE,…",
                        names(&keys)
                    )));
                }
            }
        }
        for (i, v) in row.into_iter().enumerate() {
            values[i].push(v.ok_or_else(|| {
                CliError::msg(format!("entity '{e}': missing join key '{}'", keys[i].name))
            })?);
        }
    }
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (k, vs) in keys.iter().zip(values) {
        let bad = |v: &str| {
            CliError::msg(format!(
                "join key '{}' is {}: cannot parse '{v}'",
                k.name, k.value_type
            ))
        };
        let col: ArrayRef = match &k.value_type {
            ValueType::Int64 => Arc::new(Int64Array::from(
                vs.iter()
                    .map(|v| v.parse::<i64>().map_err(|_| bad(v)))
                    .collect::<Result<Vec<_>, _>>()?,
            )),
            ValueType::Int32 => Arc::new(Int32Array::from(
                vs.iter()
                    .map(|v| v.parse::<i32>().map_err(|_| bad(v)))
                    .collect::<Result<Vec<_>, _>>()?,
            )),
            ValueType::Bytes => Arc::new(BinaryArray::from_iter_values(vs.iter())),
            _ => Arc::new(StringArray::from(vs)),
        };
        fields.push(Field::new(&k.name, col.data_type().clone(), false));
        cols.push(col);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .map_err(|e| CliError::msg(format!("entities: {e}")))
}

fn names(keys: &[JoinKey]) -> String {
    keys.iter()
        .map(|k| format!("{}: {}", k.name, k.value_type))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn get(
    store: &FeatureStore,
    entities: &[String],
    features: &FeatureArgs,
    now: Option<&str>,
) -> Result<Outcome, CliError> {
    let sel = selection(features)?;
    let batch = entity_batch(store, &sel, entities).await?;
    let mut req = OnlineRequest::new(sel, batch);
    if let Some(n) = now {
        req = req.with_now(parse_time(n)?);
    }
    let resp = store.get_online_features(&req).await?;
    let opts = FormatOptions::default().with_null("null");
    for (row, e) in entities.iter().enumerate() {
        println!("{e}");
        for m in resp.features() {
            let col = resp
                .batch()
                .column_by_name(m.name())
                .ok_or_else(|| CliError::msg(format!("response lacks column '{}'", m.name())))?;
            let fmt = ArrayFormatter::try_new(col.as_ref(), &opts)
                .map_err(|e| CliError::msg(format!("formatting '{}': {e}", m.name())))?;
            println!(
                "  {}\t{}\t{}\t{}",
                m.feature(),
                fmt.value(row),
                m.status(row),
                m.event_timestamp(row)
                    .map_or_else(|| "-".into(), |t| t.to_rfc3339())
            );
        }
    }
    Ok(Outcome::Ok)
}

async fn describe(store: &FeatureStore, name: Option<&str>) -> Result<Outcome, CliError> {
    let snap = store.snapshot().await?;
    let d = &snap.state.definitions;
    let json = |v: serde_json::Result<String>| v.unwrap_or_default();
    let Some(name) = name else {
        println!("{}", d.to_json());
        return Ok(Outcome::Ok);
    };
    if let Some(v) = d.feature_views.get(name) {
        println!("{}", json(serde_json::to_string_pretty(v)));
        if let Some(w) = snap.state.watermarks.get(name) {
            for (store_id, wm) in w {
                println!(
                    "watermark[{store_id}] = {} (offline version {})",
                    wm.event_end.to_rfc3339(),
                    wm.offline_version
                        .map_or_else(|| "-".into(), |x| x.to_string())
                );
            }
        }
    } else if let Some(e) = d.entities.get(name) {
        println!("{}", json(serde_json::to_string_pretty(e)));
    } else if let Some(s) = d.feature_services.get(name) {
        println!("{}", json(serde_json::to_string_pretty(s)));
    } else if let Some(o) = d.on_demand_views.get(name) {
        println!("{}", json(serde_json::to_string_pretty(o)));
    } else {
        return Err(CliError::msg(format!(
            "'{name}' is not an entity, feature view, on-demand view or feature service (registry version {})",
            snap.version
        )));
    }
    Ok(Outcome::Ok)
}

async fn list(store: &FeatureStore) -> Result<Outcome, CliError> {
    let snap = store.snapshot().await?;
    let d = &snap.state.definitions;
    println!("registry version {}", snap.version);
    println!("entities:");
    for e in d.entities.values() {
        println!("  {}\t{}", e.name, names(&e.join_keys));
    }
    println!("feature views:");
    for v in d.feature_views.values() {
        println!(
            "  {}\tentities={}\tfeatures={}\tttl={}\t{}{}",
            v.name,
            v.entities.join(","),
            v.features.len(),
            v.ttl
                .map_or_else(|| "none".into(), |t| format!("{}s", t.as_secs())),
            if v.online { "online" } else { "offline-only" },
            if v.deprecation.is_some() {
                "\tDEPRECATED"
            } else {
                ""
            }
        );
    }
    println!("on-demand views:");
    for o in d.on_demand_views.values() {
        println!(
            "  {}\tversion={}\toutputs={}",
            o.name,
            o.version,
            o.outputs.len()
        );
    }
    println!("feature services:");
    for s in d.feature_services.values() {
        println!("  {}\tfeatures={}", s.name, s.features.len());
    }
    Ok(Outcome::Ok)
}
