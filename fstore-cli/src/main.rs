//! `fstore`: the operator command line of fstore ([semantics §13](fstore_core::docs::semantics)).
//!
//! Plans and applies definition files, materializes offline → online, builds
//! training sets, reads online features for debugging, describes the
//! registry and runs the monitors — the same operations a host application
//! calls, driven by a config file (`fstore.toml`) that names the registry,
//! offline and online stores. Run `fstore help` or `fstore <command> --help`.
//!
//! Exit codes: 0 success / no change; 1 error; 2 `plan` (and
//! `apply --dry-run`) found changes, or a monitor crossed its threshold;
//! 3 the plan has breaking changes (`apply` refuses them without `--force`).

mod commands;
mod config;
mod defs;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// An error for the operator: one message, exit code 1.
#[derive(Debug)]
pub(crate) struct CliError(String);

impl CliError {
    pub(crate) fn msg(m: impl Into<String>) -> Self {
        Self(m.into())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<fstore_core::Error> for CliError {
    fn from(e: fstore_core::Error) -> Self {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(c) = src {
            s.push_str(": ");
            s.push_str(&c.to_string());
            src = c.source();
        }
        Self(s)
    }
}

/// Outcome of a command, mapped to the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 0: done, nothing to report.
    Ok,
    /// 2: changes planned, or a monitor threshold crossed.
    Changes,
    /// 3: breaking changes.
    Breaking,
}

const AFTER_HELP: &str = "\
Configuration: --config FILE, or $FSTORE_CONFIG, or ./fstore.toml if present, else the
embedded defaults (file registry in .fstore/registry, Delta tables in .fstore/data, in-memory
online store). Environment variables override file values: FSTORE_<SECTION>_BACKEND selects a
backend, FSTORE_<BACKEND>_<KEY> sets an adapter key (FSTORE_REDIS_URL, FSTORE_DELTA_ROOT, ...).

Exit codes: 0 success / no change, 1 error, 2 changes planned or a monitor threshold crossed,
3 breaking changes (refused by apply without --force).

Example fstore.toml:
  [registry]
  backend = \"file\"
  path = \"registry\"

  [offline]
  backend = \"delta\"
  root = \"data\"

  [online]
  backend = \"redis\"
  url = \"redis://127.0.0.1:6379\"
  key_prefix = \"shop\"
  command_timeout = \"500ms\"

