//! `--engine memory|datafusion`, `--memory-limit SIZE`, `--partitions N`, `--batch-size N` for
//! `training_from_parquet`, and the DataFusion run (feature `datafusion`).

use std::path::PathBuf;
use std::time::Duration;

/// Which engine joins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Engine {
    /// The in-memory join (`fstore_core::pit::point_in_time_join`).
    #[default]
    Memory,
    /// The DataFusion plan (`fstore_core::engine`): out-of-core, spills to disk.
    DataFusion,
}

/// The engine flags.
#[derive(Debug, Clone, Default)]
pub struct EngineArgs {
    /// `--engine`.
    pub engine: Engine,
    /// `--memory-limit` in bytes.
    pub memory_limit: Option<usize>,
    /// `--partitions`.
    pub partitions: Option<usize>,
    /// `--batch-size`: rows per batch inside the plan (default 8192).
    pub batch_size: Option<usize>,
    /// `--ballista URL`: run the plan on a Ballista cluster (`crate::ballista_args`).
    pub ballista: Option<String>,
    /// `--join hash|sort`: the DataFusion engine's join (default hash).
    pub join: Option<String>,
    /// `--join-concurrency N`: hash partitions joining at once (default: the cores).
    pub join_concurrency: Option<usize>,
    /// `--scan-partitions N`: partitions reading each input's Parquet files
    /// (pieces of row groups; default: the cores).
    pub scan_partitions: Option<usize>,
}

/// The usage text of the engine flags.
pub const ENGINE_USAGE: &str = "[--engine memory|datafusion] [--memory-limit SIZE (e.g. 256MiB, 4GiB)] [--partitions N] [--batch-size ROWS] [--join hash|sort] [--join-concurrency N] [--scan-partitions N] [--ballista df://HOST:PORT]";

impl EngineArgs {
    /// Whether `flag` is one of the engine flags (it takes a value).
    pub fn accepts(flag: &str) -> bool {
        matches!(
            flag,
            "--engine"
                | "--memory-limit"
                | "--partitions"
                | "--batch-size"
                | "--ballista"
                | "--join"
                | "--join-concurrency"
                | "--scan-partitions"
        )
    }

    /// Sets `flag` (one [`EngineArgs::accepts`]) to `value`.
    ///
    /// # Errors
    /// An unknown engine, a malformed size, a partition count that is not a
    /// positive integer.
    pub fn set(&mut self, flag: &str, value: &str) -> Result<(), String> {
        match flag {
            "--engine" => {
                self.engine = match value {
                    "memory" => Engine::Memory,
                    "datafusion" => Engine::DataFusion,
                    other => {
                        return Err(format!(
                            "--engine: expected memory or datafusion, got '{other}'"
                        ));
                    }
                }
            }
            "--memory-limit" => self.memory_limit = Some(parse_size(value)?),
            "--partitions" => {
                let n: usize = value.parse().map_err(|_| {
                    format!("--partitions: expected a positive integer, got '{value}'")
                })?;
                if n == 0 {
                    return Err("--partitions: must be at least 1".to_string());
                }
                self.partitions = Some(n);
            }
            "--batch-size" => {
                let n: usize = value.parse().map_err(|_| {
                    format!("--batch-size: expected a positive integer, got '{value}'")
                })?;
                if n == 0 {
                    return Err("--batch-size: must be at least 1".to_string());
                }
                self.batch_size = Some(n);
            }
            "--ballista" => self.ballista = Some(value.to_owned()),
            "--join" => {
                if value != "hash" && value != "sort" {
                    return Err(format!("--join: expected hash or sort, got '{value}'"));
                }
                self.join = Some(value.to_owned());
            }
            "--join-concurrency" => {
                let n: usize = value.parse().map_err(|_| {
                    format!("--join-concurrency: expected a positive integer, got '{value}'")
                })?;
                if n == 0 {
                    return Err("--join-concurrency: must be at least 1".to_string());
                }
                self.join_concurrency = Some(n);
            }
            "--scan-partitions" => {
                let n: usize = value.parse().map_err(|_| {
                    format!("--scan-partitions: expected a positive integer, got '{value}'")
                })?;
                if n == 0 {
                    return Err("--scan-partitions: must be at least 1".to_string());
                }
                self.scan_partitions = Some(n);
            }
            other => return Err(format!("not an engine flag: '{other}'")),
        }
        Ok(())
    }