  [serving]
  online_timeout = \"1s\"";

/// The fstore command line.
#[derive(Debug, Parser)]
#[command(name = "fstore", version, about = "Operate an fstore feature store: plan/apply definitions, materialize, serve-debug, monitor", after_help = AFTER_HELP)]
struct Cli {
    /// Config file (default: ./fstore.toml if present, else embedded defaults).
    #[arg(long, global = true, env = "FSTORE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// More log output (-v info, -vv debug with span timings, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what `apply` would change (exit 0 no change, 2 changes, 3 breaking).
    #[command(
        after_help = "Examples:\n  fstore plan definitions/\n  fstore plan entities.toml views.toml\n\n\
Definition files are the registry's JSON form or the same schema in TOML; directories are read\n\
recursively (*.json, *.toml). Example (TOML):\n\n  [entities.driver]\n  join_keys = [{ name = \"driver_id\", type = \"int64\" }]\n\n  \
[feature_views.driver_stats]\n  entities = [\"driver\"]\n  ttl_seconds = 86400\n  features = [\n    { name = \"conv_rate\", type = \"float64\" },\n    \
{ name = \"trips\", type = \"int64\", fallback = { default = { int64 = 0 } } },\n  ]\n\n  \
[feature_services.ranker_v1]\n  features = [\"driver_stats:conv_rate\", \"driver_stats:trips\"]"
    )]
    Plan(DefsArgs),
    /// Commit the definitions as the new registry version.
    #[command(
        after_help = "Examples:\n  fstore apply definitions/             # on merge to main\n  \
fstore apply --dry-run definitions/   # same exit codes as plan\n  fstore apply --force definitions/     # accept breaking changes\n\n\
Exit codes: 0 applied (or nothing to do), 3 breaking changes refused, 1 error; with --dry-run\n\
as plan (0 / 2 / 3)."
    )]
    Apply {
        #[command(flatten)]
        defs: DefsArgs,
        /// Apply even if the plan has breaking changes.
        #[arg(long)]
        force: bool,
        /// Only show the plan (exit codes as `plan`).
        #[arg(long)]
        dry_run: bool,
    },
    /// Materialize views offline → online for an event-time window `(start, end]`.
    #[command(
        after_help = "Examples:\n  fstore materialize driver_stats --start 2026-11-01T00:00:00Z --end 2026-11-02T00:00:00Z\n  \
fstore materialize driver_stats trips --end now   # everything up to now"
    )]
    Materialize {
        /// Views.
        #[arg(required = true)]
        views: Vec<String>,
        /// Window start, exclusive (RFC 3339, a date, or `now`); default unbounded.
        #[arg(long)]
        start: Option<String>,
        /// Window end, inclusive (RFC 3339, a date, or `now`).
        #[arg(long)]
        end: String,
        /// Rows per online write.
        #[arg(long, default_value_t = 10_000)]
        batch_size: usize,
    },
    /// Materialize from each view's watermark up to `--end`, then advance it (resumable).
    #[command(
        after_help = "Examples:\n  fstore materialize-incremental --end now               # every online view (cron)\n  \
fstore materialize-incremental driver_stats --end now"
    )]
    MaterializeIncremental {
        /// Views (default: every online view).
        views: Vec<String>,
        /// End of the run (RFC 3339, a date, or `now`).
        #[arg(long)]
        end: String,
        /// Rows per online write.
        #[arg(long, default_value_t = 10_000)]
        batch_size: usize,
    },
    /// Build a point-in-time-correct training set from a Parquet spine.
    #[command(
        after_help = "Example:\n  fstore historical --spine spine.parquet --timestamp-column ts \\\n    \
--features driver_stats:conv_rate driver_stats:trips --out train.parquet"
    )]
    Historical {
        /// Spine Parquet file: join keys, a timestamp column, any other columns.
        #[arg(long)]
        spine: PathBuf,
        /// The spine's timestamp column.
        #[arg(long, default_value = "event_timestamp")]
        timestamp_column: String,
        #[command(flatten)]
        features: FeatureArgs,
        /// Output Parquet file.
        #[arg(long)]
        out: PathBuf,
        /// Treat naive spine timestamps as UTC.
        #[arg(long)]
        assume_utc: bool,
    },
    /// Read online features for entities, with statuses (debugging).
    #[command(
        after_help = "Examples:\n  fstore get 1001 1002 --features driver_stats:conv_rate\n  \
fstore get user_id=7,item_id=3 --service ranker_v1"
    )]
    Get {
        /// Entities: `VALUE` (one join key) or `KEY=VALUE[,KEY=VALUE…]`.
        #[arg(required = true)]
        entities: Vec<String>,
        #[command(flatten)]
        features: FeatureArgs,
        /// Serving time for TTL checks (default now).
        #[arg(long)]
        now: Option<String>,
    },
    /// Print a definition (view, entity, service, on-demand view) as JSON, or all.
    #[command(after_help = "Examples:\n  fstore describe\n  fstore describe driver_stats")]
    Describe {
        /// Name (default: everything).
        name: Option<String>,
    },
    /// List the registry's definitions.
    #[command(after_help = "Example:\n  fstore list")]
    List,
    /// Registry history: every committed version.
    #[command(after_help = "Example:\n  fstore versions")]
    Versions,
    /// Monitors; exit 2 when a threshold is crossed (for cron alerts).
    #[command(subcommand)]
    Monitor(MonitorCommand),
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum MonitorCommand {
    /// Age of each view's newest offline event; exit 2 if older than --max-age.
    #[command(
        after_help = "Example:\n  fstore monitor freshness driver_stats --max-age 2h --lookback 7d"
    )]
    Freshness {
        /// Views (default: every feature view).
        views: Vec<String>,
        /// Alert threshold (`30m`, `2h`, `1d`).
        #[arg(long)]
        max_age: String,
        /// How far back to look for the newest event.
        #[arg(long, default_value = "7d")]
        lookback: String,
        /// Check time (default now).
        #[arg(long)]
        now: Option<String>,
    },
    /// Online vs point-in-time values for entities; exit 2 above --max-mismatches.
    #[command(
        after_help = "Example:\n  fstore monitor skew 1001 1002 --features driver_stats:conv_rate --max-mismatches 0"
    )]
    Skew {
        /// Entities, as for `get`.
        #[arg(required = true)]
        entities: Vec<String>,
        #[command(flatten)]
        features: FeatureArgs,
        /// Alert above this many mismatching entities per feature.
        #[arg(long, default_value_t = 0)]
        max_mismatches: usize,
        /// Comparison time (default now).
        #[arg(long)]
        now: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the resolved configuration with sources; secrets redacted.
    #[command(after_help = "Example:\n  FSTORE_REDIS_URL=redis://cache:6379 fstore config show")]
    Show,
}

/// Definition files.
#[derive(Debug, Args)]
struct DefsArgs {
    /// Definition files or directories (*.json, *.toml).
    #[arg(required = true)]
    defs: Vec<PathBuf>,
}

/// Which features.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct FeatureArgs {
    /// Feature references `view:feature`.
    #[arg(long, num_args = 1..)]
    features: Vec<String>,
    /// A feature service.
    #[arg(long)]
    service: Option<String>,
}

fn init_tracing(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::format::FmtSpan;
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let spans = if verbose >= 2 {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(spans);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.log_format);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(commands::run(cli)) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Changes) => ExitCode::from(2),
        Ok(Outcome::Breaking) => ExitCode::from(3),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