    /// Rejects flags that only the DataFusion engine uses when the memory engine runs.
    ///
    /// # Errors
    /// `--memory-limit`, `--partitions`, `--batch-size`, `--join`,
    /// `--join-concurrency` or `--scan-partitions` given with `--engine memory`.
    pub fn check(&self) -> Result<(), String> {
        if self.engine == Engine::Memory
            && (self.memory_limit.is_some()
                || self.partitions.is_some()
                || self.batch_size.is_some()
                || self.join.is_some()
                || self.join_concurrency.is_some()
                || self.scan_partitions.is_some())
        {
            return Err(
                "--memory-limit, --partitions, --batch-size, --join, --join-concurrency and \
                 --scan-partitions need --engine datafusion"
                    .to_string(),
            );
        }
        if self.engine == Engine::Memory && self.ballista.is_some() {
            return Err("--ballista needs --engine datafusion".to_string());
        }
        Ok(())
    }
}

/// Parses a size: a number of bytes with an optional unit `B`, `KB`/`MB`/`GB`/`TB`
/// (powers of 1000) or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), case-insensitive.
///
/// # Errors
/// No number, an unknown unit, zero, an overflow.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("--memory-limit: expected a size such as 256MiB, got '{s}'"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => return Err(format!("--memory-limit: unknown unit '{other}' in '{s}'")),
    };
    let bytes = n
        .checked_mul(mult)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("--memory-limit: '{s}' is too large"))?;
    if bytes == 0 {
        return Err("--memory-limit: must be more than 0 bytes".to_string());
    }
    Ok(bytes)
}

/// One `--view` of `training_from_parquet`, as the DataFusion run needs it.
#[derive(Debug, Clone)]
pub struct ViewSpec {
    /// View name.
    pub name: String,
    /// Its Parquet file.
    pub path: PathBuf,
    /// Join-key columns.
    pub keys: Vec<String>,
    /// Event-timestamp column.
    pub event: String,
    /// Created-timestamp column.
    pub created: Option<String>,
    /// Lookback window.
    pub ttl: Option<Duration>,
}

/// Runs the join with the DataFusion engine: the spine and each view read from
/// their Parquet files (features: every column that is not a key or time column,
/// in file order), the result streamed to `out` (temporary name, renamed at the
/// end). Prints the rows written and the time; returns the rows.
///
/// # Errors
/// The engine's errors; the binary was built without the `datafusion` feature.
#[cfg(feature = "datafusion")]
pub fn run_datafusion(
    spine: &std::path::Path,
    ts: &str,
    views: &[ViewSpec],
    options: &fstore_core::pit::PitOptions,
    out: &std::path::Path,
    args: &EngineArgs,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    use fstore_core::engine;
    let start = std::time::Instant::now();
    let config = args.config()?;
    let n = config.partitions;
    let scan = args.scan_partitions();
    let eviews = views
        .iter()
        .map(|v| engine_view(v, scan))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = engine::pit_join_plan_with(
        engine::parquet_plan(&[spine.to_path_buf()], scan)?,
        ts,
        &eviews,
        options,
        &config,
    )?;
    let rows = execute_to(plan, &config, args, out, true)?;
    println!(
        "engine:        datafusion, {n} partitions, {:?} join, {scan} scan partitions, memory limit {:?}",
        config.join, args.memory_limit
    );
    println!("output:        {rows} rows -> {}", out.display());
    println!("total time:    {:.3} s", start.elapsed().as_secs_f64());
    Ok(rows)
}

impl EngineArgs {
    /// `--scan-partitions`, or the cores: every core decodes, and fewer
    /// partitions than the hash partitions keep the scans' runs few (the hash
    /// join orders each partition's rows by write sequence).
    pub fn scan_partitions(&self) -> usize {
        self.scan_partitions.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

#[cfg(feature = "datafusion")]
impl EngineArgs {
    /// The engine configuration these flags give (`--memory-limit`,
    /// `--partitions`, `--batch-size`, `--join`, `--join-concurrency`).
    ///
    /// # Errors
    /// An unknown `--join` algorithm.
    pub fn config(
        &self,
    ) -> Result<fstore_core::engine::EngineConfig, Box<dyn std::error::Error + Send + Sync>> {
        let mut config =
            fstore_core::engine::EngineConfig::default().with_memory_limit(self.memory_limit);
        if let Some(n) = self.partitions {
            config = config.with_partitions(n);
        }
        if let Some(n) = self.batch_size {
            config = config.with_batch_size(n);
        }
        if let Some(j) = &self.join {
            config = config.with_join(j.parse()?);
        }
        if let Some(k) = self.join_concurrency {
            config = config.with_hash_concurrency(k);
        }
        Ok(config)
    }
}

/// `v`'s Parquet file as an engine view read by `partitions` partitions; its
/// features are every column that is not a key or time column (nor one the
/// scan adds, like `__fstore_seq_base`), in file order.
///
/// # Errors
/// The file cannot be opened as Parquet.
#[cfg(feature = "datafusion")]
pub fn engine_view(
    v: &ViewSpec,
    partitions: usize,
) -> Result<fstore_core::engine::EngineView, Box<dyn std::error::Error + Send + Sync>> {
    use fstore_core::engine;
    let input = engine::parquet_plan(std::slice::from_ref(&v.path), partitions)?;
    let not_feature = |c: &str| {
        v.keys.iter().any(|k| k == c)
            || c == v.event
            || v.created.as_deref() == Some(c)
            || c.starts_with(engine::RESERVED_PREFIX)
    };
    let features = input
        .schema()
        .fields()
        .iter()
        .filter(|f| !not_feature(f.name()))
        .map(|f| f.as_ref().clone())
        .collect();
    Ok(engine::EngineView {
        name: v.name.clone(),
        join_keys: v.keys.clone(),
        event_timestamp_column: v.event.clone(),
        created_timestamp_column: v.created.clone(),
        ttl: v.ttl,
        features,
        input,
    })
}

/// Runs `plan` on the Ballista cluster of `--ballista`, or locally under
/// `config`, streaming its result to `out` (temporary name, renamed at the
/// end); locally, `print_metrics` prints the plan with its operators' metrics.
/// Returns the rows written.
///
/// # Errors
/// The engine's or the cluster's.
#[cfg(feature = "datafusion")]
pub fn execute_to(
    plan: std::sync::Arc<dyn fstore_core::datafusion::physical_plan::ExecutionPlan>,
    config: &fstore_core::engine::EngineConfig,
    args: &EngineArgs,
    out: &std::path::Path,
    print_metrics: bool,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    use fstore_core::engine;
    if let Some(url) = &args.ballista {
        return crate::ballista_args::run_on_cluster(url, plan, config, out);
    }
    let session = config.session()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rows = rt.block_on(async {
        engine::write_parquet(
            engine::execute(std::sync::Arc::clone(&plan), session.task_ctx())?,
            out,
        )
        .await
    })?;
    if print_metrics {
        // Where the time went: every operator with its metrics (elapsed_compute,
        // spill counts, rows), as DataFusion reports them.
        println!(
            "plan with metrics:\n{}",
            fstore_core::datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(
                plan.as_ref()
            )
            .indent(false)
        );
    }
    Ok(rows)
}
/// Without the `datafusion` feature: an error saying how to build it.
///
/// # Errors
/// Always.
#[cfg(not(feature = "datafusion"))]
pub fn run_datafusion(
    _spine: &std::path::Path,
    _ts: &str,
    _views: &[ViewSpec],
    _options: &fstore_core::pit::PitOptions,
    _out: &std::path::Path,
    _args: &EngineArgs,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    Err(
        "--engine datafusion: this binary was built without the `datafusion` feature \
         (cargo run -p fstore-examples --features datafusion --example training_from_parquet)"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("4gib"), Ok(4 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("0GiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn flags_set_and_check() {
        let mut a = EngineArgs::default();
        assert!(EngineArgs::accepts("--engine") && !EngineArgs::accepts("--view"));
        a.set("--partitions", "3").unwrap();
        assert!(
            a.check().is_err(),
            "partitions without the datafusion engine"
        );
        a.set("--engine", "datafusion").unwrap();
        a.set("--memory-limit", "256MiB").unwrap();
        assert!(a.check().is_ok());
        assert_eq!(
            (a.engine, a.memory_limit, a.partitions),
            (Engine::DataFusion, Some(256 << 20), Some(3))
        );
        assert!(a.set("--engine", "spark").is_err());
        assert!(a.set("--partitions", "0").is_err());
        assert!(a.set("--batch-size", "0").is_err());
        assert!(a.set("--batch-size", "x").is_err());
        let mut b = EngineArgs::default();
        b.set("--batch-size", "32768").unwrap();
        assert!(
            b.check().is_err(),
            "batch size without the datafusion engine"
        );
        b.set("--engine", "datafusion").unwrap();
        assert!(b.check().is_ok());
        assert_eq!(b.batch_size, Some(32768));
        let mut c = EngineArgs::default();
        c.set("--join", "sort").unwrap();
        assert!(c.check().is_err(), "--join without the datafusion engine");
        c.set("--engine", "datafusion").unwrap();
        c.set("--join-concurrency", "2").unwrap();
        assert!(c.check().is_ok());
        assert_eq!(
            (c.join.as_deref(), c.join_concurrency),
            (Some("sort"), Some(2))
        );
        assert!(c.set("--join", "nested-loop").is_err());
        assert!(c.set("--join-concurrency", "0").is_err());
        let mut d = EngineArgs::default();
        assert!(d.scan_partitions() >= 1, "default: the cores");
        d.set("--scan-partitions", "5").unwrap();
        assert!(
            d.check().is_err(),
            "--scan-partitions without the datafusion engine"
        );
        d.set("--engine", "datafusion").unwrap();
        assert!(d.check().is_ok());
        assert_eq!(d.scan_partitions(), 5);
        assert!(d.set("--scan-partitions", "0").is_err());
    }
}
